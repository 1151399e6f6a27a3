"""Token state: the tensors that flow through a pruned ViT, and the gather / scatter between them.

A state is `tokens [B, n, C]` plus `index [B, n]` (each token's raster position in the H x W patch
grid), optionally `size [B, n]` (how many patches a merged token stands for) and `valid [B, n]`
(False on padding slots, used when the samples of a batch keep different counts).

Everything here is vectorised over the batch: no Python loop over samples or tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor


def keep_count(n: Tensor | int, ratio: float) -> Tensor | int:
    """Tokens kept out of n at keep ratio `ratio`: the library's one rule, K = max(1, round(ratio * n)).

    Rounds half up (ratio * n + 0.5, floored, in float64), so 0.5 of 5 tokens keeps 3; the EVTP budgets
    (729 at 5 / 10 / 20 % -> 36 / 73 / 146) hold, and a ratio whose product lands a hair under an
    integer (0.29 * 100 = 28.999...) still gives that integer. `select.budget`, every runner policy,
    Map-SM's kappa, DynamicViT / EViT's keep rates and ToMe's per-block r all use it. n: an int, or a
    tensor of counts (returns a long tensor). ValueError unless 0 < ratio <= 1.
    """
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"keep ratio must be in (0, 1], got {ratio!r}")
    if isinstance(n, Tensor):
        return torch.clamp(torch.floor(n.to(torch.float64) * float(ratio) + 0.5).long(), min=1)
    return max(1, math.floor(int(n) * float(ratio) + 0.5))


@dataclass
class TokenState:
    """Patch tokens of a batch with their grid positions (prefix tokens are kept elsewhere)."""

    tokens: Tensor  # [B, n, C]
    index: Tensor  # [B, n] long, raster positions into the grid
    grid: tuple[int, int]  # (H, W) of the patch grid
    size: Tensor | None = None  # [B, n] patches per token (merged tokens); None = all ones
    valid: Tensor | None = None  # [B, n] bool; None = every slot is a real token

    def __post_init__(self) -> None:
        if self.tokens.dim() != 3:
            raise ValueError(f"tokens must be [B, n, C], got shape {tuple(self.tokens.shape)}")
        if self.index.shape != self.tokens.shape[:2]:
            raise ValueError(
                f"index shape {tuple(self.index.shape)} does not match tokens {tuple(self.tokens.shape[:2])}"
            )
        for name in ("size", "valid"):
            t = getattr(self, name)
            if t is not None and t.shape != self.tokens.shape[:2]:
                raise ValueError(f"{name} shape {tuple(t.shape)} does not match tokens {tuple(self.tokens.shape[:2])}")

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @classmethod
    def from_grid(cls, tokens: Tensor, grid: tuple[int, int]) -> "TokenState":
        """A full state (every grid position, raster order) from patch tokens [B, H*W, C]."""
        check_grid(tokens.shape[1], grid)
        index = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        return cls(tokens=tokens, index=index, grid=grid)

    def counts(self) -> Tensor:
        """Real tokens per sample [B] (long)."""
        if self.valid is None:
            return torch.full((self.tokens.shape[0],), self.tokens.shape[1], dtype=torch.long, device=self.tokens.device)
        return self.valid.sum(1)

    def gather(self, slots: Tensor, valid: Tensor | None = None) -> "TokenState":
        """The sub-state at slot positions `slots [B, k]` (slots index the current n tokens)."""
        return TokenState(
            tokens=gather_tokens(self.tokens, slots),
            index=self.index.gather(1, slots),
            grid=self.grid,
            size=None if self.size is None else self.size.gather(1, slots),
            valid=_combine_valid(None if self.valid is None else self.valid.gather(1, slots), valid),
        )

    def with_tokens(self, tokens: Tensor) -> "TokenState":
        return replace(self, tokens=tokens)

    def to_grid(self, base: Tensor | None = None) -> Tensor:
        """Scatter the tokens back to the full grid [B, H*W, C].

        Positions not held by any token keep their value in `base` (their last feature); without
        `base` they are zero. Padding slots never write.
        """
        return scatter_tokens(self.tokens, self.index, self.num_patches, base=base, valid=self.valid)


def check_grid(n: int, grid: tuple[int, int]) -> None:
    """Raise a clear error when `grid` does not tile `n` patch tokens."""
    if len(grid) != 2 or grid[0] < 1 or grid[1] < 1:
        raise ValueError(f"grid must be (H, W) with positive sides, got {grid}")
    if grid[0] * grid[1] != n:
        raise ValueError(f"grid {grid[0]}x{grid[1]} = {grid[0] * grid[1]} positions does not match {n} tokens")


def gather_tokens(x: Tensor, slots: Tensor) -> Tensor:
    """x [B, n, C] at slots [B, k] -> [B, k, C]: the library's one row gather.

    One row copy per kept slot (index_select on the flattened batch), much faster on CPU than
    `gather` with an index expanded over C; differentiable like any indexing.
    """
    B, n, C = x.shape
    if x.is_contiguous():
        return x.view(B * n, C).index_select(0, _flat_slots(slots, n)).view(B, slots.shape[1], C)
    return x[torch.arange(B, device=slots.device)[:, None], slots]


def add_rows(x: Tensor, slots: Tensor, rows: Tensor) -> Tensor:
    """x [B, n, C] plus rows [B, k, C] added at slots [B, k] (repeated slots accumulate, in order):
    a new tensor, the row counterpart of `gather_tokens` (index_add on the flattened batch, about
    twice as fast on CPU as scatter_add with an index expanded over C; differentiable)."""
    B, n, C = x.shape
    return x.reshape(B * n, C).index_add(0, _flat_slots(slots, n), rows.reshape(-1, C)).view(B, n, C)


def _flat_slots(slots: Tensor, n: int) -> Tensor:
    """slots [B, k] of rows of [B, n, C] as row numbers of its [B * n, C] view, batch-major."""
    return (slots + torch.arange(slots.shape[0], device=slots.device)[:, None] * n).reshape(-1)


def row_max(x: Tensor) -> tuple[Tensor, Tensor]:
    """(values, indices) of the maximum along the last dim, the first index on ties (torch.max's
    contract). On CPU the indices come from NumPy: torch's max / argmax with indices along a
    contiguous last dim is about ten times slower there ([512, 512] at 2 threads: 320 us against
    40 us), and the bipartite and nearest-target matchings call it on every merge."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.shape[-1] == 0:
        return x.max(-1)
    idx = torch.from_numpy(x.detach().numpy().argmax(-1))
    return x.gather(-1, idx.unsqueeze(-1)).squeeze(-1), idx


