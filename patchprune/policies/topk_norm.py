"""topk-norm: keep the live tokens with the largest L2 norm (a cheap training-free saliency score)."""
from __future__ import annotations

from patchprune.policies.base import Decision, Policy, PolicyContext, register_policy
from patchprune.policies.common import as_decision_mask, keep_top_ratio


class TopKNorm(Policy):
    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = float(ratio)

    def forward(self, ctx: PolicyContext) -> Decision:
        scores = ctx.tokens.detach().float().norm(dim=-1)
        return Decision(keep=as_decision_mask(ctx, keep_top_ratio(ctx, scores, self.ratio)))


@register_policy("topk-norm")
def _make(ratio: float) -> TopKNorm:
    return TopKNorm(ratio)
