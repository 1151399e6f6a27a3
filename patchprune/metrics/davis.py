"""DAVIS video object segmentation metrics: J (region IoU), F (boundary F-measure) and J&F.

F follows the DAVIS definition: boundaries of prediction and ground truth are matched within a
tolerance of 0.008 x the image diagonal (a disk dilation); precision and recall of boundary pixels
give F = 2PR / (P + R). A boundary pixel is a foreground pixel with a background 4-neighbour
inside the image (the image border is not a boundary). Both empty -> J = F = 1.
The semi-supervised protocol skips the first frame (given) and the last frame.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import ndimage

BOUNDARY_TOLERANCE = 0.008


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """J of one frame: |P ∩ G| / |P ∪ G|, 1.0 when both are empty."""
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs ground truth {gt.shape}")
    p, g = pred.astype(bool), gt.astype(bool)
    union = np.logical_or(p, g).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(p, g).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: foreground pixels with a background 4-neighbour (inside the image)."""
    m = mask.astype(bool)
    interior = m.copy()
    interior[1:, :] &= m[:-1, :]
    interior[:-1, :] &= m[1:, :]
    interior[:, 1:] &= m[:, :-1]
    interior[:, :-1] &= m[:, 1:]
    return m & ~interior


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUNDARY_TOLERANCE) -> float:
    """F of one frame. bound_th < 1 is a fraction of the diagonal, >= 1 a pixel radius."""
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs ground truth {gt.shape}")
    h, w = gt.shape
    radius = int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(h, w)))
    bp, bg = boundary_map(pred), boundary_map(gt)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    disk = _disk(max(radius, 0))
    g_dil = ndimage.binary_dilation(bg, structure=disk) if radius > 0 else bg
    p_dil = ndimage.binary_dilation(bp, structure=disk) if radius > 0 else bp
    precision = float((bp & g_dil).sum()) / n_p
    recall = float((bg & p_dil).sum()) / n_g
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def _as_objects(x: np.ndarray, ids: list[int] | None) -> tuple[np.ndarray, list[int]]:
    """bool [K, T, H, W] from a label map [T, H, W] (ids from `ids`, else its non-zero values) or from bool masks."""
    if x.ndim == 4:
        return x.astype(bool), list(range(1, x.shape[0] + 1)) if ids is None else ids
    if x.ndim != 3:
        raise ValueError(f"expected a label map [T, H, W] or masks [K, T, H, W], got shape {x.shape}")
    if ids is None:
        ids = [int(v) for v in np.unique(x) if v != 0]
    return np.stack([x == i for i in ids]) if ids else np.zeros((0, *x.shape), dtype=bool), ids


def davis_sequence(pred: np.ndarray, gt: np.ndarray, skip_first_last: bool = True,
                   bound_th: float = BOUNDARY_TOLERANCE) -> dict[int, dict[str, np.ndarray]]:
    """Per-object, per-frame J and F of one sequence: {object id: {"J": [T'], "F": [T']}}.

    pred / gt: int label maps [T, H, W] (0 = background) or bool [K, T, H, W] (objects in the same
    order). Objects are those of the ground truth; an object missing from the prediction scores 0.
    """
    gt_obj, ids = _as_objects(gt, None)
    if pred.ndim == 3:
        pred_obj, _ = _as_objects(pred, ids)
    else:
        pred_obj = pred.astype(bool)
        if pred_obj.shape[0] != gt_obj.shape[0]:
            raise ValueError(f"prediction has {pred_obj.shape[0]} objects, ground truth {gt_obj.shape[0]}")
    if pred_obj.shape[1:] != gt_obj.shape[1:]:
        raise ValueError(f"shape mismatch: prediction {pred_obj.shape[1:]} vs ground truth {gt_obj.shape[1:]}")
    T = gt_obj.shape[1]
    frames = range(1, T - 1) if skip_first_last and T > 2 else range(T)
    out = {}
    for k, oid in enumerate(ids):
        out[oid] = {
            "J": np.array([region_j(pred_obj[k, t], gt_obj[k, t]) for t in frames]),
            "F": np.array([boundary_f(pred_obj[k, t], gt_obj[k, t], bound_th) for t in frames]),
        }
    return out


def davis_eval(sequences: Iterable[tuple[np.ndarray, np.ndarray]], skip_first_last: bool = True,
               bound_th: float = BOUNDARY_TOLERANCE) -> dict[str, float]:
    """DAVIS summary over (prediction, ground truth) sequences: J_mean, J_recall, F_mean, F_recall, J&F.

    Means are over objects of the per-object frame means (the DAVIS benchmark's averaging);
    recall is the fraction of frames scoring above 0.5, averaged the same way.
    """
    j_mean, f_mean, j_rec, f_rec = [], [], [], []
    for pred, gt in sequences:
        for scores in davis_sequence(pred, gt, skip_first_last, bound_th).values():
            if scores["J"].size == 0:
                continue
            j_mean.append(scores["J"].mean())
            f_mean.append(scores["F"].mean())
            j_rec.append((scores["J"] > 0.5).mean())
            f_rec.append((scores["F"] > 0.5).mean())
    if not j_mean:
        raise ValueError("no objects to evaluate")
    J, F = float(np.mean(j_mean)), float(np.mean(f_mean))
    return {"J&F": (J + F) / 2.0, "J_mean": J, "J_recall": float(np.mean(j_rec)),
            "F_mean": F, "F_recall": float(np.mean(f_rec)), "objects": float(len(j_mean))}
