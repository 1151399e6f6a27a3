"""Exact greedy farthest-first traversal (Gonzalez's 2-approximation of k-center), batched over frames.

The textbook loop keeps delta_i = distance of token i to its nearest selected token and, at every
step, picks argmax delta and lowers delta with one distance column. On a CPU that column is a
matrix-vector product bound by memory bandwidth (N x E floats per frame and step), so this engine
returns the *same picks* with far less work:

- Lazy deltas. delta_i is an upper bound that is exact for the centers applied to token i so far
  (`applied`). Before a round, only the tokens with the largest bounds are brought up to date (one
  GEMM against the centers they miss), until the P + 1 largest exact values provably beat every
  stale bound; tokens deep in the ranking are never touched again once they are well covered.
- Pool rounds. The P tokens with the largest (exact) delta form a pool and tau is the (P+1)-th
  value: while the pool's best delta exceeds tau it is the global argmax (tokens outside the pool
  only ever decrease below tau), so several picks are certified from P x P distances alone. The
  pool is kept in raster order, so ties resolve to the lowest slot exactly as `torch.argmax` would.
- The first few picks (when pools certify little) are plain steps: one full distance column each.

Distances are squared Euclidean in fp32, |x|^2 + |y|^2 - 2 x.y (callers centre the points first to
keep the rounding small). Invalid (padding) tokens have delta = -inf and are never picked.
"""
from __future__ import annotations

import torch
from torch import Tensor

from patchprune.select.base import take_rows

NEG_INF = float("-inf")
LAZY_PICKS = 2  # picks of a round served by one pool row each before the full pool matrix is built
PLAIN_STEPS = 16  # picks made one full distance column at a time before pool rounds start
CHUNK = 8  # pool picks made between two certification checks (uncertified ones are discarded)


def squared_norms(z: Tensor) -> Tensor:
    return torch.linalg.vector_norm(z, dim=-1).square_()


def farthest_first(z: Tensor, k: int, start: Tensor, valid: Tensor | None = None, sq: Tensor | None = None,
                   pool: int = 64) -> Tensor:
    """Slots [B, k] in pick order: start, then repeatedly the token farthest from the picked set.

    z [B, N, E] fp32 points; start [B] first pick; valid [B, N] bool (False = never picked);
    sq [B, N] precomputed squared norms of z (optional); pool: size P of the pool (speed only).
    Requires k <= number of valid tokens for distinct picks.
    """
    B, N, _ = z.shape
    if not 1 <= k <= N:
        raise ValueError(f"k must be in [1, {N}], got {k}")
    return _Greedy(z.contiguous(), k, start, valid, sq, pool).run()


