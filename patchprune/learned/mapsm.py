"""Map-SM, VPP's temporal Mapping Selective Module (position 1 of a 12-block ViT).

For frame t it maps the previous frame's deep features onto the current patches and keeps the
top k = `keep_count(N, kappa)` patches (spec: shared/spec/vpp.md, "Map-SM", says floor(kappa * N);
the library rounds every ratio one way, halves up, see `patchprune.tokens.keep_count`):

1. S = X K^T (X = x_1 of frame t, K = x_1 of frame t-1; raw dot products, no scaling).
2. Spatial prior P_ij = log10(10 * (1 - d_ij / 2) + 1e-6), d_ij = L1 distance of normalised patch
   coordinates (col / (W-1), row / (H-1)).
3. Phi = S + P, -inf on previous-frame tokens that block 5 did not process.
4. A = hard Gumbel-softmax over the previous tokens (tau = 10, VPP convention), straight-through.
5. Xm = A V (V = x_6 of frame t-1).
6. z = LogSoftmax(FC2(GELU(FC1(LN(Xm))))), FC1: C -> C/2 (75,074 parameters at C = 384); the
   authors' init: Linear weights trunc-normal 0.02, zero biases.
7. Optional smoothing (default on): replicate-pad + 9x9 mean pool of z on the grid (`smooth_kernel`;
   "auto": the same share of the grid's short side as 9 of YouTube-VIS's ~22.5 patches, see
   `grid_smooth_kernel`).
8. p = softmax(z + g / tau_s)[keep], noise kept at inference (sparse background activation).
9. M1 = onehot(top-k of p) + p - p.detach().

Without a usable prior (first frame, reset, new resolution) M1 is all ones for that sample. The
cache for the next frame is staged here (keys = x_1, cloned) and committed in `observe(6, ...)`
(values = x_6, mask = tokens processed by block 5).
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from patchprune.learned.common import SparsityRecord, ensure_one, grid_tokens, record, record_keep, target_default
from patchprune.learned.gumbel import KEEP, gumbel_softmax, perturb, straight_through
from patchprune.learned.heads import SelectorMLP, init_trunc_normal
from patchprune.policies.base import Decision, Policy, PolicyContext, keep_count, register_policy
from patchprune.policies.common import eligible_tokens
from patchprune.tokens import gather_tokens


@lru_cache(maxsize=16)
def _spatial_prior(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w) / max(h - 1, 1)
    cols = torch.arange(w, dtype=torch.float64).repeat(h) / max(w - 1, 1)
    d = (cols[:, None] - cols[None, :]).abs() + (rows[:, None] - rows[None, :]).abs()
    return torch.log10(10.0 * (1.0 - d / 2.0) + 1e-6).to(device=device, dtype=dtype)


def spatial_prior(grid: tuple[int, int], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """P [N, N] with P_ij = log10(10 (1 - d_ij / 2) + 1e-6): 1 at distance 0, about -6 at opposite corners."""
    h, w = int(grid[0]), int(grid[1])
    if h < 1 or w < 1:
        raise ValueError(f"grid must have positive sides, got {grid}")
    return _spatial_prior(h, w, torch.device(device), dtype)  # cached per device: no per-frame copy


def smooth_logits(z: Tensor, grid: tuple[int, int], kernel: int = 9) -> Tensor:
    """Replicate-pad and mean-pool [B, N, 2] logits on the H x W grid (kernel x kernel, stride 1)."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"smoothing kernel must be a positive odd size, got {kernel}")
    if kernel == 1:
        return z
    B, N, K = z.shape
    h, w = grid
    img = z.transpose(1, 2).reshape(B, K, h, w)
    pad = kernel // 2
    img = F.pad(img, (pad, pad, pad, pad), mode="replicate")
    img = F.avg_pool2d(img, kernel, stride=1)
    return img.reshape(B, K, N).transpose(1, 2)


SMOOTH_SHARE = 9 / 22.5  # the spec's 9 x 9 window over a ~360 px short side at patch 16


def grid_smooth_kernel(grid: tuple[int, int], share: float = SMOOTH_SHARE) -> int:
    """The odd kernel nearest to `share` of the grid's short side (12 x 12 -> 5, 22 -> 9, 32 -> 13)."""
    side = min(int(grid[0]), int(grid[1]))
    return max(1, 2 * round((share * side - 1) / 2) + 1)


def resolve_smooth_kernel(kernel: int | str, grid: tuple[int, int]) -> int:
    """`smooth_kernel` as given (a positive odd int) or "auto" -> `grid_smooth_kernel(grid)`."""
    if kernel == "auto":
        return grid_smooth_kernel(grid)
    if isinstance(kernel, str) or isinstance(kernel, bool) or int(kernel) < 1 or int(kernel) % 2 == 0:
        raise ValueError(f"smooth_kernel must be a positive odd size or 'auto', got {kernel!r}")
    return int(kernel)


MAPSM_KAPPA = {0.55: 0.7, 0.40: 0.6}


def default_kappa(target: float) -> float:
    """Map-SM top-k fraction for a PKR target (spec: 0.7 for 55 %, 0.6 for 40 %)."""
    return target_default(MAPSM_KAPPA, target, "Map-SM kappa", "kappa")


