"""keep-all: the identity policy (a dense baseline that still goes through the runner)."""
from __future__ import annotations

from patchprune.policies.base import Decision, Policy, PolicyContext, register_policy


class KeepAll(Policy):
    def forward(self, ctx: PolicyContext) -> Decision:
        return Decision(keep=ctx.alive)


@register_policy("keep-all")
def _make(ratio: float = 1.0) -> KeepAll:
    return KeepAll()
