"""Referring / reasoning segmentation metrics: gIoU and cIoU.

gIoU = mean over samples of the per-sample IoU, where a sample whose prediction and target are both
empty scores 1.0 (a correct "nothing is referred to"); cIoU = total intersection / total union over
the data set. A video sample's IoU is taken over all its frames together.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np


class ReferMeter:
    """Streaming accumulator of gIoU / cIoU: call update(pred, target) per sample, then compute()."""

    def __init__(self) -> None:
        self.ious: list[float] = []
        self.inter = 0
        self.union = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> float:
        """Add one sample (bool masks of equal shape, image or video); returns its IoU."""
        p, t = np.asarray(pred).astype(bool), np.asarray(target).astype(bool)
        if p.shape != t.shape:
            raise ValueError(f"shape mismatch: prediction {p.shape} vs target {t.shape}")
        inter = int(np.logical_and(p, t).sum())
        union = int(np.logical_or(p, t).sum())
        iou = 1.0 if union == 0 else inter / union
        self.ious.append(iou)
        self.inter += inter
        self.union += union
        return iou

    def compute(self) -> dict[str, float]:
        if not self.ious:
            raise ValueError("no samples were added")
        ciou = 1.0 if self.union == 0 else self.inter / self.union
        return {"gIoU": float(np.mean(self.ious)), "cIoU": float(ciou), "samples": float(len(self.ious))}


def refer_iou(preds: Iterable[np.ndarray], targets: Iterable[np.ndarray]) -> dict[str, float]:
    """gIoU and cIoU of paired predicted / target masks."""
    meter = ReferMeter()
    n = 0
    for n, (p, t) in enumerate(zip(preds, targets, strict=True), start=1):
        meter.update(p, t)
    if n == 0:
        raise ValueError("no samples given")
    return meter.compute()
