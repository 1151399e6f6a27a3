"""DAVIS video object segmentation metrics: J (region IoU), F (boundary F-measure) and J&F.

As the DAVIS benchmark (davis2017-evaluation) computes them:
- J = |P ∩ G| / |P ∪ G|, 1 when both are empty.
- F: boundaries are the published seg2bmap maps (`boundary_map`): a pixel is a boundary pixel
  when it differs from its right, bottom or bottom-right neighbour (so a background pixel just
  left of / above the object counts too); on the last row only the right neighbour is compared, on
  the last column only the bottom one, the bottom-right corner never is, and nothing outside the
  image is (the image border is not a boundary). Maps are taken at the mask's own size. Each map
  is dilated by a disk of radius ceil(0.008 x image diagonal); precision = predicted boundary
  pixels inside the dilated ground-truth boundary / predicted boundary pixels, recall likewise,
  F = 2PR / (P + R). No boundary on either side -> F = 1; on one side only -> F = 0.
- Semi-supervised objects: ids 1..max of the first ground-truth frame (an id missing there but
  below the max still counts; ids appearing only later do not); label 255 (void) is background.
  A predicted id above that max is an error, as in the benchmark; missing objects score 0.
- The first frame (given) and the last frame are skipped (all frames when T <= 2, where the
  benchmark would average nothing); means are over objects of the per-object frame means.
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
    """bool [H, W] seg2bmap boundary: pixels differing from their right, bottom or bottom-right neighbour.

    Neighbours outside the image are not compared (last row: right only; last column: bottom only;
    bottom-right corner: never), so a mask touching the bottom / right border has no boundary there.
    """
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {m.shape}")
    b = np.zeros_like(m)
    b[:, :-1] |= m[:, :-1] != m[:, 1:]  # right neighbour
    b[:-1, :] |= m[:-1, :] != m[1:, :]  # bottom neighbour
    b[:-1, :-1] |= m[:-1, :-1] != m[1:, 1:]  # bottom-right neighbour
    return b


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUNDARY_TOLERANCE) -> float:
    """F of one frame. bound_th < 1 is a fraction of the diagonal, >= 1 a pixel radius."""
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs ground truth {gt.shape}")
    h, w = gt.shape
    radius = int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.sqrt(h * h + w * w)))
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


VOID_LABEL = 255


def first_frame_objects(gt: np.ndarray) -> list[int]:
    """Semi-supervised object ids of a ground-truth label map [T, H, W]: 1..max of frame 0 (void excluded)."""
    if gt.ndim != 3 or gt.shape[0] == 0:
        raise ValueError(f"ground truth must be a label map [T, H, W] with T >= 1, got shape {gt.shape}")
    first = np.where(gt[0] == VOID_LABEL, 0, gt[0])
    return list(range(1, int(first.max()) + 1)) if first.size else []


def _label_objects(labels: np.ndarray, ids: list[int]) -> np.ndarray:
    """bool [K, T, H, W]: one mask per id of a label map [T, H, W]."""
    return np.stack([labels == i for i in ids]) if ids else np.zeros((0, *labels.shape), dtype=bool)


def davis_sequence(pred: np.ndarray, gt: np.ndarray, skip_first_last: bool = True,
                   bound_th: float = BOUNDARY_TOLERANCE) -> dict[int, dict[str, np.ndarray]]:
    """Per-object, per-frame J and F of one sequence: {object id: {"J": [T'], "F": [T']}}.

    pred / gt: int label maps [T, H, W] (0 = background) or bool [K, T, H, W] (objects in the same
    order, ids 1..K). A ground-truth label map's objects are ids 1..max of its first frame (255 =
    void = background); a prediction with more objects than that is an error (as in the DAVIS
    benchmark), an object missing from the prediction scores 0.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if gt.ndim == 3:
        ids = first_frame_objects(gt)
        gt_obj = _label_objects(np.where(gt == VOID_LABEL, 0, gt), ids)
    elif gt.ndim == 4:
        gt_obj, ids = gt.astype(bool), list(range(1, gt.shape[0] + 1))
    else:
        raise ValueError(f"gt must be a label map [T, H, W] or masks [K, T, H, W], got shape {gt.shape}")
    T = gt_obj.shape[1]
    frames = list(range(1, T - 1)) if skip_first_last and T > 2 else list(range(T))
    if pred.ndim == 3:
        if pred.shape != gt_obj.shape[1:]:
            raise ValueError(f"shape mismatch: prediction {pred.shape} vs ground truth {gt_obj.shape[1:]}")
        top = int(pred[frames].max()) if pred.size else 0
        if top > len(ids):
            raise ValueError(f"prediction has object id {top} but the ground truth's first frame has "
                             f"objects 1..{len(ids)}; label predictions with the first frame's ids")
        pred_obj = _label_objects(pred, ids)
    elif pred.ndim == 4:
        pred_obj = pred.astype(bool)
        if pred_obj.shape[0] > len(ids):
            raise ValueError(f"prediction has {pred_obj.shape[0]} objects, ground truth {len(ids)}")
        missing = len(ids) - pred_obj.shape[0]
        if missing:
            pred_obj = np.concatenate([pred_obj, np.zeros((missing, *pred_obj.shape[1:]), dtype=bool)])
    else:
        raise ValueError(f"pred must be a label map [T, H, W] or masks [K, T, H, W], got shape {pred.shape}")
    if pred_obj.shape[1:] != gt_obj.shape[1:]:
        raise ValueError(f"shape mismatch: prediction {pred_obj.shape[1:]} vs ground truth {gt_obj.shape[1:]}")
    out = {}
    for k, oid in enumerate(ids):
        out[oid] = {
            "J": np.array([region_j(pred_obj[k, t], gt_obj[k, t]) for t in frames]),
            "F": np.array([boundary_f(pred_obj[k, t], gt_obj[k, t], bound_th) for t in frames]),
        }
    return out


