"""Exact greedy farthest-first traversal (Gonzalez's 2-approximation of k-center), batched over frames.

The textbook loop keeps delta_i = distance of token i to its nearest selected token and, at every
step, picks argmax delta and lowers delta with one distance column. On a CPU that column is a
matrix-vector product bound by memory bandwidth (N x E floats per frame and step). This engine
returns the *same picks* with most of the work in matrix-matrix products:

- Pool rounds. The P tokens with the largest delta form a pool and tau is the (P+1)-th value:
  while the pool's best delta exceeds tau it is the global argmax (tokens outside the pool only
  ever decrease below tau), so several picks are certified from P x P distances alone. The pool is
  kept in raster order, so ties resolve to the lowest slot exactly as `torch.argmax` would. The
  chain of tiny steps inside the pool runs in NumPy (microseconds per step, not a dispatched op).
- One GEMM per round then lowers every delta with the round's new centers (N x picks distances).
  Bounds that skip tokens (lazy deltas, triangle inequality, the spatial part of EVTP's distance)
  were measured: on 729 tokens they rule out too few tokens to pay for gathering the rest.
- The first picks (when pools certify little) are plain steps: one full distance column each.
- Picked tokens leave the live list once they are a tenth of it (`_compact`), so the GEMMs skip
  them: at the keep ratios of in-ViT pruning (60-80 % of 1024 tokens) that is a third of the work.
- On a GPU (CUDA) the engine runs matrix mode for every k while the matrix fits MATRIX_BYTES: the
  N x N GEMM on the device, one copy of it to the host and the NumPy chain there (~1 us a pick). A
  plain step on the device is ~10 dispatched kernels (gather, GEMM, min, scatter, argmax, ...), each
  costing the Python dispatch and the launch (tens of us) whatever N is, so a chain of hundreds of
  picks would take tens of ms; the price of the host chain is one synchronisation per call. Larger
  matrices fall back to plain steps (no host round trip at all). Not yet timed on a GPU
  (`benchmarks/gpu/strategies.py` compares the two there).
- Matrix mode (CPU, k >= MATRIX_SHARE * N, the keep ratios of in-ViT pruning, or k >=
  MATRIX_SMALL_SHARE * N on grids of at most MATRIX_SMALL_N tokens): one N x N distance
  GEMM, then the textbook chain on its rows in NumPy (a row minimum and an argmax per pick, ~2 us).
  It does more arithmetic than the pool rounds (N^2 instead of ~N k distances) but in one large
  GEMM that scales with the threads, where the rounds' skinny GEMMs and host steps do not: at
  batch 1 with 2 threads the rounds ran the 1024-token selection of a 512 px ViT-S at a third of
  the blocks' GEMM speed (issue 10). The FLOP counter (`metrics.flops`) counts its GEMM like any other.

Cost on the EVTP bench inputs (729 tokens x 4 frames, E = 1154, K = 146): about 106 k token-center
distances per frame (the textbook's N x K, the last round excluded, plus the pool blocks), 3/4 of
the time in GEMMs. Rows are padded to 16 floats by the callers (`ROW_ALIGN`), which halves the
cost of a plain step.

Distances are squared Euclidean in fp32, |x|^2 + |y|^2 - 2 x.y (callers centre the points first to
keep the rounding small). Invalid (padding) tokens have delta = -inf and are never picked.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from patchprune.select.base import take_rows

NEG_INF = float("-inf")
PLAIN_STEPS = 8  # picks made one full distance column at a time before pool rounds start
DEFAULT_POOL = 128  # pool size P (speed only; 128 measured faster than 64 at 729 and 1024 tokens, issue 10)
COMPACT_SHARE = 0.1  # picked tokens are dropped from the live list once they are this share of it
MATRIX_SHARE = 0.5  # CPU: k >= this share of N -> matrix mode (one N x N GEMM + a NumPy chain)
MATRIX_BYTES = 256 << 20  # ... while the B x N x N fp32 matrix fits in this many bytes
# Small grids (N <= MATRIX_SMALL_N, e.g. the 144 tokens of `ivs` frames): matrix mode from k >= this
# share of N on. There a pool round and a plain step cost a few dispatched ops each (tens of us per
# pick), more than the whole N x N GEMM: 8 x 144 tokens, K = 14: 4.5 -> 2.5 ms (EVTP, 1 thread).
MATRIX_SMALL_N = 256
MATRIX_SMALL_SHARE = 0.08
STRATEGIES = ("auto", "pool", "matrix")


def use_matrix(k: int, shape: tuple[int, int], device: torch.device, strategy: str = "auto") -> bool:
    """Whether farthest_first runs in matrix mode for k picks among shape = (B, N) tokens: on the
    CPU at the keep ratios where one GEMM beats the pool rounds, on CUDA whenever the matrix fits
    (see the module docstring), never elsewhere."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy != "auto":
        return strategy == "matrix"
    B, N = shape
    fits = B * N * N * 4 <= MATRIX_BYTES
    if device.type == "cuda":
        return fits
    share = MATRIX_SMALL_SHARE if N <= MATRIX_SMALL_N else MATRIX_SHARE
    return device.type == "cpu" and k >= share * N and fits


