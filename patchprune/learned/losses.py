"""Sparsity losses of the learned pruning methods (pure functions of the modules' keep statistics).

- VPP (spec Eq. 6 / 7):
  L = lambda_SM * [lambda_map * (mean(p) - theta)^2 + sum_s (mean(m_s) - r_s)^2] / (lambda_map + S)
  with S SM stages; without Map-SM (first frame): lambda_SM * sum_s (mean(m_s) - r_s)^2 / S.
  S = 0 (Map-SM only, Table 4 setting 4): the Map-SM term alone; zero on a pass without its prior.
  Means are over batch and tokens jointly; m_s is the cumulative SM mask relative to all N tokens.
- SViT: weight * mean over layers of (batch-mean keep - target_l)^2, weight 4.
- DynamicViT / TPS: weight * mean over stages of mean over the batch of (per-sample keep - rho^s)^2,
  weight 2 (DynamicViT's own code: the ratio error is taken per sample, then averaged).

`sparsity_loss(method, aux, ...)` computes them from a runner output's `aux` (the records the
policies wrote), so any training loop can add them. Each method's reader is registered with
`register_loss(method)` (a new method registers its own in its file).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from patchprune.learned.common import SparsityRecord, records
from patchprune.registry import Registry

LossReader = Callable[..., Tensor]  # (records {position: SparsityRecord}, targets, **weights) -> scalar loss
_LOSSES: Registry[LossReader] = Registry("sparsity loss")


def register_loss(method: str) -> Callable[[LossReader], LossReader]:
    """Decorator: `reader(records, targets, **weights)` is `method`'s sparsity loss."""
    return _LOSSES.register(method)


def has_loss(method: str) -> bool:
    """True when `method` registered a sparsity loss."""
    return method in _LOSSES


def vpp_targets(kappa: float, rho: float, stages: int = 3) -> list[float]:
    """r_s = kappa * rho^s for s = 1..stages (55 %: 0.56, 0.448, 0.358; 40 %: 0.42, 0.294, 0.206)."""
    return [kappa * rho**s for s in range(1, stages + 1)]


VPP_FIRST_FRAME_LOSSES = ("spec", "none", "live")


def vpp_loss(
    map_prob_mean: Tensor | None,
    sm_keep_means: Sequence[Tensor],
    targets: Sequence[float],
    lambda_sm: float = 40.0,
    lambda_map: float = 10.0,
    theta: float = 0.5,
    first_frame: str = "spec",
    kappa: float | None = None,
) -> Tensor:
    """VPP's per-frame sparsity loss; `map_prob_mean` None means Map-SM did not act (first frame).

    first_frame: the loss of a pass without the Map-SM prior. "spec" (default): lambda_SM *
    sum_s (mean(m_s) - r_s)^2 / S, the same targets relative to all N tokens. With the spec's
    training chain (one prior-free pass in three, one frame in twelve at inference) this pulls
    the SMs about 0.07 below their targets on every later frame, measured in
    benchmarks/fgseg/NOTES.md. "none": no sparsity loss on such passes. "live": targets r_s / kappa
    (the SMs' share of the live tokens, as on Map-SM passes); needs `kappa`.
    """
    if len(sm_keep_means) != len(targets):
        raise ValueError(f"{len(sm_keep_means)} SM keep means for {len(targets)} targets")
    if not sm_keep_means and map_prob_mean is None:
        raise ValueError("vpp_loss needs a Map-SM keep probability or at least one SM stage")
    if first_frame not in VPP_FIRST_FRAME_LOSSES:
        raise ValueError(f"first_frame must be one of {VPP_FIRST_FRAME_LOSSES}, got {first_frame!r}")
    if map_prob_mean is None:
        if first_frame == "none":
            return torch.zeros_like(sm_keep_means[0])
        if first_frame == "live":
            if kappa is None or not 0.0 < kappa <= 1.0:
                raise ValueError(f"first_frame='live' needs kappa in (0, 1], got {kappa!r}")
            targets = [r / kappa for r in targets]
        return lambda_sm * sum((m - r) ** 2 for m, r in zip(sm_keep_means, targets)) / len(targets)
    sm = sum((m - r) ** 2 for m, r in zip(sm_keep_means, targets))
    return lambda_sm * (lambda_map * (map_prob_mean - theta) ** 2 + sm) / (lambda_map + len(targets))


def svit_loss(keep_means: Sequence[Tensor], targets: Sequence[float], weight: float = 4.0) -> Tensor:
    """weight * mean_l (keep_l - target_l)^2 over SViT's layers."""
    if len(keep_means) != len(targets) or not keep_means:
        raise ValueError(f"{len(keep_means)} keep means for {len(targets)} targets")
    return weight * torch.stack([(m - t) ** 2 for m, t in zip(keep_means, targets)]).mean()


def dynamicvit_loss(per_sample_keeps: Sequence[Tensor], targets: Sequence[float], weight: float = 2.0) -> Tensor:
    """weight * mean over stages of mean_b (keep_b - target_s)^2 (per-sample keep ratios [B])."""
    if len(per_sample_keeps) != len(targets) or not per_sample_keeps:
        raise ValueError(f"{len(per_sample_keeps)} stage keeps for {len(targets)} targets")
    return weight * torch.stack([((k - t) ** 2).mean() for k, t in zip(per_sample_keeps, targets)]).mean()


def sparsity_loss(method: str, aux: dict, targets: Sequence[float], **weights: Any) -> Tensor:
    """The method's sparsity loss from the policies' records in a runner output's `aux`.

    method: "vpp" | "svit" | "dynamicvit" | "tps" (or any method that registered one). targets: per SM
    stage (vpp), per layer (svit), per stage (dynamicvit / tps), in position order.
    """
    if not has_loss(method):
        raise ValueError(f"no sparsity loss for method {method!r}; methods with one: {', '.join(_LOSSES.names())}")
    return _LOSSES.get(method)(records(aux), targets, **weights)


@register_loss("vpp")
def _vpp_from_records(recs: dict[int, SparsityRecord], targets: Sequence[float], **weights: Any) -> Tensor:
    maps = [r for r in recs.values() if r.kind == "mapsm"]
    sms = [r.keep_mean for r in recs.values() if r.kind == "sm"]
    prob = maps[0].prob_mean if maps and maps[0].prob_mean is not None else None
    if prob is None and not sms and maps:  # Map-SM only (Table 4, setting 4), on a pass without its prior
        return maps[0].keep_mean.new_zeros(())
    return vpp_loss(prob, sms, targets, **weights)


@register_loss("svit")
def _svit_from_records(recs: dict[int, SparsityRecord], targets: Sequence[float], **weights: Any) -> Tensor:
    return svit_loss([r.keep_mean for r in recs.values() if r.kind == "svit"], targets, **weights)


def _stages_from_records(recs: dict[int, SparsityRecord], targets: Sequence[float], **weights: Any) -> Tensor:
    return dynamicvit_loss([r.keep_per_sample for r in recs.values() if r.kind == "dynamicvit"], targets, **weights)


register_loss("dynamicvit")(_stages_from_records)
register_loss("tps")(_stages_from_records)
