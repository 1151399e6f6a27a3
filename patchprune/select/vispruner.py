"""VisPruner: important tokens by attention, plus diverse tokens from the rest.

T_imp = int(0.5 K) most important tokens (CLS attention, or the mean attention each token receives
for CLS-free encoders). The other tokens, in importance order, are de-duplicated: A = even and
B = odd positions of the current list; the r = min(8, R - T_div) A tokens most cosine-similar to
some B token are dropped and the list becomes [surviving A by descending similarity; B] (the
authors' code; `order="raster"` keeps the survivors' order), until T_div = K - T_imp remain. The union is
returned in raster order. The similarity matrix of the rest is computed once and indexed per round.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from patchprune.select.attention import attention_scores, rank
from patchprune.select.base import SelectInput, l2_normalize, register_method, take_rows
from patchprune.select.tome import check_unpadded
from patchprune.tokens import mask_to_slots


def deduplicate(sim: Tensor, keep: int, step: int = 8, order: str = "authors", near: int = 16) -> Tensor:
    """Positions [B, keep] that survive repeated A/B de-duplication of a list whose pairwise
    similarities are sim [B, R, R].

    Each round: A = even, B = odd positions of the current list; the r = min(step, n - keep) A tokens
    most similar to some B token are dropped. order "authors" (VisPruner's code): the next list is
    [surviving A by descending similarity (argsort order); B]; "raster": the survivors keep their
    relative order. Odd n: A has one token more than B, nothing else changes (the published code
    assumes an even length there and fails; we take the natural even / odd split).

    Exact shortcut: every row's `near` largest similarities are found once (topk); an a's best
    similarity to the current B set is its first B column in that list, since every column outside
    it is no more similar. Only an a with no B column among them (rare) reads its whole row. The
    rounds run in NumPy on the host (one transfer of the near lists): a round is ~10 tiny steps,
    which cost microseconds there and tens of microseconds as dispatched torch ops at 2 threads
    (issue 10).
    """
    if order not in ("authors", "raster"):
        raise ValueError(f"vispruner order must be 'authors' or 'raster', got {order!r}")
    B, R, _ = sim.shape
    if R <= keep:
        return torch.arange(R, device=sim.device).expand(B, R)
    near_sim, near_col = sim.topk(min(near, R), dim=2)  # [B, R, T] each row's most similar columns
    ns, nc = near_sim.detach().cpu().numpy(), near_col.cpu().numpy()
    if order == "authors":  # the default order: each frame's rounds on 1-d arrays, frame by frame
        # (8 x 717 tokens: 54 ms against 76 ms for the batched fancy indexing below; the frames are
        # independent, so this loop is over frames, never over tokens)
        kept = [_rounds_one_frame(ns[i], nc[i], sim[i:i + 1], keep, step) for i in range(B)]
        return torch.from_numpy(np.stack(kept)).to(sim.device)
    cur = np.broadcast_to(np.arange(R), (B, R))
    ar = np.arange(B)[:, None]
    host_sim = None
    while cur.shape[1] > keep:  # tens of rounds of small steps: NumPy, not dispatched torch ops
        n = cur.shape[1]
        r = min(step, n - keep)
        a, b = cur[:, 0::2], cur[:, 1::2]
        in_b = np.zeros((B, R), dtype=bool)
        in_b[ar, b] = True
        hit = in_b[ar[:, :, None], nc[ar, a]]  # [B, nA, T]: which near columns are in B
        best = np.where(hit, ns[ar, a], -np.inf).max(-1)  # [B, nA]
        miss = ~hit.any(-1)
        if miss.any():  # no B column among an a's nearest: read its whole row
            if host_sim is None:
                host_sim = sim.detach().cpu().numpy()
            bi, ai = np.nonzero(miss)
            best[bi, ai] = np.where(in_b[bi], host_sim[bi, a[bi, ai]], -np.inf).max(-1)
        edge = np.argsort(-best, axis=1, kind="stable")  # descending, ties in list order
        if order == "authors":
            cur = np.concatenate([np.take_along_axis(a, edge[:, r:], 1), b], axis=1)
            continue
        alive = np.ones((B, n), dtype=bool)
        alive_a = alive[:, 0::2]  # a view: writes reach `alive`
        alive_a[ar, edge[:, :r]] = False
        cur = cur[alive].reshape(B, -1)
    return torch.from_numpy(np.ascontiguousarray(cur)).to(sim.device)


def _rounds_one_frame(ns: np.ndarray, nc: np.ndarray, sim: Tensor, keep: int, step: int) -> np.ndarray:
    """`deduplicate`'s rounds (authors' order) for one frame: ns, nc [R, T] near similarities (descending)
    and columns, sim [1, R, R] the frame's similarities. An a's best similarity to B is its first near
    column in B (the lists are sorted)."""
    R = ns.shape[0]
    nc = nc.astype(np.int32)  # half the bytes per gathered near column
    cur = np.arange(R)
    in_b = np.zeros(R, dtype=bool)
    rows = np.arange((R + 1) // 2)
    host_sim = None
    while cur.shape[0] > keep:
        r = min(step, cur.shape[0] - keep)
        a, b = cur[0::2], cur[1::2]
        in_b[:] = False
        in_b[b] = True
        hit = in_b[nc[a]]  # [nA, T]: which near columns are in B
        first = hit.argmax(1)
        best = ns[a, first]
        miss = ~hit[rows[: a.shape[0]], first]
        if miss.any():  # no B column among an a's nearest: read its whole row
            if host_sim is None:
                host_sim = sim[0].detach().cpu().numpy()
            ai = np.nonzero(miss)[0]
            best[ai] = np.where(in_b, host_sim[a[ai]], -np.inf).max(1)
        edge = np.argsort(-best, kind="stable")
        cur = np.concatenate([a[edge[r:]], b])
    return cur


def deduplicate_reference(sim: Tensor, keep: int, step: int = 8, order: str = "authors") -> Tensor:
    """`deduplicate` computed the plain way (every a's row gathered each round); tests compare them."""
    B, R, _ = sim.shape
    cur = torch.arange(R, device=sim.device).expand(B, R)
    while cur.shape[1] > keep:
        n = cur.shape[1]
        r = min(step, n - keep)
        a, b = cur[:, 0::2], cur[:, 1::2]
        rows = sim.gather(1, a[..., None].expand(-1, -1, R))  # [B, nA, R]
        best = rows.gather(2, b[:, None, :].expand(-1, a.shape[1], -1)).amax(-1)  # [B, nA]
        edge = best.argsort(dim=1, descending=True, stable=True)
        if order == "authors":
            cur = torch.cat([a.gather(1, edge[:, r:]), b], dim=1)
            continue
        alive = torch.ones(B, n, dtype=torch.bool, device=sim.device)
        alive[:, 0::2].scatter_(1, edge[:, :r], False)
        cur = cur.gather(1, mask_to_slots(alive)[0])
    return cur


@register_method("vispruner", needs_attention=True)
def vispruner(x: Tensor, k: int, inp: SelectInput, *, score: str = "auto", important: float = 0.5,
              step: int = 8, order: str = "authors") -> Tensor:
    """Kept slots [B, k]: important ones (most attended first), then the diverse ones.

    score: "auto" | "cls" | "mean"; important: share of K for important tokens (int(share * K));
    step: A tokens dropped per de-duplication round (8 in the paper); order: the list between
    de-duplication rounds, "authors" or "raster" (see `deduplicate`)."""
    check_unpadded(inp, "vispruner")
    if not 0.0 <= important <= 1.0 or step < 1:
        raise ValueError("important must be in [0, 1] and step >= 1")
    ranked = rank(attention_scores(inp.attn, x.shape[1], score))
    t_imp = int(important * k)
    imp, rest = ranked[:, :t_imp], ranked[:, t_imp:]
    if k == t_imp:
        return imp
    m = l2_normalize(take_rows(x, rest))
    keep = deduplicate(torch.bmm(m, m.transpose(1, 2)), k - t_imp, step, order)
    return torch.cat([imp, rest.gather(1, keep)], dim=1)
