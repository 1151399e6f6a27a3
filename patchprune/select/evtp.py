"""EVTP spatial k-center: farthest-first traversal in a joint feature + position space.

Steps (spec `evtp.md`): L2-normalise the features (x^), take grid coordinates p in [0, 1]^2, weigh
them by an adaptive lambda = 1 / (sigma^2 + eps) where sigma^2 is the total variance of x^ in the
frame, start from the token farthest from the mean of x~ = [x^ ; lambda p], then greedily add the
token farthest from the kept set. Homogeneous frames (small sigma^2) lean on positions, so the kept
tokens also cover the image plane.

`ablation` reproduces the paper's Table 4 ladder; explicit options override a rung's settings. Its
"kcenter" rung is k-center on the L2-normalised features from the first slot; the standalone
`kcenter` method defaults to raw features and the farthest-from-the-mean start
(`kcenter(normalize=True, init="first")` equals the rung).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from patchprune.select.base import SelectInput, grid_coordinates, masked_mean, register_method, resolve_start
from patchprune.select.farthest import DEFAULT_POOL, farthest_first, safe_scale, squared_norms

# Table 4 of the paper: k-center -> + spatial coordinates -> + adaptive lambda -> + initialisation.
ABLATION_LADDER: dict[str, dict[str, Any]] = {
    "kcenter": {"spatial": False, "init": "first"},
    "spatial": {"spatial": True, "lam": 1.0, "init": "first"},
    "adaptive": {"spatial": True, "lam": None, "init": "first"},
    "full": {"spatial": True, "lam": None, "init": "mean"},
}
_UNSET = object()
# x~ rows are padded with zero columns to a multiple of this many floats (64 bytes): distances do
# not change, and the distance column of a greedy step runs about twice as fast on aligned rows.
ROW_ALIGN = 16


@dataclass
class JointSpace:
    """Augmented tokens of one call, centred on their mean (distances do not change, fp32 rounding
    of |x|^2 + |y|^2 - 2 x.y shrinks with the norms)."""

    z: Tensor  # [B, N, C(+2)(+zero padding to ROW_ALIGN)] x~ - mean(x~), x~ = [x^ ; lambda p] (x^ alone without coordinates)
    sq: Tensor  # [B, N] squared norms of z (= squared distance to the mean)
    lam: Tensor  # [B] spatial weight (zeros without coordinates)
    feature_sq: Tensor | None = None  # [B, N] squared distance of the features x^ alone to their mean


def adaptive_lambda(var: Tensor, dim: int, variance: str = "total", scale: str = "inv_var",
                    eps: float = 1e-6) -> Tensor:
    """Step 3: lambda [B] from the total variance var [B] (mean_i ||x^_i - mean||^2) of the
    normalised features with `dim` channels.

    variance: "total" (default) or "channel" (the mean per-channel variance, var / dim);
    scale: "inv_var" (1 / (sigma^2 + eps), default) or "inv_std" (1 / (sigma + eps)).
    """
    if variance not in ("total", "channel"):
        raise ValueError(f"variance must be 'total' or 'channel', got {variance!r}")
    if scale not in ("inv_var", "inv_std"):
        raise ValueError(f"scale must be 'inv_var' or 'inv_std', got {scale!r}")
    if variance == "channel":
        var = var / dim
    return 1.0 / (var + eps) if scale == "inv_var" else 1.0 / (var.sqrt() + eps)


def joint_space(x: Tensor, inp: SelectInput, *, normalize: str = "l2", spatial: bool = True,
                lam: float | Tensor | None = None, variance: str = "total", scale: str = "inv_var",
                per: str = "frame", eps: float = 1e-6, reuse: bool = False) -> JointSpace:
    """Steps 1-4: normalise, weigh the coordinates, build x~ centred on its mean (few passes over x).

    reuse: write x~ into this thread's scratch buffer (no fresh 10+ MB allocation, whose page
    faults cost about a millisecond per call); the result is then only valid until the next reusing
    call in the same thread, which is how the selectors use it.

    Any finite input works: when a frame's squared norms overflow fp32 (features ~1e19) or
    underflow (~1e-30), that frame is rebuilt from x times a power of two (`safe_scale`), which
    changes no pick (every distance scales by the same power of four, exactly); frames in range
    are computed as they are."""
    opts = dict(normalize=normalize, spatial=spatial, lam=lam, variance=variance, scale=scale, per=per, eps=eps,
                reuse=reuse)
    js, feature_sq = _joint_space(x, inp, **opts)
    factor = safe_scale(x, feature_sq)
    return js if factor is None else _joint_space(x * factor[:, None, None], inp, **opts)[0]


def _joint_space(x: Tensor, inp: SelectInput, *, normalize: str, spatial: bool, lam: float | Tensor | None,
                 variance: str, scale: str, per: str, eps: float, reuse: bool) -> tuple[JointSpace, Tensor]:
    """`joint_space` on x as given, and [B, N] squared norms of the features the distances are
    built from (raw for "l2", normalised otherwise): what `safe_scale` checks."""
    if per not in ("frame", "batch"):
        raise ValueError(f"per must be 'frame' or 'batch', got {per!r}")
    if normalize not in ("l2", "zscore", "none"):
        raise ValueError(f"normalize must be 'l2', 'zscore' or 'none', got {normalize!r}")
    B, N, C = x.shape
    valid = inp.valid
    use_coords = spatial and not (lam is not None and bool((torch.as_tensor(lam) == 0).all()))
    width = C + 2 if use_coords else C
    shape = (B, N, -(-width // ROW_ALIGN) * ROW_ALIGN)
    z = _scratch(shape, x) if reuse else x.new_empty(shape)
    z[..., width:].zero_()
    w = x.new_full((B, N), 1.0 / N) if valid is None else valid / valid.sum(1, keepdim=True).clamp_min(1)
    if normalize == "l2":
        norms = torch.linalg.vector_norm(x, dim=-1)
        inv = 1.0 / norms.clamp_min(1e-12)
        mean_f = torch.bmm((w * inv)[:, None], x).squeeze(1)  # mean of x^ without materialising x^
        torch.addcmul(-mean_f[:, None], x, inv[..., None], out=z[..., :C])
        feature_sq = norms.square()
    else:
        xs = x
        if normalize == "zscore":  # per channel over the frame's tokens
            mu = masked_mean(x, valid)
            sd = masked_mean((x - mu[:, None]).square(), valid).add(1e-6).sqrt()
            xs = (x - mu[:, None]) / sd[:, None]
        mean_f = torch.bmm(w[:, None], xs).squeeze(1)
        torch.sub(xs, mean_f[:, None], out=z[..., :C])
        feature_sq = None
    centred_sq = squared_norms(z[..., :C])  # ||x^_i - mean(x^)||^2 (the padding columns are zero)
    if feature_sq is None:
        feature_sq = centred_sq
    if not use_coords:
        return JointSpace(z=z, sq=centred_sq, lam=x.new_zeros(B), feature_sq=centred_sq), feature_sq
    if lam is None:
        # total variance mean_i ||x^_i - mean||^2 from the centred features (not E||x^||^2 - ||mean||^2,
        # which cancels catastrophically when the features are nearly equal)
        var = (w * centred_sq).sum(1)
        if per == "batch":  # pooled over all tokens of the batch: within-frame + between-frame spread
            cnt = x.new_full((B,), N) if valid is None else valid.sum(1).to(x.dtype)
            share = cnt / cnt.sum().clamp_min(1)
            pooled = (share[:, None] * mean_f).sum(0)
            var = ((share * (var + (mean_f - pooled).square().sum(-1))).sum()).expand(B)
        lam_b = adaptive_lambda(var, C, variance, scale, eps)
    else:
        lam_b = torch.as_tensor(lam, dtype=x.dtype, device=x.device).reshape(-1).expand(B)
    p = grid_coordinates(inp.index, inp.grid)  # [B, N, 2]
    mean_p = torch.bmm(w[:, None], p).squeeze(1)
    torch.mul(p - mean_p[:, None], lam_b[:, None, None], out=z[..., C:width])
    sq = centred_sq + squared_norms(z[..., C:width])
    return JointSpace(z=z, sq=sq, lam=lam_b, feature_sq=centred_sq), feature_sq


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A per-thread buffer of `shape` (grown on demand, kept between calls)."""
    numel = math.prod(shape)
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.numel() < numel or buf.device != like.device or buf.dtype != like.dtype:
        buf = like.new_empty(numel)
        _SCRATCH.buf = buf
    return buf[:numel].view(shape)


