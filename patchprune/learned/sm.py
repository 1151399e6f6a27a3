"""SM, VPP's Selective Module (positions 3, 6, 9 of a 12-block ViT).

z = LogSoftmax(MLP(LN(x))) with FC1: C -> C/4 (37,922 parameters at C = 384). The keep decision
is a hard Gumbel-softmax of z with the VPP convention (tau = 10 scales the noise down): keep iff
z_keep - z_drop + noise > 0. No top-k, so the count varies per sample ("dynamic mask scaling").
Masks are cumulative (m = s * m_prev: a pruned token is never reactivated). VPP keeps the noise at
inference ("sparse background activation"); `noise=False` makes the module deterministic.
"""
from __future__ import annotations

from torch import Tensor

from patchprune.learned.common import ensure_one, record_keep, rescue_empty
from patchprune.learned.gumbel import KEEP, keep_decision, keeps, perturb
from patchprune.learned.heads import SelectorMLP
from patchprune.policies.base import Decision, Policy, PolicyContext, register_policy
from patchprune.policies.common import eligible_tokens


class SM(Policy):
    """VPP's per-token selective module; cumulative hard masks, noise kept at inference."""

    counts_vary = True  # keeps what its decisions keep: the count follows the content

    def __init__(self, dim: int, tau: float = 10.0, noise: bool = True, hidden_div: int = 4,
                 init_keep: float | None = None, detach_input: bool = False) -> None:
        super().__init__()
        self.head = SelectorMLP(dim, hidden_div)
        self.tau = float(tau)
        self.noise = bool(noise)
        self.detach_input = bool(detach_input)  # our option: the module's losses do not reshape the ViT's tokens
        if init_keep is not None:  # start at the stage's keep rate (relative to the live tokens)
            self.head.init_keep(init_keep, noise_scale=1.0 / self.tau)

    def logits(self, x: Tensor) -> Tensor:
        """Two-class log-probabilities [B, n, 2] (class 0 = keep)."""
        return self.head(x)

    def forward(self, ctx: PolicyContext) -> Decision:
        z = self.logits(ctx.tokens.detach() if self.detach_input else ctx.tokens)
        margin = z[..., KEEP] - z[..., 1 - KEEP]
        if ctx.training:
            s = keep_decision(z, self.tau, noise=self.noise, convention="vpp")
            m = rescue_empty(s * ctx.alive, margin, ctx.alive > 0.5)  # cumulative, straight-through
            record_keep(ctx, "sm", m)
            return Decision(keep=m)
        y = perturb(z, self.tau, self.noise, "vpp")  # the same decision, without the soft branch
        eligible = eligible_tokens(ctx)
        keep = ensure_one(keeps(y) & eligible, margin, eligible)
        record_keep(ctx, "sm", keep)
        return Decision(keep=keep)


@register_policy("vpp-sm")
def _make(ratio: float | None = None, dim: int = 384, tau: float = 10.0, noise: bool = True) -> SM:
    # `ratio` is accepted for schedule compatibility only: SM has no fixed keep count.
    return SM(dim, tau=tau, noise=noise)
