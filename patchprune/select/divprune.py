"""DivPrune: max-min diversity with cosine distance 1 - cos.

First pick: the token whose nearest neighbour is farthest (the most isolated one). Then the greedy
argmax of the minimum distance to the kept set. Since 1 - cos(a, b) = ||a^ - b^||^2 / 2 for unit
vectors, this is farthest-first traversal on L2-normalised features after the first pick, so it
shares the exact O(N K) engine of k-center instead of the public code's O(N K^2) loop.

The first pick needs every token's nearest neighbour. Rather than the full N x N distance matrix, it
is found exactly with bounds: distances to grid neighbours bound each token's nearest-neighbour
distance from above; tokens are then evaluated in full (one GEMM column each), most isolated-looking
first, until no unevaluated token's bound can reach the best exact value. Where the engine runs in
matrix mode (k >= half the tokens, on the CPU) the N x N matrix is computed anyway: the first pick is
read from it and the same matrix drives the traversal.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from patchprune.select.base import SelectInput, register_method, resolve_start, take_rows
from patchprune.select.evtp import joint_space
from patchprune.select.farthest import DEFAULT_POOL, farthest_first, pairwise_sq, sq_distances, use_matrix

INF = float("inf")


def neighbour_bound(z: Tensor, sq: Tensor, valid: Tensor | None, width: int | None) -> Tensor:
    """[B, N] upper bound on each token's squared nearest-neighbour distance: the distance to the
    tokens next to it in the list (and one grid row away when `width` is given)."""
    B, N, _ = z.shape
    ub = z.new_full((B, N), INF)
    for off in (1, width) if width and 1 < width < N else (1,):
        d2 = (sq[:, :-off] + sq[:, off:] - 2 * torch.linalg.vecdot(z[:, :-off], z[:, off:])).clamp_min(0)
        if valid is not None:
            d2 = d2.masked_fill(~(valid[:, :-off] & valid[:, off:]), INF)
        ub[:, :-off] = torch.minimum(ub[:, :-off], d2)
        ub[:, off:] = torch.minimum(ub[:, off:], d2)
    return ub


def most_isolated(z: Tensor, sq: Tensor, valid: Tensor | None = None, width: int | None = None,
                  block: int = 32) -> Tensor:
    """[B] slot of the token whose nearest neighbour is farthest (first one on ties); z [B, N, E].

    Exact: a token is skipped only when an upper bound on its nearest-neighbour distance is already
    below the best exact value found, so it cannot be the answer.
    """
    B, N, _ = z.shape
    if N == 1:
        return torch.zeros(B, dtype=torch.long, device=z.device)
    ub = neighbour_bound(z, sq, valid, width)
    exact = z.new_full((B, N), -INF)  # exact squared NN distance of evaluated tokens
    todo = torch.ones(B, N, dtype=torch.bool, device=z.device) if valid is None else valid.clone()
    if valid is not None:
        ub.masked_fill_(~valid, -INF)
    m = min(block, N)
    while True:
        cols = ub.masked_fill(~todo, -INF).topk(m, dim=1).indices  # padding columns: recomputed, harmless
        d2 = sq_distances(take_rows(z, cols), sq.gather(1, cols), z, sq)  # [B, m, N]
        d2.scatter_(2, cols[:, :, None], INF)  # a token is not its own neighbour
        if valid is not None:
            d2.masked_fill_(~valid[:, None, :], INF)
        exact.scatter_(1, cols, d2.amin(2))
        todo.scatter_(1, cols, False)
        torch.minimum(ub, d2.amin(1), out=ub)  # distances to the evaluated tokens tighten every bound
        best = exact.amax(1, keepdim=True)
        todo &= ub >= best
        left = int(todo.sum(1).max())
        if left == 0:
            return (exact if valid is None else exact.masked_fill(~valid, -INF)).argmax(1)
        m = min(N, max(block, left))


def most_isolated_in(dist: Tensor, valid: Tensor | None = None) -> Tensor:
    """[B] slot of the most isolated token read from the full squared-distance matrix dist [B, N, N]
    (first one on ties), as `most_isolated` finds it with bounds."""
    B, N, _ = dist.shape
    if N == 1:
        return torch.zeros(B, dtype=torch.long, device=dist.device)
    d = dist.clone()
    d.diagonal(dim1=1, dim2=2).fill_(INF)  # a token is not its own neighbour
    if valid is not None:
        d.masked_fill_(~valid[:, None, :], INF)
    nearest = d.amin(2)
    return (nearest if valid is None else nearest.masked_fill(~valid, -INF)).argmax(1)


@register_method("divprune")
def divprune(x: Tensor, k: int, inp: SelectInput, *, init: Any = "isolated", seed: int = 0, pool: int = DEFAULT_POOL,
             strategy: str = "auto") -> Tensor:
    """Kept slots [B, k] in pick order.

    init: "isolated" (DivPrune's first pick, default), or any k-center start: "mean", "first",
    "random" (with seed), a slot, a [B] tensor. pool, strategy: the engine's pool size and "auto" |
    "pool" | "matrix" (`farthest_first`; speed only).
    """
    js = joint_space(x, inp, normalize="l2", spatial=False, reuse=True)
    if not (isinstance(init, str) and init == "isolated"):
        start = resolve_start(init, js.sq, inp.valid, seed)
    elif use_matrix(k, tuple(js.sq.shape), js.z.device, strategy):  # the engine's matrix gives the first pick too
        dist = pairwise_sq(js.z, js.sq)
        return farthest_first(js.z, k, most_isolated_in(dist, inp.valid), valid=inp.valid, dist=dist)
    else:
        full_grid = inp.index.shape[1] == inp.grid[0] * inp.grid[1]
        start = most_isolated(js.z, js.sq, inp.valid, inp.grid[1] if full_grid else None)
    return farthest_first(js.z, k, start, valid=inp.valid, sq=js.sq, pool=pool, strategy=strategy)
