"""SViT selector (Liu et al., "Revisiting token pruning for object detection and instance segmentation").

One selector with SM's architecture at every position 3..11 (9 modules, 0.341 M parameters at
C = 384). Each decides over ALL grid positions independently of the previous layers: a token
pruned earlier can be reactivated with its stale feature. Training: hard Gumbel-softmax with the
standard convention (tau = 1). Inference: deterministic argmax.
"""
from __future__ import annotations

import torch
from torch import nn

from patchprune.learned.common import ensure_one, grid_tokens, record_keep, rescue_empty
from patchprune.learned.gumbel import KEEP, keep_decision
from patchprune.learned.heads import SelectorMLP
from patchprune.learned.registry import LearnedPruner, MethodConfig, check_positions, depth, embed_dim, register_method
from patchprune.policies.base import Decision, Policy, PolicyContext, register_policy

SVIT_POSITIONS = tuple(range(3, 12))
SVIT_BASE_TARGETS = (0.7,) * 3 + (0.49,) * 3 + (0.343,) * 3


def svit_targets(target: float, num_blocks: int = 12, positions: tuple[int, ...] = SVIT_POSITIONS) -> list[float]:
    """Per-layer keep targets: SViT's 0.7 / 0.49 / 0.343 pattern scaled so that PKR == target.

    PKR = (dense blocks + sum of the per-layer targets) / num_blocks, with the layers before the
    first selector dense.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target PKR must be in (0, 1], got {target}")
    dense = positions[0]
    base = list(SVIT_BASE_TARGETS)[: len(positions)]
    need = target * num_blocks - dense
    if need <= 0 or need > len(positions):
        raise ValueError(f"target PKR {target} is out of reach with {dense} dense blocks of {num_blocks}")
    scale = need / sum(base)
    out = [b * scale for b in base]
    if max(out) > 1.0:
        raise ValueError(f"target PKR {target} needs keep ratios above 1 with SViT's pattern")
    return out


class SViTSelector(Policy):
    """One SViT layer: independent per-layer keep decision over the full grid (reactivation allowed)."""

    counts_vary = True  # keeps what its decisions keep: the count follows the content

    def __init__(self, dim: int, tau: float = 1.0, hidden_div: int = 4, init_keep: float | None = None) -> None:
        super().__init__()
        self.head = SelectorMLP(dim, hidden_div)
        self.tau = float(tau)
        if init_keep is not None:
            self.head.init_keep(init_keep, noise_scale=self.tau)

    def forward(self, ctx: PolicyContext) -> Decision:
        x = grid_tokens(ctx)
        z = self.head(x)
        margin = z[..., KEEP] - z[..., 1 - KEEP]
        if ctx.training:
            s = keep_decision(z, self.tau, noise=True, convention="standard")
            s = rescue_empty(s, margin, torch.ones_like(margin, dtype=torch.bool))
            record_keep(ctx, "svit", s)
            return Decision(keep=s)
        eligible = torch.ones_like(margin, dtype=torch.bool)
        keep = ensure_one(margin >= 0, margin, eligible)
        record_keep(ctx, "svit", keep)
        return Decision(keep_grid=keep)


@register_policy("svit")
def _make(ratio: float | None = None, dim: int = 384, tau: float = 1.0) -> SViTSelector:
    return SViTSelector(dim, tau=tau)


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
