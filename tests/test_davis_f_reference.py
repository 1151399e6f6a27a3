"""DAVIS boundary F (`metrics/davis.py`) against an independent implementation of the published definition.

The reference below is written from the definitions, not from davis.py, and computes differently:
- boundary map (DAVIS `seg2bmap`, after Martin et al.'s BSDS code): a pixel is a boundary pixel when
  it differs from one of its right, bottom or bottom-right neighbours that lies inside the image
  (explicit per-pixel loop; the last row has only a right neighbour, the last column only a bottom
  one, the bottom-right pixel none);
- tolerance: a boundary pixel is matched when a boundary pixel of the other mask lies within
  Euclidean distance r = ceil(0.008 x diagonal) (DAVIS dilates by a disk X^2 + Y^2 <= r^2, which is
  the same set), found here by exact integer squared distances between all boundary pixel pairs
  instead of a morphological dilation;
- precision = matched predicted / predicted boundary pixels, recall likewise, F = 2PR / (P + R);
  no boundary on both sides -> 1, on one side only -> 0 (DAVIS `f_measure`).
Every comparison is exact (same integer counts, same float formula).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from patchprune.metrics.davis import boundary_f, boundary_map


def reference_boundary(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    return _reference_boundary(m.tobytes(), m.shape).copy()


@functools.lru_cache(maxsize=4096)
def _reference_boundary(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    m = np.frombuffer(data, dtype=bool).reshape(shape)
    h, w = shape
    out = np.zeros((h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            for di, dj in ((0, 1), (1, 0), (1, 1)):
                ii, jj = i + di, j + dj
                if ii < h and jj < w and m[ii, jj] != m[i, j]:
                    out[i, j] = True
    return out


def reference_matched(points: np.ndarray, others: np.ndarray, radius: int) -> int:
    """How many of `points` [n, 2] lie within Euclidean distance `radius` of one of `others` [m, 2]."""
    if len(points) == 0 or len(others) == 0:
        return 0
    d2 = ((points[:, None, :].astype(np.int64) - others[None, :, :].astype(np.int64)) ** 2).sum(-1)
    return int((d2.min(axis=1) <= radius * radius).sum())


def reference_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> tuple[float, dict[str, int]]:
    h, w = gt.shape
    radius = int(bound_th) if bound_th >= 1 else int(np.ceil(bound_th * np.linalg.norm([h, w])))
    bp, bg = np.argwhere(reference_boundary(pred)), np.argwhere(reference_boundary(gt))
    counts = {"n_pred": len(bp), "n_gt": len(bg), "radius": radius,
              "pred_matched": reference_matched(bp, bg, radius), "gt_matched": reference_matched(bg, bp, radius)}
    if len(bp) == 0 and len(bg) == 0:
        return 1.0, counts
    if len(bp) == 0 or len(bg) == 0:
        return 0.0, counts
    precision = counts["pred_matched"] / len(bp)
    recall = counts["gt_matched"] / len(bg)
    if precision + recall == 0:
        return 0.0, counts
    return 2.0 * precision * recall / (precision + recall), counts


def _blobs(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A few rectangles and discs, some clipped by the image border."""
    m = np.zeros((h, w), dtype=bool)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.integers(-h // 4, h + h // 4), rng.integers(-w // 4, w + w // 4)
        if rng.random() < 0.5:
            ry, rx = rng.integers(1, max(2, h // 2)), rng.integers(1, max(2, w // 2))
            m |= (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
        else:
            r = rng.integers(1, max(2, min(h, w) // 2))
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return m


def _perturb(rng: np.random.Generator, m: np.ndarray) -> np.ndarray:
    """A prediction near the ground truth: shifted, with pixel noise, or unrelated (pure noise only on
    small masks, which keeps the all-pairs reference fast)."""
    choice = rng.integers(0, 4 if m.size <= 2500 else 3)
    if choice == 0:
        dy, dx = rng.integers(-4, 5, size=2)
        return np.roll(np.roll(m, int(dy), axis=0), int(dx), axis=1)
    if choice == 1:
        return m ^ (rng.random(m.shape) < 0.05)
    if choice == 2:
        return _blobs(rng, *m.shape)
    return rng.random(m.shape) < 0.5


SHAPES = [(1, 1), (1, 9), (9, 1), (2, 2), (7, 13), (13, 7), (24, 24), (31, 64), (64, 31), (90, 120), (130, 40)]


def _cases(seed: int = 0, per_shape: int = 12):
    rng = np.random.default_rng(seed)
    for h, w in SHAPES:
        empty, full = np.zeros((h, w), bool), np.ones((h, w), bool)
        yield empty, empty
        yield full, full
        yield empty, full
        blob = _blobs(rng, h, w)
        yield blob, empty
        yield full, blob
        border = np.zeros((h, w), bool)
        border[-1, :] = True  # touching the bottom border only
        yield border, blob
        border2 = np.zeros((h, w), bool)
        border2[:, -max(1, w // 3):] = True  # touching the right border
        yield border2, border
        for _ in range(per_shape):
            noise = h * w <= 2500 and rng.random() < 0.2
            gt = rng.random((h, w)) < 0.3 if noise else _blobs(rng, h, w)
            yield _perturb(rng, gt), gt


def test_boundary_map_equals_the_reference_on_random_masks():
    n = 0
    for pred, gt in _cases(seed=1):
        for m in (pred, gt):
            assert np.array_equal(boundary_map(m), reference_boundary(m)), m.shape
            n += 1
    assert n > 300


def test_boundary_f_equals_the_reference_exactly_on_random_masks():
    values = []
    for pred, gt in _cases(seed=2):
        ref, counts = reference_f(pred, gt)
        got = boundary_f(pred, gt)
        assert got == ref, (pred.shape, counts, got, ref)
        values.append(ref)
    values = np.array(values)
    # the cases span the whole range, not only the degenerate 0 / 1 ends
    assert (values == 0).any() and (values == 1).any() and ((values > 0.05) & (values < 0.95)).sum() > 50


@pytest.mark.parametrize("bound_th", [1, 2, 5, 0.02])
def test_boundary_f_equals_the_reference_with_other_tolerances(bound_th):
    for pred, gt in _cases(seed=3, per_shape=4):
        assert boundary_f(pred, gt, bound_th=bound_th) == reference_f(pred, gt, bound_th)[0]


def test_reference_hand_made_values():
    """The reference itself on cases worked out by hand (so it cannot be wrong in the same way)."""
    gt = np.zeros((10, 10), bool)
    gt[3:6, 3:6] = True  # 3x3 square, rows / cols 3..5
    b = reference_boundary(gt)
    # seg2bmap: the row above (cols 2..5) and the column left (rows 3..5) of the square, plus its own
    # right column and bottom row; its top-left interior differs from no right / bottom neighbour
    expected = {(2, 2), (2, 3), (2, 4), (2, 5), (3, 2), (4, 2), (5, 2), (3, 5), (4, 5), (5, 5), (5, 3), (5, 4)}
    assert {tuple(p) for p in np.argwhere(b)} == expected
    assert np.array_equal(boundary_map(gt), b)
    assert math.ceil(0.008 * math.hypot(10, 10)) == 1
    # the same square at cols 7..9 (touching the right border, where only the bottom neighbour
    # counts): 10 boundary px; within distance 1 of each other only the pairs (r, 5) - (r, 6), r = 2..5
    far = np.roll(gt, 4, axis=1)
    f, counts = reference_f(far, gt)
    assert (counts["n_pred"], counts["n_gt"], counts["pred_matched"], counts["gt_matched"]) == (10, 12, 4, 4)
    assert f == pytest.approx(4 / 11) and boundary_f(far, gt) == f
    assert reference_f(gt, gt)[0] == 1.0