def decay(values: np.ndarray) -> float:
    """DAVIS decay of per-frame scores: mean of the first quarter minus mean of the last quarter.

    Quarters as the benchmark cuts them: bin edges round(linspace(1, n, 5)) - 1, each bin from its
    edge to the next one inclusive (neighbouring bins share a frame).
    """
    n = len(values)
    if n == 0:
        raise ValueError("decay needs at least one frame")
    edges = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    first = values[edges[0]:edges[1] + 1]
    last = values[edges[3]:edges[4] + 1]
    return float(np.mean(first) - np.mean(last))


def davis_eval(sequences: Iterable[tuple[np.ndarray, np.ndarray]], skip_first_last: bool = True,
               bound_th: float = BOUNDARY_TOLERANCE) -> dict[str, float]:
    """DAVIS summary over (prediction, ground truth) sequences: J&F, J / F mean, recall and decay.

    Means are over objects of the per-object frame means (the DAVIS benchmark's averaging);
    recall is the fraction of frames scoring above 0.5 and decay the first-quarter minus
    last-quarter mean (`decay`), averaged the same way.
    """
    stats: dict[str, list[float]] = {k: [] for k in ("J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay")}
    for pred, gt in sequences:
        for scores in davis_sequence(pred, gt, skip_first_last, bound_th).values():
            if scores["J"].size == 0:
                continue
            for m in ("J", "F"):
                stats[f"{m}_mean"].append(float(scores[m].mean()))
                stats[f"{m}_recall"].append(float((scores[m] > 0.5).mean()))
                stats[f"{m}_decay"].append(decay(scores[m]))
    if not stats["J_mean"]:
        raise ValueError("no objects to evaluate")
    out = {k: float(np.mean(v)) for k, v in stats.items()}
    return {"J&F": (out["J_mean"] + out["F_mean"]) / 2.0, **out, "objects": float(len(stats["J_mean"]))}
