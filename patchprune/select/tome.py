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
from patchprune.tokens import add_rows, mask_to_slots, row_max


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


@dataclass
class Matching:
    """One bipartite soft-matching round on a list: a = even, b = odd positions."""

    src: Tensor  # [B, r] a-indices that merge, best match score first
    dst: Tensor  # [B, r] the b-index each of them joins
    unmerged: Tensor  # [B, na - r] the other a-indices: by descending score, ascending when tokens are protected


def bipartite_match(metric: Tensor, r: int, protected: int = 0) -> Matching:
    """ToMe's matching on metric [B, n, D]: every a scores its most cosine-similar b, the r best a's
    merge. The first `protected` list positions never merge (as a's) and receive nothing (as b's);
    then the unmerged a's are listed in ascending position (ToMe keeps the CLS token first)."""
    m = l2_normalize(metric)
    scores = torch.bmm(m[:, 0::2], m[:, 1::2].transpose(1, 2))  # [B, na, nb] cosine
    if protected:
        scores[:, : (protected + 1) // 2] = float("-inf")  # protected a's (even positions) never merge
        scores[:, :, : protected // 2] = float("-inf")  # protected b's (odd positions) receive nothing
    best, dst = row_max(scores)  # best b of every a
    edge = best.argsort(dim=1, descending=True, stable=True)
    unmerged = edge[:, r:].sort(dim=1).values if protected else edge[:, r:]
    return Matching(src=edge[:, :r], dst=dst.gather(1, edge[:, :r]), unmerged=unmerged)


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
    match = bipartite_match(st.feats if st.metric is None else st.metric, r, protected)
    src, dst = match.src, match.dst

    def merged(values: Tensor, weights: Tensor) -> Tensor:
        """Size-weighted mean of values [B, n, D] after the a's in src join their b's."""
        return add_rows(values[:, 1::2] * weights[:, 1::2, None], dst,
                        take_rows(values, 2 * src) * weights.gather(1, 2 * src)[..., None])

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
        unm = match.unmerged
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


@dataclass
class PatchMerge:
    """The patch groups after one in-ViT ToMe round (the runner keeps the prefix tokens itself)."""

    tokens: Tensor  # [B, n - r, C] size-weighted mean features of the groups
    size: Tensor  # [B, n - r] patches per group
    anchor: Tensor  # [B, n - r] input patch slot of each group's anchor (its b, or the unmerged a itself)
    assign: Tensor  # [B, n] group of every input patch slot


def merge_patches(x: Tensor, size: Tensor, metric: Tensor, r: int, protected: int = 0,
                  order: str = "authors") -> PatchMerge:
    """ToMe's in-ViT round on the list [P protected prefix tokens; n patch tokens], returning only
    the patch groups: the groups, sizes and means of `merge_round(..., protected=P, last=True)` with
    the prefix groups dropped, in the same order, without building the whole list's state (each
    feature row is read once; the merge touches the b rows and the r merging a's only).

    x [B, n, C] patch features (fp32), size [B, n], metric [B, P + n, D] matching metric of the
    whole list. order: "authors" ([unmerged a's; b's]) or "raster" (ascending list position)."""
    B, n, C = x.shape
    P = protected
    if metric.shape[:2] != (B, P + n):
        raise ValueError(f"metric must be [B, P + n, D] = [{B}, {P + n}, D], got {tuple(metric.shape)}")
    if not 0 <= r <= n // 2:
        raise ValueError(f"a bipartite round merges at most n // 2 = {n // 2} of {n} patch tokens, asked {r}")
    if order not in MERGE_ORDERS:
        raise ValueError(f"order must be one of {MERGE_ORDERS}, got {order!r}")
    if r == 0:  # nothing merges: every patch its own group, as it was
        slots = torch.arange(n, device=x.device).expand(B, n)
        return PatchMerge(tokens=x, size=size, anchor=slots, assign=slots)
    match = bipartite_match(metric, r, P)
    pa, pb = (P + 1) // 2, P // 2  # protected a's / b's (list positions < P)
    first_a, first_b = 2 * pa - P, 2 * pb + 1 - P  # patch slot of the first unprotected a / b
    # protected a's never merge and come first among the (ascending) unmerged ones
    src, dst, unm = match.src - pa, match.dst - pb, match.unmerged[:, pa:] - pa
    size_a, size_b = size[:, first_a::2], size[:, first_b::2]
    src_slot, unm_slot = first_a + 2 * src, first_a + 2 * unm  # patch slots of the merging / staying a's
    weighted_b = add_rows(x[:, first_b::2] * size_b[..., None], dst, take_rows(x, src_slot) * size.gather(1, src_slot)[..., None])
    merged_size = size_b.scatter_add(1, dst, size.gather(1, src_slot))
    nu, nb = unm.shape[1], size_b.shape[1]
    ar = torch.arange(max(nu, nb), device=x.device)
    tokens = torch.cat([take_rows(x, unm_slot), weighted_b / merged_size[..., None]], dim=1)
    sizes = torch.cat([size.gather(1, unm_slot), merged_size], dim=1)
    anchor = torch.cat([unm_slot, (first_b + 2 * ar[:nb]).expand(B, -1)], dim=1)
    group_a = torch.empty_like(size_a, dtype=torch.long)
    group_a.scatter_(1, unm, ar[:nu].expand(B, -1))
    group_a.scatter_(1, src, nu + dst)  # a merged a joins its b's group
    assign = torch.empty_like(size, dtype=torch.long)
    assign[:, first_a::2] = group_a
    assign[:, first_b::2] = nu + ar[:nb]
    if order == "raster":  # the survivors in ascending list position
        perm = anchor.argsort(dim=1)
        rank = torch.empty_like(perm).scatter_(1, perm, torch.arange(perm.shape[1], device=x.device).expand_as(perm))
        tokens, sizes, anchor, assign = take_rows(tokens, perm), sizes.gather(1, perm), anchor.gather(1, perm), rank.gather(1, assign)
    return PatchMerge(tokens=tokens, size=sizes, anchor=anchor, assign=assign)


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
