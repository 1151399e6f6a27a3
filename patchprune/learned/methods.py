"""Builders of the image-based baselines (SViT, DynamicViT, TPS, EViT); importing this module
(and `vpp`) registers every method with `patchprune.learned.build`."""
from __future__ import annotations

from typing import Any

from torch import nn

import patchprune.learned.vpp  # noqa: F401  (registers "vpp")
from patchprune.learned.dynamicvit import DYNAMICVIT_POSITIONS, DynamicViTStage, dynamicvit_rho
from patchprune.learned.evit import EVIT_KEEP_RATE, EVIT_POSITIONS, EViT, evit_keep_rate
from patchprune.learned.registry import LearnedPruner, MethodConfig, check_positions, depth, embed_dim, register_method
from patchprune.learned.svit import SViTSelector, svit_targets
from patchprune.learned.tps import TPSStage


@register_method("svit")
def build_svit(model: nn.Module, target: float = 0.55, positions: tuple[int, ...] | None = None,
               targets: list[float] | None = None, tau: float = 1.0, weight: float = 4.0, init_keep: bool = False,
               execution: str = "auto") -> LearnedPruner:
    """SViT: a selector at every position 3..depth-1, targets scaled to the PKR target.

    init_keep: our option (docs/learned/baselines.md): start each selector at its layer's target
    keep rate (zero output weights) instead of PyTorch's default init."""
    positions = tuple(positions or range(3, depth(model)))
    check_positions(model, positions, "svit")
    targets = list(targets) if targets is not None else svit_targets(target, depth(model), positions)
    if len(targets) != len(positions):
        raise ValueError(f"svit: {len(targets)} targets for {len(positions)} positions")
    dim = embed_dim(model)
    schedule = {p: SViTSelector(dim, tau=tau, init_keep=t if init_keep else None) for p, t in zip(positions, targets)}
    config = MethodConfig("svit", target, targets, {"weight": weight}, {"tau": tau})
    return LearnedPruner(model, schedule, config, execution=execution)


def _build_stages(method: str, cls: type, model: nn.Module, target: float, rho: float | None,
                  positions: tuple[int, ...], tau: float, weight: float, execution: str,
                  init_keep: bool = False, freeze_pruned: bool = False) -> LearnedPruner:
    rho = dynamicvit_rho(target) if rho is None else rho
    check_positions(model, positions, method)
    dim = embed_dim(model)
    ratios = [rho ** (s + 1) for s in range(len(positions))]
    # init_keep: every stage starts keeping rho of its live tokens (zero output weights)
    schedule = {p: cls(dim, r, tau=tau, init_keep=rho if init_keep else None, freeze_pruned=freeze_pruned)
                for p, r in zip(positions, ratios)}
    config = MethodConfig(method, target, ratios, {"weight": weight},
                          {"rho": rho, "tau": tau, "init_keep": init_keep, "freeze_pruned": freeze_pruned})
    return LearnedPruner(model, schedule, config, execution=execution)


@register_method("dynamicvit")
def build_dynamicvit(model: nn.Module, target: float = 0.55, rho: float | None = None,
                     positions: tuple[int, ...] = DYNAMICVIT_POSITIONS, tau: float = 1.0, weight: float = 2.0,
                     init_keep: bool = False, freeze_pruned: bool = False, execution: str = "auto") -> LearnedPruner:
    """DynamicViT: three stages keeping rho, rho^2, rho^3 of the grid (rho 0.6 / 0.4).

    init_keep: our option, start every stage at rho (zero output weights) instead of the authors'
    trunc-normal init. freeze_pruned: our option, gate pruned tokens' updates in training as VPP
    does (the authors update every token; docs/learned/baselines.md)."""
    return _build_stages("dynamicvit", DynamicViTStage, model, target, rho, positions, tau, weight, execution,
                         init_keep, freeze_pruned)


@register_method("tps")
def build_tps(model: nn.Module, target: float = 0.55, rho: float | None = None,
              positions: tuple[int, ...] = DYNAMICVIT_POSITIONS, tau: float = 1.0, weight: float = 2.0,
              init_keep: bool = False, freeze_pruned: bool = False, execution: str = "auto") -> LearnedPruner:
    """TPS: DynamicViT's stages with squeezing of the pruned tokens into their hosts (options as DynamicViT)."""
    return _build_stages("tps", TPSStage, model, target, rho, positions, tau, weight, execution, init_keep,
                         freeze_pruned)


@register_method("evit")
def build_evit(model: nn.Module, target: float = 0.55, keep_rate: float | None = None,
               positions: tuple[int, ...] = EVIT_POSITIONS, fuse: bool = False, match_pkr: bool = False,
               execution: str = "auto", **unknown: Any) -> LearnedPruner:
    """EViT (needs a CLS token): CLS-attention top-k between attention and MLP of blocks 3, 6, 9.

    keep_rate: the authors' 0.7 by default; match_pkr=True (our option) picks the rate whose PKR
    equals `target` instead (`evit_keep_rate`). No loss, no parameters."""
    if unknown:
        raise ValueError(f"unknown EViT options: {sorted(unknown)}")
    if getattr(model, "num_prefix_tokens", 0) < 1 or getattr(model, "cls_token", None) is None:
        raise ValueError("EViT needs a ViT with a CLS token (class_token=True)")
    check_positions(model, positions, "evit")
    if keep_rate is not None and match_pkr:
        raise ValueError("evit: give keep_rate or match_pkr=True, not both")
    rate = keep_rate if keep_rate is not None else (
        evit_keep_rate(target, depth(model), positions) if match_pkr else EVIT_KEEP_RATE)
    schedule = {p: EViT(rate, fuse=fuse) for p in positions}
    config = MethodConfig("evit", target, [], {}, {"keep_rate": rate, "fuse": fuse, "match_pkr": match_pkr})
    return LearnedPruner(model, schedule, config, execution=execution)
