"""Every selection method as a policy of the sparse ViT runner (training-free pruning inside a ViT).

`make_policy("evtp", 0.5)` (or the schedule entry ("evtp", 0.5, {options})) keeps floor(0.5 * live)
tokens per sample at its block position, chosen by `patchprune.select` on the block's input tokens
and their grid positions. Attention-based methods ask the runner for that block's attention.
Merging methods (tome, visionzip) return a `Merge` and run in gather (eval) execution only.

`tome-block` is ToMe's original in-ViT form: one bipartite round merging r tokens at the input of
a block; place it at every block (`tome_schedule`) for "r per block". The runner adds log(size) to
the attention logits (proportional attention).

"random" is not registered here: the runner's built-in `random` policy already keeps a uniform
subset; the selection method is reachable as ("select", ratio, {"method": "random"}).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from patchprune.policies.base import (Decision, Merge, Policy, PolicyContext, check_ratio, keep_count,
                                      register_policy)
from patchprune.policies.common import as_decision_mask, eligible_tokens
from patchprune.select.base import (MethodSpec, SelectInput, available_methods, check_attention, fp32_copy, method_spec,
                                    run_method)
from patchprune.select.tome import MergeState, merge_round


class SelectPolicy(Policy):
    """Keep `ratio` of the live tokens of every sample with the selection method `method`."""

    def __init__(self, method: str, ratio: float, **options: Any) -> None:
        super().__init__()
        check_ratio(ratio)
        self.spec: MethodSpec = method_spec(method)
        self.spec.check_options(options)
        self.method, self.ratio, self.options = method, float(ratio), options
        self.needs_attention = self.spec.needs_attention

    def extra_repr(self) -> str:
        return f"method={self.method!r}, ratio={self.ratio}"

    def forward(self, ctx: PolicyContext) -> Decision | Merge:
        eligible = eligible_tokens(ctx)
        attn = check_attention(ctx.attn, *ctx.tokens.shape[:2], self.method) if self.needs_attention else None
        if self.spec.merges:
            return self._merge(ctx, eligible, attn)
        counts = eligible.sum(1)
        k_each = keep_count(counts, self.ratio)
        k = int(k_each.max())
        valid = None if bool(eligible.all()) else eligible
        inp = SelectInput(tokens=ctx.tokens, grid=ctx.grid, index=ctx.index, attn=attn, valid=valid, size=ctx.size)
        order = run_method(self.spec, k, inp, self.options)  # [B, k] priority order
        # sample b keeps the first k_each[b] picks (a prefix of a greedy run is that run for a smaller K)
        n = ctx.tokens.shape[1]
        take = torch.arange(k, device=order.device)[None, :] < k_each[:, None]
        target = torch.where(take, order, torch.full_like(order, n))
        keep = torch.zeros(order.shape[0], n + 1, dtype=torch.bool, device=order.device).scatter_(1, target, True)
        return Decision(keep=as_decision_mask(ctx, keep[:, :n] & eligible))

    def _merge(self, ctx: PolicyContext, eligible: Tensor, attn: Tensor | None) -> Merge:
        if ctx.training:
            raise ValueError(f"{self.method} merges tokens: run the model in eval (gather) execution")
        if not bool(eligible.all()):
            raise ValueError(f"{self.method} merges tokens and needs equal token counts per sample (no padding)")
        k = keep_count(ctx.tokens.shape[1], self.ratio)
        inp = SelectInput(tokens=ctx.tokens, grid=ctx.grid, index=ctx.index, attn=attn, size=ctx.size)
        res = run_method(self.spec, k, inp, self.options)
        return Merge(tokens=res.tokens, index=res.index, size=res.size, assign=res.assign)


class ToMeBlockPolicy(Policy):
    """ToMe's in-ViT step: merge r tokens (at most half) by one bipartite soft-matching round.

    Give `r` (tokens per block, as in ToMe) or `ratio` (r = live - floor(ratio * live), capped at
    half). Matching metric: the block's input tokens; merged features are size-weighted means.
    """

    def __init__(self, ratio: float | None = None, r: int | None = None) -> None:
        super().__init__()
        if (ratio is None) == (r is None):
            raise ValueError("tome-block needs exactly one of ratio or r (tokens merged per block)")
        if ratio is not None:
            check_ratio(ratio)
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 0):
            raise ValueError(f"r must be a non-negative int, got {r!r}")
        self.ratio, self.r = ratio, r

    def extra_repr(self) -> str:
        return f"r={self.r}" if self.r is not None else f"ratio={self.ratio}"

    def forward(self, ctx: PolicyContext) -> Decision | Merge:
        eligible = eligible_tokens(ctx)
        if ctx.training:
            raise ValueError("tome-block merges tokens: run the model in eval (gather) execution")
        if not bool(eligible.all()):
            raise ValueError("tome-block needs equal token counts per sample (no padding)")
        n = ctx.tokens.shape[1]
        r = self.r if self.r is not None else n - keep_count(n, self.ratio)
        r = min(r, n // 2)
        if r == 0:
            return Decision(keep=eligible)
        with torch.inference_mode():
            st = merge_round(MergeState.start(fp32_copy(ctx.tokens), ctx.size), r)
        size = st.size.clone()
        return Merge(tokens=st.feats.clone().to(ctx.tokens.dtype), index=ctx.index.gather(1, st.anchor.clone()),
                     size=size, assign=st.assign.clone())


def tome_schedule(depth: int, r: int, start: int = 1) -> dict[int, Policy]:
    """ToMe as published: merge r tokens at the input of every block from `start` to depth - 1."""
    if not 1 <= start < depth:
        raise ValueError(f"start must be in [1, {depth - 1}], got {start}")
    return {i: ToMeBlockPolicy(r=r) for i in range(start, depth)}


def _factory(method: str):
    def make(ratio: float, **options: Any) -> SelectPolicy:
        return SelectPolicy(method, ratio, **options)

    make.__name__ = f"make_{method}_policy"
    make.__doc__ = f"Policy keeping `ratio` of the live tokens with the {method!r} selection method."
    return make


for _name in available_methods():
    if _name != "random":  # the runner's built-in policy of that name exists already
        register_policy(_name)(_factory(_name))


@register_policy("select")
def _make_select(ratio: float, method: str = "evtp", **options: Any) -> SelectPolicy:
    """Any selection method by name: ("select", ratio, {"method": "random", "seed": 1})."""
    return SelectPolicy(method, ratio, **options)


@register_policy("tome-block")
def _make_tome_block(ratio: float | None = None, r: int | None = None) -> ToMeBlockPolicy:
    return ToMeBlockPolicy(ratio=ratio, r=r)
