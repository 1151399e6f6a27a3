"""`vpp-sm-only`: VPP's SMs without the Map-SM (the paper's Table 4, settings 1 and 2).

Pruning from the current frame's features alone (no video context, no stream needed): SM modules
at `sm_positions` (default 1, 3, 6, 9; 0 = before the first block), cumulative targets
first_rate * rho^s, s = 0.. (the first SM stands in for the Map-SM's kappa), and VPP's sparsity
loss without its Map-SM term: lambda_SM * sum_s (mean(m_s) - r_s)^2 / S.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from patchprune.learned.common import SparsityRecord
from patchprune.learned.losses import register_loss, vpp_loss
from patchprune.learned.mapsm import default_kappa
from patchprune.learned.registry import LearnedPruner, MethodConfig, check_positions, embed_dim, register_method
from patchprune.learned.sm import SM
from patchprune.learned.vpp import vpp_rho

METHOD = "vpp-sm-only"
SM_ONLY_POSITIONS = (1, 3, 6, 9)


def sm_only_targets(first_rate: float, rho: float, stages: int) -> list[float]:
    """Cumulative keep targets first_rate * rho^s for s = 0..stages-1 (55 %: 0.7, 0.56, 0.448, 0.358)."""
    return [first_rate * rho**s for s in range(stages)]


@register_method(METHOD)
def build_vpp_sm_only(
    model: nn.Module,
    target: float = 0.55,
    first_rate: float | None = None,
    rho: float | None = None,
    sm_positions: tuple[int, ...] = SM_ONLY_POSITIONS,
    noise: bool = True,
    tau: float = 10.0,
    lambda_sm: float = 40.0,
    init_keep: bool = False,
    execution: str = "auto",
    **unknown: Any,
) -> LearnedPruner:
    """SM-only VPP for `target` (0.55 or 0.40: first_rate = VPP's kappa, rho = VPP's rho unless given).

    init_keep: start the first SM at first_rate and each later one at rho of the live tokens.
    """
    if unknown:
        raise ValueError(f"unknown {METHOD} options: {sorted(unknown)}")
    sm_positions = tuple(int(p) for p in sm_positions)
    if not sm_positions:
        raise ValueError(f"{METHOD}: give at least one SM position (sm_positions)")
    if len(set(sm_positions)) != len(sm_positions) or list(sm_positions) != sorted(sm_positions):
        raise ValueError(f"{METHOD}: sm_positions must be ascending and distinct, got {sm_positions}")
    check_positions(model, sm_positions, METHOD, first=0)
    first_rate = default_kappa(target) if first_rate is None else float(first_rate)
    rho = vpp_rho(target) if rho is None else float(rho)
    if not 0.0 < first_rate <= 1.0 or not 0.0 < rho <= 1.0:
        raise ValueError(f"{METHOD}: first_rate and rho must be in (0, 1], got {first_rate}, {rho}")
    dim = embed_dim(model)
    schedule: dict[int, nn.Module] = {
        p: SM(dim, tau=tau, noise=noise, init_keep=(first_rate if i == 0 else rho) if init_keep else None)
        for i, p in enumerate(sm_positions)
    }
    config = MethodConfig(
        METHOD, target, sm_only_targets(first_rate, rho, len(sm_positions)), {"lambda_sm": lambda_sm},
        {"first_rate": first_rate, "rho": rho, "sm_positions": list(sm_positions), "noise": noise,
         "init_keep": init_keep},
    )
    return LearnedPruner(model, schedule, config, execution=execution)


@register_loss(METHOD)
def _sm_only_loss(recs: dict[int, SparsityRecord], targets: Sequence[float], lambda_sm: float = 40.0) -> Tensor:
    # VPP's prior-free form ("spec"): targets relative to all N tokens
    return vpp_loss(None, [r.keep_mean for r in recs.values() if r.kind == "sm"], targets, lambda_sm=lambda_sm)
