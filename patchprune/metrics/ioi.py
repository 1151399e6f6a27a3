"""IoI (intersection over instance), VPP's measure of how much of each object a pruning mask keeps.

IoI = mean over GT instances j and blocks l of |M_l ∩ G_j| / |G_j|, with M_l the tokens block l
processed and G_j the instance's mask on the patch grid. Rules (the paper's were lost, ours):

- a patch belongs to an instance when the instance covers at least half of the patch's area;
  an instance that covers no patch by half falls back to the patch(es) it overlaps most, so every
  visible instance counts (small ones included);
- every (frame, instance) pair with a visible instance is one sample of the mean;
- size buckets by the instance's share of the frame area: S < 2 %, 2 % <= M < 10 %, L >= 10 %
  (`SIZE_THRESHOLDS`; at 96 x 96 px with 8 px patches, 2 % is about 2.9 patches).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SIZE_THRESHOLDS = (0.02, 0.10)
BUCKETS = ("S", "M", "L")


def patch_coverage(masks: Tensor | np.ndarray, grid: tuple[int, int]) -> Tensor:
    """Area share of each patch covered by each mask: bool/float [..., H, W] -> float [..., h, w]."""
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, Tensor) else masks)
    if m.dim() < 2:
        raise ValueError(f"masks must be [..., H, W], got shape {tuple(m.shape)}")
    lead, (H, W) = m.shape[:-2], m.shape[-2:]
    h, w = grid
    if H < h or W < w:
        raise ValueError(f"mask size {H}x{W} is smaller than the patch grid {h}x{w}")
    flat = m.reshape(-1, 1, H, W).float()
    if flat.shape[0] == 0:
        return flat.new_zeros(*lead, h, w)
    cov = F.adaptive_avg_pool2d(flat, (h, w)) if (H % h or W % w) else F.avg_pool2d(flat, (H // h, W // w))
    return cov.reshape(*lead, h, w)


def patch_masks(masks: Tensor | np.ndarray, grid: tuple[int, int], threshold: float = 0.5) -> Tensor:
    """Instance masks on the patch grid: bool [..., h*w]. A patch is in when covered >= threshold;
    a non-empty instance that covers no patch that much keeps its most-covered patch(es)."""
    cov = patch_coverage(masks, grid).flatten(-2)
    inside = cov >= threshold
    peak = cov.amax(dim=-1, keepdim=True)
    fallback = (~inside.any(-1, keepdim=True)) & (peak > 0) & (cov == peak)
    return inside | fallback


def size_bucket(area_share: Tensor, thresholds: Sequence[float] = SIZE_THRESHOLDS) -> Tensor:
    """0 / 1 / 2 (S / M / L) per instance from its share of the frame area."""
    lo, hi = thresholds
    if not 0 < lo < hi < 1:
        raise ValueError(f"size thresholds must satisfy 0 < S < L < 1, got {thresholds}")
    return (area_share >= lo).long() + (area_share >= hi).long()


class IoIMeter:
    """Accumulates IoI over frames (batches of frames); `compute()` gives the overall and S / M / L means."""

    def __init__(self, thresholds: Sequence[float] = SIZE_THRESHOLDS) -> None:
        self.thresholds = tuple(thresholds)
        size_bucket(torch.zeros(1), self.thresholds)  # validate
        self.sums = torch.zeros(3, dtype=torch.float64)
        self.counts = torch.zeros(3, dtype=torch.long)

    def update(self, keep_masks: Mapping[int, Tensor], instances: Sequence[Tensor | np.ndarray],
               grid: tuple[int, int]) -> None:
        """keep_masks: block -> bool [B, N]; instances: per sample, pixel masks [J_b, H, W] (J_b may be 0)."""
        if not keep_masks:
            raise ValueError("no keep masks given")
        blocks = torch.stack([m.bool().cpu() for _, m in sorted(keep_masks.items())], dim=0)  # [L, B, N]
        L, B, N = blocks.shape
        if len(instances) != B:
            raise ValueError(f"{len(instances)} instance lists for a batch of {B}")
        if grid[0] * grid[1] != N:
            raise ValueError(f"grid {grid} does not match {N} tokens")
        for b, inst in enumerate(instances):  # loop over samples; instances of a sample are vectorised
            pix = torch.as_tensor(np.asarray(inst) if not isinstance(inst, Tensor) else inst).bool().cpu()
            if pix.shape[0] == 0:
                continue
            area = pix.flatten(1).float().mean(1)
            present = area > 0
            if not bool(present.any()):
                continue
            pix, area = pix[present], area[present]
            g = patch_masks(pix, grid).float()  # [J, N]
            hit = torch.einsum("jn,ln->jl", g, blocks[:, b].float())  # |M_l ∩ G_j|
            cover = (hit / g.sum(1, keepdim=True)).mean(1).double()  # mean over blocks
            bucket = size_bucket(area, self.thresholds)
            # this update's bucket sums first, then one add: `self.sums.index_add_` would round differently
            self.sums += torch.zeros(3, dtype=torch.float64).index_add_(0, bucket, cover)
            self.counts += torch.bincount(bucket, minlength=3)

    def compute(self) -> dict[str, float | int | None]:
        """{"ioi", "S", "M", "L" (None when a bucket is empty), "n", "n_S", "n_M", "n_L"}."""
        total = int(self.counts.sum())
        out: dict[str, float | int | None] = {"ioi": float(self.sums.sum() / total) if total else None, "n": total}
        for i, name in enumerate(BUCKETS):
            c = int(self.counts[i])
            out[name] = float(self.sums[i] / c) if c else None
            out[f"n_{name}"] = c
        return out


def ioi(keep_masks: Mapping[int, Tensor] | Iterable[Mapping[int, Tensor]],
        instances: Sequence[Tensor | np.ndarray] | Iterable[Sequence[Tensor | np.ndarray]],
        grid: tuple[int, int], thresholds: Sequence[float] = SIZE_THRESHOLDS) -> dict[str, float | int | None]:
    """IoI of one call (keep masks + per-sample instance masks) or of a sequence of calls."""
    meter = IoIMeter(thresholds)
    if isinstance(keep_masks, Mapping):
        meter.update(keep_masks, instances, grid)  # type: ignore[arg-type]
    else:
        for km, inst in zip(keep_masks, instances):
            meter.update(km, inst, grid)
    return meter.compute()