class MapSM(Policy):
    """Temporal mapping selective module; reads and writes the `VideoStream` cache."""

    counts_vary = True  # keeps what its decisions keep: the count follows the content

    def __init__(
        self,
        dim: int,
        kappa: float = 0.7,
        tau: float = 10.0,
        tau_s: float = 10.0,
        smoothing: bool = True,
        smooth_kernel: int | str = 9,
        noise: bool = True,
        reference_position: int = 6,
        name: str = "mapsm",
        detach_input: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 < kappa <= 1.0:
            raise ValueError(f"kappa must be in (0, 1], got {kappa}")
        self.head = SelectorMLP(dim, hidden_div=2)
        init_trunc_normal(self.head)  # the authors' init: trunc-normal 0.02, zero bias
        self.kappa, self.tau, self.tau_s = float(kappa), float(tau), float(tau_s)
        resolve_smooth_kernel(smooth_kernel, (1, 1))  # validate now, resolve per grid ("auto")
        self.smooth_kernel = smooth_kernel if smooth_kernel == "auto" else int(smooth_kernel)
        self.smoothing, self.noise = bool(smoothing), bool(noise)
        self.detach_input = bool(detach_input)  # our option: x_1 reaches the module without its gradient
        self.observe_positions = (int(reference_position),)
        self.cache_name = name

    # ---- the mapping -------------------------------------------------------------------------
    def keep_probability(self, x: Tensor, keys: Tensor, values: Tensor, prev_mask: Tensor, grid: tuple[int, int],
                         differentiable: bool = True) -> Tensor:
        """p [B, N]: keep probability of every current patch given the previous frame's cache.

        `differentiable=False` (inference) maps with an index gather instead of the one-hot matmul:
        the same values, without the straight-through graph.
        """
        prev_mask = prev_mask.bool() | ~prev_mask.bool().any(dim=1, keepdim=True)  # never an empty row
        phi = torch.baddbmm(spatial_prior(grid, x.device, x.dtype).expand(x.shape[0], -1, -1), x, keys.transpose(1, 2))
        phi = phi.masked_fill(~prev_mask[:, None, :], float("-inf"))
        if differentiable:
            assoc = gumbel_softmax(phi, tau=self.tau, hard=True, noise=self.noise, convention="vpp")
            mapped = assoc @ values
        else:
            src = perturb(phi, self.tau, self.noise, "vpp").argmax(dim=-1)
            mapped = gather_tokens(values, src)
        z = self.head(mapped)
        if self.smoothing:
            z = smooth_logits(z, grid, resolve_smooth_kernel(self.smooth_kernel, grid))
        return torch.softmax(perturb(z, self.tau_s, self.noise, "vpp"), dim=-1)[..., KEEP]

    def forward(self, ctx: PolicyContext) -> Decision:
        x = grid_tokens(ctx)  # x_1 on the full grid
        if self.detach_input:
            x = x.detach()
        B, N, _ = x.shape
        stream = ctx.stream
        cache = stream.read(self.cache_name, ctx.grid, B, width=x.shape[-1]) if stream is not None else None
        if stream is not None:
            stream.stage(self.cache_name, keys=x.clone(), grid=tuple(ctx.grid))
        if cache is None:
            ones = x.new_ones(B)
            record(ctx, SparsityRecord("mapsm", ones.mean(), ones))
            return Decision(keep=ctx.alive if ctx.training else eligible_tokens(ctx))
        active = cache.valid.to(x.device)
        all_active = bool(active.all())
        p = self.keep_probability(x, cache.keys, cache.values, cache.mask, ctx.grid, differentiable=ctx.training)
        k = keep_count(N, self.kappa)
        hard = torch.zeros_like(p, dtype=torch.bool).scatter_(1, p.detach().topk(k, dim=1).indices, True)
        if not all_active:
            hard = hard | ~active[:, None]
        prob_mean = p.mean() if all_active else p[active].mean()
        if ctx.training:
            m = straight_through(hard.to(p.dtype), p)
            if not all_active:
                m = torch.where(active[:, None], m, torch.ones_like(m))
            record_keep(ctx, "mapsm", m, prob_mean)
            return Decision(keep=m * ctx.alive)
        record_keep(ctx, "mapsm", hard, prob_mean)
        eligible = eligible_tokens(ctx)
        return Decision(keep=ensure_one(hard.gather(1, ctx.index) & eligible, p.gather(1, ctx.index), eligible))

    def observe(self, position: int, features: Tensor, alive: Tensor, stream) -> None:
        """At the reference position: stage x_6 and the mask block 5 ran under, then commit."""
        staged = stream.staged(self.cache_name) if stream is not None else None
        if staged is None:
            return
        if staged["keys"].shape[:2] != features.shape[:2]:
            raise ValueError(f"x_6 {tuple(features.shape)} does not match the staged x_1 {tuple(staged['keys'].shape)}")
        mask = alive if alive.dtype == torch.bool else alive > 0.5
        stream.stage(self.cache_name, values=features.clone(), mask=mask.detach())
        stream.commit(self.cache_name)


@register_policy("vpp-mapsm")
def _make(ratio: float | None = None, dim: int = 384, kappa: float | None = None, **options) -> MapSM:
    return MapSM(dim, kappa=kappa if kappa is not None else (ratio if ratio is not None else 0.7), **options)
