"""ToMe, one-shot to a budget K: repeated bipartite soft matching with size-weighted merges.

While more than K tokens remain: r = min(n - K, floor(n / 2)); split the tokens into A (even
positions) and B (odd positions); every a scores its most cosine-similar b; the r best-scoring a's
merge into their b's by size-weighted average (x <- sum s_i x_i / sum s_i, s <- sum s_i). Between
rounds the list is the authors' [unmerged A (by descending score); B] (`order="raster"` keeps the
survivors' relative order instead), which decides the next round's A / B split. The result lists
the groups in ascending order of their anchors (the b token that absorbed the others), the
library's result order. Sizes are returned for proportional attention.
The in-ViT form (r tokens per block) is the `tome-block` policy, built on `merge_round`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from patchprune.select.base import SelectInput, SelectResult, l2_normalize, register_method, take_rows
from patchprune.tokens import mask_to_slots


@dataclass
class MergeState:
    """Groups of merged tokens during ToMe's rounds (one entry per current group)."""

    feats: Tensor  # [B, n, C] size-weighted mean features of the current groups (fp32)
    size: Tensor  # [B, n] patches per group
    anchor: Tensor  # [B, n] input slot of each group's anchor
    assign: Tensor  # [B, N] current group of every input token
    metric: Tensor | None = None  # [B, n, Cm] merged matching metric (None: match on feats)

    @classmethod
    def start(cls, x: Tensor, size: Tensor | None = None, metric: Tensor | None = None) -> "MergeState":
        """Every token its own group (sizes `size` or ones); `metric` [B, N, D] scores the matching."""
        B, N, _ = x.shape
        slots = torch.arange(N, device=x.device).expand(B, N)
        s = torch.ones(B, N, device=x.device) if size is None else size.float()
        return cls(feats=x, size=s, anchor=slots, assign=slots, metric=None if metric is None else metric.float())


MERGE_ORDERS = ("authors", "raster")


