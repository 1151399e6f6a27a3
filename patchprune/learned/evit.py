"""EViT (Liang et al.): keep the tokens the CLS token attends to most (mean over heads).

For ViTs with a CLS token (image-classification style). As published, a stage acts inside its block,
after the attention and before the MLP (`acts_after_attention`): with the block's own CLS attention
(softmax weights, mean over heads) it keeps the top ceil(keep_rate * n_live) live patch tokens
(keep rate 0.7 by default at positions 3, 6, 9); only those run the block's MLP and the later
blocks. With `fuse=True` (gather execution only) the other live tokens become one extra token,
the plain sum of a_j x_j (a_j: their CLS attention, not renormalised), with no log-size attention
bias, as the authors' code; every fused grid position shows that token's feature on the restored
grid. A block's `keep_masks` entry is the set its attention ran on, so the pruning shows from the
next block on. No parameters, nothing to train.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from patchprune.learned.common import ensure_one, record_keep
from patchprune.learned.registry import LearnedPruner, MethodConfig, check_positions, depth, register_method
from patchprune.policies.base import Decision, Merge, Policy, PolicyContext, register_policy
from patchprune.policies.common import as_decision_mask, eligible_tokens, topk_mask
from patchprune.tokens import gather_tokens, mask_to_slots

EVIT_POSITIONS = (3, 6, 9)
EVIT_KEEP_RATE = 0.7


class EViT(Policy):
    """Attention top-k pruning guided by the CLS token, between a block's attention and its MLP."""

    needs_attention = True
    acts_after_attention = True

    def __init__(self, keep_rate: float = EVIT_KEEP_RATE, fuse: bool = False) -> None:
        super().__init__()
        if not 0.0 < keep_rate <= 1.0:
            raise ValueError(f"EViT keep rate must be in (0, 1], got {keep_rate}")
        self.keep_rate, self.fuse = float(keep_rate), bool(fuse)

    def attention_queries(self, num_prefix: int) -> int | None:
        """EViT reads the CLS query row only (the runner computes just that row)."""
        return 1

    def cls_attention(self, ctx: PolicyContext) -> Tensor:
        """[B, n]: attention of the CLS token (prefix slot 0) to each live token, mean over heads."""
        if ctx.prefix.shape[1] < 1:
            raise ValueError("EViT needs a CLS token (the model has no prefix tokens); use another policy")
        if ctx.attn is None:
            raise ValueError("EViT needs the block's attention weights (ctx.attn is None)")
        P = ctx.prefix.shape[1]
        return ctx.attn[:, :, 0, P:].mean(1)

    def forward(self, ctx: PolicyContext) -> Decision | Merge:
        score = self.cls_attention(ctx).detach()
        eligible = eligible_tokens(ctx)
        n_live = eligible.sum(1)
        k = torch.clamp(torch.ceil(n_live.double() * self.keep_rate).long(), min=1)
        keep = ensure_one(topk_mask(score, k, eligible), score, eligible)
        record_keep(ctx, "evit", keep)
        if ctx.training:
            return Decision(keep=as_decision_mask(ctx, keep))
        if not self.fuse:
            return Decision(keep=keep)
        return self.fused(ctx, keep, eligible, score)

    def fused(self, ctx: PolicyContext, keep: Tensor, eligible: Tensor, score: Tensor) -> Merge | Decision:
        """Kept tokens stay, the other live tokens become one token sum_j a_j x_j (slot k)."""
        if ctx.valid is not None:
            return Decision(keep=keep)  # merging needs equal counts per sample; fall back to plain pruning
        rest = eligible & ~keep
        if not bool(rest.any(1).all()):
            return Decision(keep=keep)
        k = int(keep.sum(1)[0])
        # kept tokens in ascending order -> slots 0..k-1; fused token -> slot k
        kept_slot = torch.cumsum(keep.long(), dim=1) - 1
        assign = torch.where(keep, kept_slot, torch.full_like(kept_slot, k))
        kept_idx, _ = mask_to_slots(keep)  # [B, k]: every sample keeps k (no padding)
        extra = ((score * rest).unsqueeze(-1) * ctx.tokens).sum(1, keepdim=True)
        first_rest = torch.where(rest, ctx.index, torch.full_like(ctx.index, ctx.num_patches)).min(1, keepdim=True).values
        return Merge(
            tokens=torch.cat([gather_tokens(ctx.tokens, kept_idx), extra], dim=1),
            index=torch.cat([ctx.index.gather(1, kept_idx), first_rest], dim=1),
            size=None,  # no log-size attention bias for the fused token (the authors' EViT)
            assign=assign,
        )


@register_policy("evit")
def _make(ratio: float = EVIT_KEEP_RATE, fuse: bool = False) -> EViT:
    return EViT(ratio, fuse=fuse)


def evit_keep_rate(target: float, num_blocks: int = 12, positions: tuple[int, ...] = EVIT_POSITIONS) -> float:
    """The per-stage keep rate r with PKR == target for stages at `positions` (bisection; the PKR-matched
    option). A stage at p prunes after block p's attention, so the blocks from p + 1 on see the cut."""
    def pkr(r: float) -> float:
        kept, cur = 0.0, 1.0
        bounds = [p + 1 for p in positions] + [num_blocks]
        kept += bounds[0]
        for a, b in zip(bounds[:-1], bounds[1:]):
            cur *= r
            kept += cur * (b - a)
        return kept / num_blocks

    lo, hi = 1e-6, 1.0
    if not pkr(lo) <= target <= 1.0:
        raise ValueError(f"target PKR {target} is out of reach with EViT stages at {positions}")
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pkr(mid) < target else (lo, mid)
    return math.floor(hi * 1e6) / 1e6


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
