"""Patch keep ratio (PKR), as VPP defines it.

KR_b = tokens processed by block b, summed over all frames / (N summed over all frames);
PKR = mean of KR_b over the blocks (a dense block counts 1). Pruning-module compute is not in PKR.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import Tensor


def keep_ratio_per_block(keep_masks: Iterable[Mapping[int, Tensor]]) -> list[float]:
    """KR_b over a sequence of forward calls (frames / batches): ratio of sums, per block b.

    Each element maps block position -> bool [B, N] of the tokens that block processed.
    """
    kept: dict[int, float] = {}
    total: dict[int, float] = {}
    for masks in keep_masks:
        for b, m in masks.items():
            kept[b] = kept.get(b, 0.0) + float(m.sum())
            total[b] = total.get(b, 0.0) + float(m.numel())
    if not total:
        raise ValueError("no keep masks given")
    return [kept[b] / total[b] for b in sorted(total)]


def pkr(keep_masks: Mapping[int, Tensor] | Iterable[Mapping[int, Tensor]]) -> float:
    """PKR of one call's keep masks, or of a sequence of calls (ratio of sums over frames)."""
    if isinstance(keep_masks, Mapping):
        keep_masks = [keep_masks]
    ratios = keep_ratio_per_block(keep_masks)
    return float(torch.tensor(ratios, dtype=torch.float64).mean())
