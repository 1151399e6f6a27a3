"""Helpers shared by the learned pruning policies.

- `grid_tokens`: the full H x W grid of token features, whatever the execution mode.
- `ensure_one`: never let a sample keep zero tokens (an all-masked attention row is NaN).
- `target_default`: a method's default knob (kappa, rho) for a PKR target.
- `SparsityRecord` / `record` / `record_keep`: what each policy writes into `ctx.aux["sparsity"]` so that a
  method's loss (patchprune.learned.losses) can be computed from the runner's output alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from patchprune.policies.base import PolicyContext
from patchprune.tokens import keep_at_least_one, scatter_tokens

SPARSITY_KEY = "sparsity"


def target_default(table: Mapping[float, float], target: float, what: str, option: str) -> float:
    """A method's default knob for a PKR target: `table[target]` with targets matched to 1e-6.

    Raises a ValueError naming the knob (`what`), the keyword to pass instead (`option`) and the
    known targets. Used for VPP's kappa and rho and DynamicViT / TPS's rho.
    """
    for t, value in table.items():
        if math.isclose(float(target), t, rel_tol=0.0, abs_tol=1e-6):
            return value
    known = ", ".join(f"{t:.2f}" for t in table)
    raise ValueError(f"no default {what} for target {target}; pass {option}= explicitly (known: {known})")


@dataclass
class SparsityRecord:
    """Keep statistics of one pruning module in one forward call.

    keep_mean: scalar, cumulative keep mask relative to all N grid tokens, mean over batch and
    tokens jointly (with gradient in training mode). keep_per_sample: [B], the same per sample.
    prob_mean: scalar mean keep probability (Map-SM's p) or None.
    """

    kind: str
    keep_mean: Tensor
    keep_per_sample: Tensor
    prob_mean: Tensor | None = None


def record(ctx: PolicyContext, rec: SparsityRecord) -> None:
    """Store a module's statistics under its block position."""
    ctx.aux.setdefault(SPARSITY_KEY, {})[ctx.position] = rec


def records(aux: dict) -> dict[int, SparsityRecord]:
    """The sparsity records of one forward call, by block position (empty if none)."""
    return dict(sorted(aux.get(SPARSITY_KEY, {}).items()))


def is_full_grid(ctx: PolicyContext) -> bool:
    """True when the live tokens are exactly the grid in raster order (training, or nothing pruned)."""
    n, N = ctx.tokens.shape[1], ctx.num_patches
    if n != N or ctx.valid is not None:
        return False
    return ctx.training or bool((ctx.index == torch.arange(N, device=ctx.index.device)).all())


def grid_tokens(ctx: PolicyContext) -> Tensor:
    """[B, N, C] features of every grid position (pruned positions: their last feature)."""
    if is_full_grid(ctx):
        return ctx.tokens
    if ctx.grid_features is not None:
        return ctx.grid_features()
    return scatter_tokens(ctx.tokens, ctx.index, ctx.num_patches, valid=ctx.valid)


def ensure_one(keep: Tensor, scores: Tensor, eligible: Tensor) -> Tensor:
    """Bool keep [B, n] with at least one token per sample: an empty sample keeps its best eligible token
    (the library's one rescue, `patchprune.tokens.keep_at_least_one`)."""
    return keep_at_least_one(keep, scores, eligible)


def record_keep(ctx: PolicyContext, kind: str, keep: Tensor, prob_mean: Tensor | None = None) -> None:
    """Record a module's keep mask [B, n] (float with gradient in training, bool in inference) as
    kept tokens relative to all N grid tokens, per sample and over the batch."""
    per_sample = keep.float().sum(1) / ctx.num_patches
    record(ctx, SparsityRecord(kind, per_sample.mean(), per_sample, prob_mean))


def rescue_empty(m: Tensor, scores: Tensor, eligible: Tensor) -> Tensor:
    """Training-mode counterpart of `ensure_one` for float masks [B, N]: a sample whose hard mask
    is empty gets its best eligible token back (constant 1, no gradient), as inference would do."""
    hard = m.detach() > 0.5
    rescue = ensure_one(hard, scores.detach(), eligible) & ~hard
    return m + rescue.to(m.dtype)