def pairwise_sq(z: Tensor, sq: Tensor) -> Tensor:
    """[B, N, N] squared distances between all points of z [B, N, E] (sq: their squared norms)."""
    return sq_distances(z, sq, z, sq)


def squared_norms(z: Tensor) -> Tensor:
    """[..., N] squared L2 norms of the rows of z [..., N, E]."""
    return torch.linalg.vector_norm(z, dim=-1).square_()


# Squared norms a frame's points may have for |x|^2 + |y|^2 - 2 x.y to stay finite and precise in
# fp32: below 2^100 no sum of distances overflows (fp32 max ~2^128); above 2^-100 nothing that
# matters underflows (fp32 normal min ~2^-126).
SAFE_SQ_RANGE = (2.0 ** -100, 2.0 ** 100)


def safe_scale(x: Tensor, feature_sq: Tensor) -> Tensor | None:
    """None when, in every frame, the largest squared feature norm (feature_sq [B, N], of the
    features distances are built from) is finite and inside SAFE_SQ_RANGE; else [B] powers of two
    that bring each other frame's largest |x| into [1, 2) (1 for frames in range and all-zero
    frames). Powers of two rescale exactly, so the picks made on x * factor are those x would give
    with unlimited range."""
    top = feature_sq.amax(1)
    lo, hi = SAFE_SQ_RANGE
    bad = ~torch.isfinite(top) | (top > hi) | (top < lo)  # top == 0: all-zero, or underflowed
    if not bool(bad.any()):
        return None
    peak = x.detach().abs().amax(dim=tuple(range(1, x.dim())))
    exponent = torch.frexp(peak).exponent - 1  # peak = mantissa * 2^(exponent + 1), mantissa in [0.5, 1)
    bad &= (peak > 0) & (exponent != 0)
    if not bool(bad.any()):
        return None
    return torch.where(bad, torch.ldexp(torch.ones_like(peak), -exponent), torch.ones_like(peak))


def sq_distances(a: Tensor, sq_a: Tensor, b: Tensor, sq_b: Tensor) -> Tensor:
    """[B, Na, Nb] squared distances |a|^2 + |b|^2 - 2 a.b of points a [B, Na, E] and b [B, Nb, E]
    with squared norms sq_a [B, Na], sq_b [B, Nb] (one batched GEMM). The norms are added after a
    plain bmm rather than through baddbmm's beta term: on the CPU that path ran the square 1024-token
    GEMM at half speed (issue 10). Same order of rounding: (|a|^2 + |b|^2) + (-2 a.b)."""
    out = sq_a[:, :, None] + sq_b[:, None, :]
    return out.add_(torch.bmm(a, b.transpose(1, 2)), alpha=-2)