@register_method("evtp", needs_grid=True)
def evtp(x: Tensor, k: int, inp: SelectInput, *, ablation: str = "full", normalize: str = "l2",
         spatial: Any = _UNSET, lam: Any = _UNSET, variance: str = "total", scale: str = "inv_var",
         per: str = "frame", eps: float = 1e-6, init: Any = _UNSET, seed: int = 0, pool: int = DEFAULT_POOL,
         strategy: str = "auto") -> Tensor:
    """Kept slots [B, k] in pick order.

    ablation: "full" (default) | "kcenter" | "spatial" | "adaptive" (Table 4 rungs, see
    ABLATION_LADDER). spatial: use coordinates. lam: None = adaptive, a number = fixed weight
    (0 = no coordinates). variance / scale / eps: how lambda adapts (see `adaptive_lambda`); per:
    "frame" (default) or "batch" (one lambda from the pooled variance of all frames).
    normalize: "l2" | "zscore" | "none". init: "mean" (farthest from the mean of x~, the spec's
    step 5) | "feature_mean" (farthest from the mean of the normalised features x^ alone, ignoring
    the coordinates) | "first" | "random" (with seed) | slot | [B] tensor. pool, strategy: the
    engine's pool size and "auto" | "pool" | "matrix" (`farthest_first`; speed only).
    """
    if ablation not in ABLATION_LADDER:
        raise ValueError(f"ablation must be one of {', '.join(ABLATION_LADDER)}, got {ablation!r}")
    rung = ABLATION_LADDER[ablation]
    spatial = rung["spatial"] if spatial is _UNSET else bool(spatial)
    lam = rung.get("lam") if lam is _UNSET else lam
    init = rung["init"] if init is _UNSET else init
    js = joint_space(x, inp, normalize=normalize, spatial=spatial, lam=lam, variance=variance, scale=scale,
                     per=per, eps=eps, reuse=True)
    feature_mean = isinstance(init, str) and init == "feature_mean"
    start = resolve_start("mean" if feature_mean else init, js.feature_sq if feature_mean else js.sq, inp.valid, seed)
    return farthest_first(js.z, k, start, valid=inp.valid, sq=js.sq, pool=pool, strategy=strategy)
