"""random: keep a uniformly random subset of the live tokens.

mode="fixed" keeps exactly `keep_count(live, ratio)` (round, halves up) tokens per sample; mode="bernoulli" keeps each
live token with probability `ratio` (at least one), so samples of a batch keep different counts.
"""
from __future__ import annotations

import torch

from patchprune.policies.base import Decision, Policy, PolicyContext, register_policy
from patchprune.policies.common import as_decision_mask, eligible_tokens, keep_top_ratio, topk_mask


class RandomPolicy(Policy):
    def __init__(self, ratio: float, mode: str = "fixed", seed: int | None = None) -> None:
        super().__init__()
        if mode not in ("fixed", "bernoulli"):
            raise ValueError(f"random policy mode must be 'fixed' or 'bernoulli', got {mode!r}")
        self.ratio, self.mode, self.seed = float(ratio), mode, seed
        self._generator: torch.Generator | None = None

    def reset(self) -> None:
        """Restart the seeded random stream (same draws again)."""
        self._generator = None

    def _uniform(self, like: torch.Tensor) -> torch.Tensor:
        if self.seed is None:
            return torch.rand(like.shape, device=like.device)
        if self._generator is None or self._generator.device != like.device:
            self._generator = torch.Generator(device=like.device).manual_seed(self.seed)
        return torch.rand(like.shape, device=like.device, generator=self._generator)

    def forward(self, ctx: PolicyContext) -> Decision:
        u = self._uniform(ctx.index)
        if self.mode == "fixed":
            keep = keep_top_ratio(ctx, u, self.ratio)
        else:
            eligible = eligible_tokens(ctx)
            keep = (u < self.ratio) & eligible
            # never an empty sample: keep its best draw
            keep |= topk_mask(u, torch.ones_like(ctx.index[:, 0]), eligible) & (keep.sum(1, keepdim=True) == 0)
        return Decision(keep=as_decision_mask(ctx, keep))


@register_policy("random")
def _make(ratio: float, mode: str = "fixed", seed: int | None = None) -> RandomPolicy:
    return RandomPolicy(ratio, mode=mode, seed=seed)


@register_policy("random-bernoulli")
def _make_bernoulli(ratio: float, seed: int | None = None) -> RandomPolicy:
    return RandomPolicy(ratio, mode="bernoulli", seed=seed)
