"""random: keep a uniformly random subset of the live tokens.

mode="fixed" keeps exactly `keep_count(live, ratio)` (round, halves up) tokens per sample; mode="bernoulli" keeps each
live token with probability `ratio` (at least one), so samples of a batch keep different counts;
with `spread` s the probability of sample b of B runs linearly from ratio (1 - s) to ratio (1 + s)
(capped at 1) over the batch: a stand-in for content-dependent methods on frames with different
amounts of foreground, where the samples' counts differ widely (the case ragged execution is for).
"""
from __future__ import annotations

import torch

from patchprune.policies.base import Decision, Policy, PolicyContext, register_policy
from patchprune.policies.common import as_decision_mask, eligible_tokens, keep_top_ratio, topk_mask


class RandomPolicy(Policy):
    def __init__(self, ratio: float, mode: str = "fixed", seed: int | None = None, spread: float = 0.0) -> None:
        super().__init__()
        if mode not in ("fixed", "bernoulli"):
            raise ValueError(f"random policy mode must be 'fixed' or 'bernoulli', got {mode!r}")
        if not 0.0 <= float(spread) < 1.0:
            raise ValueError(f"spread must be in [0, 1), got {spread!r}")
        if spread and mode != "bernoulli":
            raise ValueError("spread varies the keep probability per sample: use it with mode 'bernoulli' "
                             "(random-bernoulli)")
        self.ratio, self.mode, self.seed, self.spread = float(ratio), mode, seed, float(spread)
        self.counts_vary = mode == "bernoulli"  # a draw per token: the count moves from call to call
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

    def sample_probabilities(self, batch: int, device: torch.device) -> torch.Tensor:
        """[B] keep probability of each sample: `ratio`, spread linearly by +-`spread` over the batch."""
        offsets = torch.linspace(-1.0, 1.0, batch, device=device) if batch > 1 else torch.zeros(1, device=device)
        return (self.ratio * (1.0 + self.spread * offsets)).clamp(max=1.0)

    def forward(self, ctx: PolicyContext) -> Decision:
        u = self._uniform(ctx.index)
        if self.mode == "fixed":
            keep = keep_top_ratio(ctx, u, self.ratio)
        else:
            eligible = eligible_tokens(ctx)
            keep = (u < self.sample_probabilities(u.shape[0], u.device)[:, None]) & eligible
            # never an empty sample: keep its best draw
            keep |= topk_mask(u, torch.ones_like(ctx.index[:, 0]), eligible) & (keep.sum(1, keepdim=True) == 0)
        return Decision(keep=as_decision_mask(ctx, keep))


@register_policy("random")
def _make(ratio: float, mode: str = "fixed", seed: int | None = None) -> RandomPolicy:
    return RandomPolicy(ratio, mode=mode, seed=seed)


@register_policy("random-bernoulli")
def _make_bernoulli(ratio: float, seed: int | None = None, spread: float = 0.0) -> RandomPolicy:
    return RandomPolicy(ratio, mode="bernoulli", seed=seed, spread=spread)