class _Greedy:
    """State of one batched farthest-first run (see the module docstring)."""

    def __init__(self, z: Tensor, k: int, start: Tensor, valid: Tensor | None, sq: Tensor | None,
                 pool: int) -> None:
        B, N, E = z.shape
        dev = z.device
        self.z, self.k, self.N = z, k, N
        self.sq = squared_norms(z) if sq is None else sq
        self.sel = torch.empty(B, k, dtype=torch.long, device=dev)
        self.delta2 = torch.full((B, N), float("inf"), device=dev)  # upper bound on the squared delta
        if valid is not None:
            self.delta2.masked_fill_(~valid, NEG_INF)
        self.applied = torch.zeros(B, N, dtype=torch.long, device=dev)  # centers folded into delta2
        self.chosen = torch.zeros(B, N, dtype=torch.bool, device=dev)
        self.centers = z.new_empty(B, k, E)
        self.centers_sq = z.new_empty(B, k)
        self.P = max(1, min(int(pool), N - 1))
        self.row_base = torch.arange(B, device=dev) * self.P
        self.refresh_size = 2 * self.P  # tokens brought up to date before a round (grows when needed)
        self.t = 0  # centers picked
        self._add(start[:, None])

    def run(self) -> Tensor:
        self._update(None)
        # With few centers a pool rarely certifies more than one pick: plain exact steps.
        self._plain_steps(min(self.k, PLAIN_STEPS))
        while self.t < self.k:
            pool = self._refresh_top()
            if pool is None:
                self._update(None)
                pool = self._pool_from(self._score())
            if not self._round(*pool):  # ties at the pool boundary: every delta exact, plain argmax
                self._update(None)
                self._add(self._score().argmax(1, keepdim=True))
        return self.sel

    def _plain_steps(self, until: int) -> None:
        """Textbook steps (every delta exact): argmax, then one full distance column per pick."""
        if self.t >= until:
            return
        z, sq = self.z, self.sq
        B, N, E = z.shape
        zf, sqf, zt = z.view(B * N, E), sq.view(B * N), z.transpose(1, 2)
        offs = torch.arange(B, device=z.device) * N
        score = self._score()
        picks = []
        for _ in range(until - self.t):
            j = score.argmax(1)
            g = j + offs
            d2 = torch.baddbmm((sqf.index_select(0, g)[:, None] + sq)[:, None, :], zf.index_select(0, g)[:, None, :],
                               zt, alpha=-2)
            torch.minimum(score, d2.squeeze(1), out=score)
            score.scatter_(1, j[:, None], NEG_INF)
            picks.append(j)
        self.delta2.copy_(score)  # picked tokens hold -inf: they are masked as chosen anyway
        self._add(torch.stack(picks, 1))
        self.applied.fill_(self.t)

    def _score(self) -> Tensor:
        return self.delta2.masked_fill(self.chosen, NEG_INF)

    def _add(self, picks: Tensor, points: Tensor | None = None) -> None:
        """Record picks [B, p] (their points [B, p, E] when at hand) as the next centers."""
        t, p = self.t, picks.shape[1]
        self.sel[:, t:t + p] = picks
        self.centers[:, t:t + p] = take_rows(self.z, picks) if points is None else points
        self.centers_sq[:, t:t + p] = self.sq.gather(1, picks)
        self.chosen.scatter_(1, picks, True)
        self.t = t + p

    def _update(self, rows: Tensor | None) -> Tensor | None:
        """Make delta exact for tokens `rows` [B, M] (None = all) with the centers they miss.

        Centers applied twice change nothing, so one GEMM from the least up-to-date row on would
        do; when most rows are fresher than that, the recent centers go to every row and the older
        ones only to the stale rows (two smaller GEMMs). Returns the gathered points of `rows`."""
        t = self.t
        applied = self.applied if rows is None else self.applied.gather(1, rows)
        first = int(applied.min())
        if first >= t:
            return None
        if rows is None:
            zr, sqr = self.z, self.sq
        else:
            zr, sqr = take_rows(self.z, rows), self.sq.gather(1, rows)
        split = int(applied.max())
        stale = applied < split
        n_stale = int(stale.sum(1).max())
        M = applied.shape[1]
        if split >= t or M * (t - split) + n_stale * (split - first) > 0.7 * M * (t - first):
            split = first  # not worth a second GEMM
        best = self._distances(zr, sqr, split, t)
        if split > first:  # rows that also miss centers first..split-1 (padding rows are harmless)
            pos = stale.to(torch.float32).topk(n_stale, dim=1, sorted=False).indices
            old = self._distances(take_rows(zr, pos), sqr.gather(1, pos), first, split)
            best.scatter_(1, pos, torch.minimum(best.gather(1, pos), old))
        if rows is None:
            torch.minimum(self.delta2, best, out=self.delta2)
            self.applied.fill_(t)
            return None
        self.delta2.scatter_(1, rows, torch.minimum(self.delta2.gather(1, rows), best))
        self.applied.scatter_(1, rows, t)
        return zr

    def _distances(self, zr: Tensor, sqr: Tensor, first: int, last: int) -> Tensor:
        """[B, M] squared distance of each point zr [B, M, E] to its nearest center first..last-1."""
        cp, csq = self.centers[:, first:last], self.centers_sq[:, first:last]
        return torch.baddbmm(csq[:, :, None] + sqr[:, None, :], cp, zr.transpose(1, 2), alpha=-2).amin(1)

    def _refresh_top(self) -> tuple | None:
        """Bring the tokens with the largest bounds up to date until the P + 1 largest exact deltas
        beat every remaining bound, and return that pool (see `_pool_from`); None if that needs
        most tokens (the caller updates all)."""
        P, N = self.P, self.N
        m = self.refresh_size
        while m < N:
            top = self._score().topk(m + 1, dim=1)
            rows = top.indices[:, :m]
            zr = self._update(rows)
            exact = self._score().gather(1, rows)
            pool = self._pool_from(exact, rows, zr)
            if bool((pool[1] >= top.values[:, m]).all()):
                self.refresh_size = m  # the next round likely needs as many: start there
                return pool
            m *= 2
        return None

    def _pool_from(self, score: Tensor, rows: Tensor | None = None, zr: Tensor | None = None) -> tuple:
        """(members [B, P] in raster order, tau [B] = the (P+1)-th largest score, their scores, points).

        score covers all tokens, or the tokens `rows` (whose points are zr when already gathered)."""
        P = self.P
        top = score.topk(P + 1, dim=1)
        pos = top.indices[:, :P]
        members = pos if rows is None else rows.gather(1, pos)
        members, order = members.sort(dim=1)  # raster order: ties go to the lowest slot
        pos = pos.gather(1, order)
        zp = take_rows(self.z, members) if zr is None else take_rows(zr, pos)
        return members, top.values[:, P], score.gather(1, pos), zp

    def _round(self, members: Tensor, tau: Tensor, dp: Tensor, zp: Tensor) -> bool:
        """Pick as many centers of the pool as it certifies; False when it certifies none.

        tau bounds the delta of every token outside the pool. The pool's pairwise distances are
        computed lazily: one row per pick for the first few picks (many rounds stop early), then the
        whole P x P matrix; from there the pool greedy runs in chunks and certification (best > tau
        in every frame) is checked once per chunk.
        """
        B, P = self.z.shape[0], self.P
        left = self.k - self.t
        j = dp.argmax(1)
        if not bool((dp.gather(1, j[:, None]).squeeze(1) > tau).all()):
            return False
        sqp = self.sq.gather(1, members)
        picks = [j]
        while len(picks) < min(left, LAZY_PICKS):  # one pool row per pick, checked one by one
            torch.minimum(dp, self._pool_row(zp, sqp, j), out=dp)
            j = dp.argmax(1)
            if not bool((dp.gather(1, j[:, None]).squeeze(1) > tau).all()):
                return self._commit(members, picks, zp)
            picks.append(j)
        if len(picks) == left:
            return self._commit(members, picks, zp)
        torch.minimum(dp, self._pool_row(zp, sqp, j), out=dp)
        dpp = torch.baddbmm(sqp[:, :, None] + sqp[:, None, :], zp, zp.transpose(1, 2), alpha=-2)
        dpp.diagonal(dim1=1, dim2=2).fill_(NEG_INF)  # a pick leaves the pool
        rows = dpp.view(B * P, P)
        while len(picks) < left:
            cands, bests = [], []
            for _ in range(min(CHUNK, left - len(picks))):
                j = dp.argmax(1)
                cands.append(j)
                bests.append(dp.amax(1))
                torch.minimum(dp, rows.index_select(0, j + self.row_base), out=dp)
            certified = (torch.stack(bests) > tau).all(1)  # [chunk]
            n_ok = int(certified.cumprod(0).sum())
            picks.extend(cands[:n_ok])
            if n_ok < len(cands):
                break
        return self._commit(members, picks, zp)

    def _commit(self, members: Tensor, picks: list[Tensor], zp: Tensor) -> bool:
        pos = torch.stack(picks, 1)
        self._add(members.gather(1, pos), take_rows(zp, pos))
        return True

    @staticmethod
    def _pool_row(zp: Tensor, sqp: Tensor, j: Tensor) -> Tensor:
        """Squared distances [B, P] from pool member j[b] to every member (-inf for itself)."""
        d = torch.baddbmm(sqp.gather(1, j[:, None])[:, :, None] + sqp[:, None, :], take_rows(zp, j[:, None]),
                          zp.transpose(1, 2), alpha=-2).squeeze(1)
        return d.scatter_(1, j[:, None], NEG_INF)


def farthest_first_reference(z: Tensor, k: int, start: Tensor, valid: Tensor | None = None) -> Tensor:
    """The textbook loop (one full distance column per step); used by tests to check the engine."""
    B, N, _ = z.shape
    sq = squared_norms(z)
    delta2 = torch.full((B, N), float("inf"), device=z.device)
    if valid is not None:
        delta2.masked_fill_(~valid, NEG_INF)
    ar = torch.arange(B, device=z.device)
    sel = torch.empty(B, k, dtype=torch.long, device=z.device)
    idx = start
    for t in range(k):
        sel[:, t] = idx
        c = z[ar, idx]
        d2 = sq + sq[ar, idx][:, None] - 2 * torch.einsum("bne,be->bn", z, c)
        delta2 = torch.minimum(delta2, d2)
        delta2[ar, idx] = NEG_INF
        idx = delta2.argmax(1)
    return sel
