"""Referring / reasoning segmentation metrics: gIoU and cIoU.

gIoU = mean over samples of the per-sample IoU, where a sample whose prediction and target are both
empty scores 1.0 (a correct "nothing is referred to"); cIoU = total intersection / total union over
the data set, 0 when that union is 0 (as the LISA / ReLA evaluators, whose union carries an epsilon).
A video sample's IoU is taken over all its frames together. With `ignore` set (e.g. 255), target
pixels holding that value are left out of both intersection and union (wherever the prediction is).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np


class ReferMeter:
    """Streaming accumulator of gIoU / cIoU: call update(pred, target) per sample, then compute().

    ignore: a target value whose pixels are excluded (None: every non-zero target pixel is foreground).
    """

    def __init__(self, ignore: int | None = None) -> None:
        if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, (int, np.integer))):
            raise ValueError(f"ignore must be an integer target value (e.g. 255) or None, got {ignore!r}")
        self.ignore = None if ignore is None else int(ignore)
        self.ious: list[float] = []
        self.inter = 0
        self.union = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> float:
        """Add one sample (masks of equal shape, image or video); returns its IoU."""
        pred, target = np.asarray(pred), np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"shape mismatch: prediction {pred.shape} vs target {target.shape}")
        p, t = pred.astype(bool), target.astype(bool)
        if self.ignore is not None:
            valid = target != self.ignore
            p, t = p & valid, t & valid
        inter = int(np.logical_and(p, t).sum())
        union = int(np.logical_or(p, t).sum())
        iou = 1.0 if union == 0 else inter / union
        self.ious.append(iou)
        self.inter += inter
        self.union += union
        return iou

    def compute(self) -> dict[str, float]:
        """{"gIoU", "cIoU", "samples"}; cIoU is 0 when nothing was predicted or referred in any sample."""
        if not self.ious:
            raise ValueError("no samples were added")
        ciou = 0.0 if self.union == 0 else self.inter / self.union
        return {"gIoU": float(np.mean(self.ious)), "cIoU": float(ciou), "samples": float(len(self.ious))}


def refer_iou(preds: Iterable[np.ndarray], targets: Iterable[np.ndarray], ignore: int | None = None) -> dict[str, float]:
    """gIoU and cIoU of paired predicted / target masks (target pixels equal to `ignore` excluded)."""
    meter = ReferMeter(ignore)
    n = 0
    for n, (p, t) in enumerate(zip(preds, targets, strict=True), start=1):
        meter.update(p, t)
    if n == 0:
        raise ValueError("no samples given")
    return meter.compute()