def farthest_first(z: Tensor, k: int, start: Tensor, valid: Tensor | None = None, sq: Tensor | None = None,
                   pool: int = DEFAULT_POOL, strategy: str = "auto", dist: Tensor | None = None) -> Tensor:
    """Slots [B, k] in pick order: start, then repeatedly the token farthest from the picked set.

    z [B, N, E] fp32 points; start [B] first pick; valid [B, N] bool (False = never picked);
    sq [B, N] precomputed squared norms of z (optional); pool: size P of the pool (speed only);
    strategy: "auto" (matrix mode where `use_matrix` says), "pool" or "matrix" (speed only: the
    picks are the same); dist: the [B, N, N] matrix of `pairwise_sq` when the caller has it
    (matrix mode). Requires k <= number of valid tokens for distinct picks.
    """
    B, N, _ = z.shape
    if not 1 <= k <= N:
        raise ValueError(f"k must be in [1, {N}], got {k}")
    if use_matrix(k, (B, N), z.device, strategy) or dist is not None:  # (validates strategy either way)
        if dist is None:
            dist = pairwise_sq(z.contiguous(), squared_norms(z) if sq is None else sq)
        return _matrix_chain(dist, k, start, valid)
    return _Greedy(z.contiguous(), k, start, valid, sq, pool).run()


def _matrix_chain(dist: Tensor, k: int, start: Tensor, valid: Tensor | None) -> Tensor:
    """The textbook chain on precomputed distance rows dist [B, N, N] (NumPy on the host)."""
    B, N, _ = dist.shape
    d = dist.detach().cpu().numpy()
    delta = np.full((B, N), np.inf, dtype=d.dtype)
    if valid is not None:
        delta[~valid.cpu().numpy()] = -np.inf
    sel = np.empty((B, k), dtype=np.int64)
    j = start.cpu().numpy().astype(np.int64)
    if B == 1:  # 1-d arrays: the fewest NumPy calls per pick
        row, dd, i = delta[0], d[0], int(j[0])
        for t in range(k):
            sel[0, t] = i
            np.minimum(row, dd[i], out=row)
            row[i] = -np.inf
            i = int(row.argmax())
    else:
        ar = np.arange(B)
        for t in range(k):
            sel[:, t] = j
            np.minimum(delta, d[ar, j], out=delta)
            delta[ar, j] = -np.inf
            j = delta.argmax(1)
    return torch.from_numpy(sel).to(start.device)


