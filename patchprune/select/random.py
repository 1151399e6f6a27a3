"""Random: a uniform subset of K tokens per frame (the baseline every method must beat).

Seeded and deterministic: the same (seed, frame count, N) gives the same subsets, so a frame that
is encoded twice keeps the same tokens. Frames of one call get independent subsets.
"""
from __future__ import annotations

from torch import Tensor

from patchprune.select.base import SelectInput, register_method, seeded_uniform


@register_method("random")
def random_subset(x: Tensor, k: int, inp: SelectInput, *, seed: int = 0) -> Tensor:
    """Kept slots [B, k] (in draw order)."""
    B, N, _ = x.shape
    return seeded_uniform(B, N, inp.valid, seed, x.device).topk(k, dim=1).indices
