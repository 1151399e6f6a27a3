"""Every selection method as a policy of the sparse ViT runner (training-free pruning inside a ViT).

`make_policy("evtp", 0.5)` (or the schedule entry ("evtp", 0.5, {options})) keeps
`keep_count(live, 0.5)` (the library's one rule: round, halves up) tokens per sample at its block
position, chosen by `patchprune.select` on the block's input tokens and their grid positions. Attention-based methods ask the runner for that block's attention.
Merging methods (tome, visionzip) return a `Merge` and run in gather (eval) execution only.

`tome-block` is ToMe's original in-ViT form: one bipartite round merging r tokens between a block's
attention and MLP on its keys (CLS protected); place it at every block (`tome_schedule`) for "r per
block". The runner adds log(size) to the attention logits (proportional attention).

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
from patchprune.select.base import MethodSpec, SelectInput, available_methods, check_attention, method_spec, run_method
from patchprune.select.tome import MERGE_ORDERS, merge_patches


class SelectPolicy(Policy):
    """Keep `ratio` of the live tokens of every sample with the selection method `method`."""

    def __init__(self, method: str, ratio: float, **options: Any) -> None:
        super().__init__()
        check_ratio(ratio)
        self.spec: MethodSpec = method_spec(method)
        self.spec.check_options(options)
        self.method, self.ratio, self.options = method, float(ratio), options
        self.needs_attention = self.spec.needs_attention
        # methods matching on a metric (tome, visionzip) get the block's keys averaged over heads, as
        # the authors, unless the caller gave one
        self.needs_keys = "metric" in self.spec.options and "metric" not in options

    def attention_queries(self, num_prefix: int) -> int | None:
        """1 when the method scores by CLS attention (score "cls", or "auto" with a prefix token): the
        runner then computes only the CLS query row of the block's attention."""
        score = self.options.get("score", "auto")
        return 1 if num_prefix > 0 and score in ("auto", "cls") else None

    def method_options(self, ctx: PolicyContext) -> dict:
        """The method's options, with the block's keys averaged over heads as `metric` when asked for."""
        if not self.needs_keys or ctx.keys is None:
            return self.options
        n = ctx.tokens.shape[1]
        return {**self.options, "metric": ctx.keys.mean(1)[:, ctx.keys.shape[2] - n:].float()}

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
        order = run_method(self.spec, k, inp, self.method_options(ctx))  # [B, k] priority order
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
        res = run_method(self.spec, k, inp, self.method_options(ctx))
        return Merge(tokens=res.tokens, index=res.index, size=res.size, assign=res.assign)


class ToMeBlockPolicy(Policy):
    """ToMe's in-ViT step, as published: between the block's attention and its MLP, merge r tokens
    by one bipartite soft-matching round on the block's attention keys averaged over heads.

    Give `r` (tokens per block, as in ToMe) or `ratio` (r = live - keep_count(live, ratio)); r is capped
    at half of the non-protected tokens. `include_prefix` (default, the authors'): the prefix tokens
    (CLS) take part in the A / B split and are protected (never merged, receive nothing).
    `metric`: "keys" (default) or "tokens" (the post-attention tokens). `order`: "authors" or
    "raster" (see `patchprune.select.tome.merge_round`). Merged features are size-weighted means;
    the runner adds log(size) to the attention logits of later blocks (proportional attention).
    """

    acts_after_attention = True

    def __init__(self, ratio: float | None = None, r: int | None = None, metric: str = "keys",
                 order: str = "authors", include_prefix: bool = True) -> None:
        super().__init__()
        if (ratio is None) == (r is None):
            raise ValueError("tome-block needs exactly one of ratio or r (tokens merged per block)")
        if ratio is not None:
            check_ratio(ratio)
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 0):
            raise ValueError(f"r must be a non-negative int, got {r!r}")
        if metric not in ("keys", "tokens"):
            raise ValueError(f"tome-block metric must be 'keys' or 'tokens', got {metric!r}")
        if order not in MERGE_ORDERS:
            raise ValueError(f"tome-block order must be one of {MERGE_ORDERS}, got {order!r}")
        self.ratio, self.r, self.metric, self.order = ratio, r, metric, order
        self.include_prefix = bool(include_prefix)
        self.needs_keys = metric == "keys"

    def extra_repr(self) -> str:
        return (f"r={self.r}" if self.r is not None else f"ratio={self.ratio}") + f", metric={self.metric!r}"

    def forward(self, ctx: PolicyContext) -> Decision | Merge:
        eligible = eligible_tokens(ctx)
        if ctx.training:
            raise ValueError("tome-block merges tokens: run the model in eval (gather) execution")
        if not bool(eligible.all()):
            raise ValueError("tome-block needs equal token counts per sample (no padding)")
        B, n, _ = ctx.tokens.shape
        P = ctx.prefix.shape[1] if self.include_prefix else 0
        r = self.r if self.r is not None else n - keep_count(n, self.ratio)
        r = min(r, n // 2)  # (P + n - P) // 2: ToMe's cap with P protected tokens
        if r == 0:
            return Decision(keep=eligible)
        with torch.no_grad():
            x = ctx.tokens.float()
            size = ctx.size.float() if ctx.size is not None else x.new_ones(B, n)
            if self.metric == "keys":
                metric = ctx.keys.mean(1).float()[:, ctx.keys.shape[2] - P - n:]
            else:
                metric = torch.cat([ctx.prefix[:, ctx.prefix.shape[1] - P:].float(), x], dim=1)
            pm = merge_patches(x, size, metric, r, protected=P, order=self.order)
        return Merge(tokens=pm.tokens.to(ctx.tokens.dtype), index=ctx.index.gather(1, pm.anchor), size=pm.size,
                     assign=pm.assign)


def tome_schedule(depth: int, r: int, start: int = 0, **options: Any) -> dict[int, Policy]:
    """ToMe as published: merge r tokens in every block from `start` (default 0: all `depth` blocks)."""
    if not 0 <= start < depth:
        raise ValueError(f"start must be in [0, {depth - 1}], got {start}")
    return {i: ToMeBlockPolicy(r=r, **options) for i in range(start, depth)}


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
def _make_tome_block(ratio: float | None = None, r: int | None = None, metric: str = "keys",
                     order: str = "authors", include_prefix: bool = True) -> ToMeBlockPolicy:
    return ToMeBlockPolicy(ratio=ratio, r=r, metric=metric, order=order, include_prefix=include_prefix)