class _Greedy:
    """State of one batched farthest-first run (see the module docstring).

    The run works on a live list of the tokens not picked yet (`live` [B, L]: their slots, in
    ascending order, the same count L in every frame): their points `z`, squared norms `sq` and
    squared deltas `delta2` [B, L]. Picked tokens are dropped from it (`_compact`) once they make up
    COMPACT_SHARE of it, so later distance GEMMs skip them; ascending order keeps argmax ties on the
    lowest slot."""

    def __init__(self, z: Tensor, k: int, start: Tensor, valid: Tensor | None, sq: Tensor | None,
                 pool: int) -> None:
        B, N, _ = z.shape
        self.z, self.k = z, k
        self.sq = squared_norms(z) if sq is None else sq
        self.live = torch.arange(N, device=z.device).expand(B, N)
        self.sel = torch.empty(B, k, dtype=torch.long, device=z.device)
        self.delta2 = torch.full((B, N), float("inf"), device=z.device)  # exact squared delta (-inf: never pick)
        if valid is not None:
            self.delta2.masked_fill_(~valid, NEG_INF)
        self.P = max(1, min(int(pool), N - 1))
        self.t = 0  # centers picked
        self.picked: list[Tensor] = []  # live positions picked since the last compaction
        self.host_rounds = z.device.type == "cpu"  # pool rounds sync with the host: CPU only
        self._add(start[:, None])

    def run(self) -> Tensor:
        # With few centers a pool rarely certifies more than one pick: plain exact steps. Off the CPU
        # every pick is a plain step (no host round trip at all).
        self._plain_steps(min(self.k, PLAIN_STEPS) if self.host_rounds else self.k)
        while self.t < self.k:
            if not self._round():  # the pool certified nothing (or ties at its boundary): one plain pick
                self._plain_steps(self.t + 1)
        return self.sel

    def _plain_steps(self, until: int) -> None:
        """Textbook steps: argmax, then one full distance column per pick."""
        while self.t < until:
            self._add(self.delta2.argmax(1, keepdim=True))

    def _add(self, picks: Tensor, points: Tensor | None = None) -> None:
        """Record picks [B, p] (live positions; their points [B, p, E] when at hand) as the next
        centers and lower every live delta with them (one GEMM over the live tokens: with few
        tokens per frame, bounds that skip tokens save little and cost gathers)."""
        t, p = self.t, picks.shape[1]
        self.sel[:, t:t + p] = self.live.gather(1, picks)
        self.t = t + p
        if self.t >= self.k:  # nothing reads delta after the last pick
            return
        cp = take_rows(self.z, picks) if points is None else points
        d2 = sq_distances(cp, self.sq.gather(1, picks), self.z, self.sq)
        torch.minimum(self.delta2, d2.amin(1), out=self.delta2)
        self.delta2.scatter_(1, picks, NEG_INF)
        self.picked.append(picks)

    def _compact(self) -> None:
        """Drop the picked tokens from the live list (every frame drops as many, so L stays equal)."""
        B, L = self.delta2.shape
        keep = torch.ones(B, L, dtype=torch.bool, device=self.z.device)
        keep.scatter_(1, torch.cat(self.picked, dim=1), False)
        pos = keep.nonzero()[:, 1].view(B, -1)  # row-major: ascending within each frame
        self.live, self.sq, self.delta2 = self.live.gather(1, pos), self.sq.gather(1, pos), self.delta2.gather(1, pos)
        self.z = take_rows(self.z, pos)
        self.picked = []

    def _round(self) -> bool:
        """Pick as many centers of the pool (the P tokens of largest delta) as it certifies; False
        when it certifies none.

        tau (the (P+1)-th largest delta) bounds every token outside the pool, so while the pool's
        best exceeds tau in every frame it is the global argmax. The pool greedy itself is a chain
        of tiny steps on P x P distances; it runs in NumPy on the host, where a step costs
        microseconds rather than the tens of microseconds of a dispatched torch op.
        """
        if sum(p.shape[1] for p in self.picked) >= COMPACT_SHARE * self.delta2.shape[1]:
            self._compact()
        P = min(self.P, self.delta2.shape[1] - 1)
        if P < 1:
            return False
        top = self.delta2.topk(P + 1, dim=1)
        tau = top.values[:, P]
        if not bool((top.values[:, 0] > tau).all()):
            return False
        members = top.indices[:, :P].sort(dim=1).values  # raster order: ties go to the lowest slot
        dp = self.delta2.gather(1, members)
        zp, sqp = take_rows(self.z, members), self.sq.gather(1, members)
        dpp = sq_distances(zp, sqp, zp, sqp)
        dpp.diagonal(dim1=1, dim2=2).fill_(NEG_INF)  # a pick leaves the pool
        picks = _pool_greedy(dp.numpy(), dpp.numpy(), tau.numpy(), self.k - self.t)
        pos = torch.from_numpy(picks)
        self._add(members.gather(1, pos), take_rows(zp, pos))
        return True


def _pool_greedy(dp: np.ndarray, dpp: np.ndarray, tau: np.ndarray, limit: int) -> np.ndarray:
    """Greedy farthest-first inside the pools of all frames: positions [B, n] of the picks that are
    certified (best > tau) in every frame, n <= limit. dp [B, P] is updated in place."""
    B = dp.shape[0]
    picks = []
    if B == 1:  # one frame: 1-d arrays, the fewest NumPy calls per step
        d, dd, t = dp[0], dpp[0], tau[0]
        while len(picks) < limit:
            j = int(d.argmax())
            if not d[j] > t:
                break
            picks.append(j)
            np.minimum(d, dd[j], out=d)
        return np.asarray(picks, dtype=np.int64).reshape(1, -1)
    ar = np.arange(B)
    while len(picks) < limit:
        j = dp.argmax(1)
        if not (dp[ar, j] > tau).all():
            break
        picks.append(j)
        np.minimum(dp, dpp[ar, j], out=dp)
    return np.stack(picks, 1) if picks else np.zeros((B, 0), dtype=np.int64)


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