def merge_round(st: MergeState, r: int, order: str = "authors", protected: int = 0,
                last: bool = False) -> MergeState:
    """One bipartite soft-matching round that removes r tokens (0 <= r <= n // 2).

    order: the list the next round splits into A / B. "authors" (ToMe's code): [unmerged A; B], the
    unmerged a's by descending match score, or ascending position when tokens are protected (ToMe
    sorts them to keep the CLS token first). "raster": the survivors in their previous relative order.
    protected: the first `protected` tokens (e.g. CLS) never merge: as a's their scores are -inf, as
    b's they receive nothing. last: no round follows (ToMe per block), so the merged metric is not
    built (the result's metric is None).
    """
    B, n, C = st.feats.shape
    if not 0 <= r <= n // 2:
        raise ValueError(f"a bipartite round merges at most n // 2 = {n // 2} of {n} tokens, asked {r}")
    if order not in MERGE_ORDERS:
        raise ValueError(f"order must be one of {MERGE_ORDERS}, got {order!r}")
    if r == 0:
        return st
    m = l2_normalize(st.feats if st.metric is None else st.metric)
    scores = torch.bmm(m[:, 0::2], m[:, 1::2].transpose(1, 2))  # [B, na, nb] cosine
    if protected:
        scores[:, : (protected + 1) // 2] = float("-inf")  # protected a's (even positions) never merge
        scores[:, :, : protected // 2] = float("-inf")  # protected b's (odd positions) receive nothing
    best, dst = scores.max(-1)  # best b of every a
    edge = best.argsort(dim=1, descending=True, stable=True)
    src = edge[:, :r]  # a-indices that merge
    dst = dst.gather(1, src)  # their b-indices

    def merged(values: Tensor, weights: Tensor) -> Tensor:
        """Size-weighted mean of values [B, n, D] after the a's in src join their b's."""
        wv = values * weights[..., None]
        wb = wv[:, 1::2].clone()
        wb.scatter_add_(1, dst[..., None].expand(-1, -1, wv.shape[2]), take_rows(wv[:, 0::2], src))
        return wb

    sb = st.size[:, 1::2].scatter_add(1, dst, st.size[:, 0::2].gather(1, src))
    feats = st.feats.clone()
    feats[:, 1::2] = merged(st.feats, st.size) / sb[..., None]
    metric = None
    if st.metric is not None and not last:
        metric = st.metric.clone()
        metric[:, 1::2] = merged(st.metric, st.size) / sb[..., None]
    size = st.size.clone()
    size[:, 1::2] = sb

    if order == "authors":
        unm = edge[:, r:]
        if protected:
            unm = unm.sort(dim=1).values
        b_pos = 2 * torch.arange(n // 2, device=feats.device) + 1
        slots = torch.cat([2 * unm, b_pos.expand(B, -1)], dim=1)  # old positions, in the new order
    else:
        keep = torch.ones(B, n, dtype=torch.bool, device=feats.device)
        keep[:, 0::2].scatter_(1, src, False)
        slots, _ = mask_to_slots(keep)  # equal counts: no padding
    new_of_old = torch.full((B, n), -1, dtype=torch.long, device=feats.device)
    new_of_old.scatter_(1, slots, torch.arange(slots.shape[1], device=feats.device).expand_as(slots))
    # a merged a goes where its b went (b sits at position 2 * dst + 1)
    new_of_old.scatter_(1, 2 * src, new_of_old.gather(1, 2 * dst + 1))
    return MergeState(
        feats=take_rows(feats, slots), size=size.gather(1, slots), anchor=st.anchor.gather(1, slots),
        assign=new_of_old.gather(1, st.assign), metric=None if metric is None else take_rows(metric, slots),
    )


def merge_to(st: MergeState, k: int, order: str = "authors") -> MergeState:
    """Rounds of bipartite matching until k groups remain."""
    while st.feats.shape[1] > k:
        n = st.feats.shape[1]
        st = merge_round(st, min(n - k, n // 2), order)
    return st


def by_anchor(st: MergeState) -> MergeState:
    """The same groups listed in ascending anchor order (the library's result order)."""
    perm = st.anchor.argsort(dim=1, stable=True)
    rank = torch.empty_like(perm).scatter_(1, perm, torch.arange(perm.shape[1], device=perm.device).expand_as(perm))
    return MergeState(feats=take_rows(st.feats, perm), size=st.size.gather(1, perm), anchor=st.anchor.gather(1, perm),
                      assign=rank.gather(1, st.assign), metric=None if st.metric is None else take_rows(st.metric, perm))


def state_result(st: MergeState, inp: SelectInput) -> SelectResult:
    """The merged groups as a SelectResult (features in the input dtype, anchors as positions, in
    ascending anchor order whatever order the rounds used)."""
    st = by_anchor(st)
    return SelectResult(tokens=st.feats.to(inp.tokens.dtype), index=inp.index.gather(1, st.anchor), size=st.size,
                        slots=st.anchor, assign=st.assign)


def check_unpadded(inp: SelectInput, method: str) -> None:
    """ValueError when some frame has padding: merging needs the same token count in every frame."""
    if inp.valid is not None and not bool(inp.valid.all()):
        raise ValueError(f"{method} merges tokens and needs the same token count in every frame (no padding)")


@register_method("tome", merges=True)
def tome(x: Tensor, k: int, inp: SelectInput, *, metric: Tensor | None = None, order: str = "authors") -> SelectResult:
    """Merge down to k tokens per frame. metric: optional [B, N, Cm] matching features (e.g. attention
    keys averaged over heads); default = the tokens themselves. Starts from `size` when given.
    order: "authors" ([unmerged A; B] between rounds, as ToMe's code) or "raster" (see `merge_round`)."""
    check_unpadded(inp, "tome")
    if metric is not None and metric.shape[:2] != x.shape[:2]:
        raise ValueError(f"metric must be [B, N, Cm] with [B, N] = {tuple(x.shape[:2])}, got {tuple(metric.shape)}")
    return state_result(merge_to(MergeState.start(x, inp.size, metric), k, order), inp)