def keep_at_least_one(keep: Tensor, scores: Tensor | None = None, eligible: Tensor | None = None) -> Tensor:
    """Bool keep [B, n] where no sample is empty: the library's one rescue (an empty sample would give
    an all-masked attention row, i.e. NaN). An empty sample keeps its best-scoring eligible slot
    (`scores` [B, n]; ties and no scores: the first eligible slot); others are returned unchanged."""
    empty = ~keep.any(dim=1, keepdim=True)
    allowed = eligible if eligible is not None else torch.ones_like(keep)
    rank = scores.float() if scores is not None else torch.zeros(keep.shape, device=keep.device)
    best = rank.masked_fill(~allowed, float("-inf")).argmax(dim=1, keepdim=True)
    return keep | (torch.zeros_like(keep).scatter_(1, best, True) & empty)


def scatter_tokens(
    tokens: Tensor, index: Tensor, num_positions: int, base: Tensor | None = None, valid: Tensor | None = None
) -> Tensor:
    """Write tokens [B, k, C] at grid positions index [B, k] into a [B, num_positions, C] tensor.

    Padding slots (valid False) are routed to a scratch row that is dropped, so they never
    overwrite a real position. Out-of-place, so it is safe under autograd.
    """
    B, k, C = tokens.shape
    if base is None:
        base = tokens.new_zeros(B, num_positions, C)
    if valid is None:
        return base.scatter(1, index.unsqueeze(-1).expand(-1, -1, C), tokens)
    scratch = torch.cat([base, base.new_zeros(B, 1, C)], dim=1)
    target = torch.where(valid, index, torch.full_like(index, num_positions))
    return scratch.scatter(1, target.unsqueeze(-1).expand(-1, -1, C), tokens)[:, :num_positions]


def mask_to_slots(keep: Tensor) -> tuple[Tensor, Tensor | None]:
    """Kept positions of a bool mask [B, n] as slots [B, k_max] in ascending order.

    Returns (slots, valid); valid is None when every sample keeps the same count (no padding),
    otherwise a [B, k_max] bool mask of the real slots. Padding slots point at a real slot of the
    same sample (the first kept one), so gathers stay in range.
    """
    if keep.dtype != torch.bool:
        raise ValueError(f"keep mask must be bool, got {keep.dtype}")
    counts = keep.sum(1)
    k_max = int(counts.max())
    # Stable sort puts kept positions first, in ascending order.
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :k_max]
    if bool((counts == k_max).all()):
        return order, None
    valid = torch.arange(k_max, device=keep.device).unsqueeze(0) < counts.unsqueeze(1)
    slots = torch.where(valid, order, order[:, :1])
    return slots, valid


def pad_sequences(seqs: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack variable-length [n_i, C] tensors into [B, n_max, C] with a valid mask [B, n_max]."""
    if not seqs:
        raise ValueError("pad_sequences needs at least one sequence")
    n_max = max(s.shape[0] for s in seqs)
    out = seqs[0].new_zeros(len(seqs), n_max, *seqs[0].shape[1:])
    valid = torch.zeros(len(seqs), n_max, dtype=torch.bool, device=seqs[0].device)
    for i, s in enumerate(seqs):  # loop over samples only in this convenience helper
        out[i, : s.shape[0]] = s
        valid[i, : s.shape[0]] = True
    return out, valid


def unpad_sequences(x: Tensor, valid: Tensor | None) -> list[Tensor]:
    """Inverse of `pad_sequences`: the real slots of each sample."""
    if valid is None:
        return list(x.unbind(0))
    return [xi[vi] for xi, vi in zip(x.unbind(0), valid.unbind(0))]


def _combine_valid(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b
