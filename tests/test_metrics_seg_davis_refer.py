"""DAVIS J / F / J&F and referring gIoU / cIoU on hand-made masks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from patchprune.metrics.davis import boundary_f, boundary_map, davis_eval, davis_sequence, region_j
from patchprune.metrics.refer import ReferMeter, refer_iou


def _square(h, w, y, x, s):
    m = np.zeros((h, w), dtype=bool)
    m[y:y + s, x:x + s] = True
    return m


def test_region_j():
    a = _square(10, 10, 0, 0, 4)  # 16 px
    b = _square(10, 10, 0, 2, 4)  # overlaps 8 px
    assert region_j(a, b) == pytest.approx(8 / 24)
    assert region_j(a, a) == 1.0
    z = np.zeros((10, 10), bool)
    assert region_j(z, z) == 1.0 and region_j(a, z) == 0.0
    with pytest.raises(ValueError):
        region_j(a, np.zeros((5, 5), bool))


def test_boundary_map_of_a_square():
    b = boundary_map(_square(20, 20, 5, 5, 10))
    # seg2bmap: a closed contour half a pixel up-left: the background row above and column left of
    # the square (11 + 10 px) and the square's own bottom row and right column (10 + 9 px).
    assert b.sum() == 40
    assert b[4, 4:15].all() and b[5:15, 4].all() and b[14, 5:15].all() and b[5:14, 14].all()
    assert not b[5, 5]  # the top-left foreground corner has only foreground to its right / below
    assert boundary_map(np.ones((6, 6), bool)).sum() == 0  # the image border is not a boundary


def test_boundary_f_hand_made():
    gt = _square(60, 60, 5, 5, 10)  # boundary: 40 px (seg2bmap)
    assert boundary_f(gt, gt) == 1.0
    extra = gt | _square(60, 60, 40, 40, 5)  # adds a far blob with 20 boundary px
    p, r = 40 / 60, 1.0
    assert boundary_f(extra, gt) == pytest.approx(2 * p * r / (p + r))
    far = _square(60, 60, 40, 40, 10)
    assert boundary_f(far, gt) == 0.0
    z = np.zeros_like(gt)
    assert boundary_f(z, z) == 1.0 and boundary_f(z, gt) == 0.0
    # A 1-pixel shift is within the default tolerance (ceil(0.008 * diag) = 1 px here) ...
    shifted = _square(60, 60, 5, 6, 10)
    assert math.ceil(0.008 * math.hypot(60, 60)) == 1
    assert boundary_f(shifted, gt) == 1.0
    # ... a 3-pixel shift is not, unless the tolerance grows.
    shifted3 = _square(60, 60, 5, 8, 10)
    assert boundary_f(shifted3, gt) < 1.0
    assert boundary_f(shifted3, gt, bound_th=3) == 1.0


def test_davis_sequence_skips_first_and_last_frames():
    T = 5
    gt = np.zeros((T, 30, 30), dtype=np.int32)
    for t in range(T):
        gt[t][_square(30, 30, 5, 5, 8)] = 1
        gt[t][_square(30, 30, 18, 18, 6)] = 2
    pred = gt.copy()
    pred[0] = 0  # wrong on the first and last frames only
    pred[-1] = 0
    res = davis_eval([(pred, gt)])
    assert res["J_mean"] == 1.0 and res["F_mean"] == 1.0 and res["J&F"] == 1.0 and res["objects"] == 2
    full = davis_eval([(pred, gt)], skip_first_last=False)
    assert full["J_mean"] == pytest.approx(3 / 5) and full["J_recall"] == pytest.approx(3 / 5)
    # Object 2 missing from the prediction scores 0 on it.
    pred2 = gt.copy()
    pred2[pred2 == 2] = 0
    per_obj = davis_sequence(pred2, gt)
    assert per_obj[1]["J"].mean() == 1.0 and per_obj[2]["J"].mean() == 0.0
    assert davis_eval([(pred2, gt)])["J_mean"] == pytest.approx(0.5)
    # Masks [K, T, H, W] give the same numbers as label maps.
    stack_p = np.stack([pred2 == 1, pred2 == 2])
    stack_g = np.stack([gt == 1, gt == 2])
    assert davis_eval([(stack_p, stack_g)]) == davis_eval([(pred2, gt)])
    with pytest.raises(ValueError):
        davis_eval([])


def test_giou_ciou_and_empty_empty_rule():
    t1 = _square(4, 4, 0, 0, 2)  # 4 px
    p1 = np.zeros((4, 4), bool)
    p1[0:2, 0:1] = True  # I = 2, U = 4
    t2 = np.zeros((4, 4), bool)  # nothing referred, nothing predicted -> IoU 1
    p3 = _square(4, 4, 2, 2, 2)  # I = 0, U = 8
    t3 = _square(4, 4, 0, 0, 2)
    res = refer_iou([p1, t2, p3], [t1, t2, t3])
    assert res["gIoU"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert res["cIoU"] == pytest.approx(2 / 12)
    assert res["samples"] == 3
    m = ReferMeter()
    assert m.update(np.zeros((2, 3, 3), bool), np.zeros((2, 3, 3), bool)) == 1.0  # video sample, empty-empty
    # gIoU keeps the empty-empty rule, but cIoU of a data set with no union at all is 0 (LISA / ReLA).
    assert m.compute()["gIoU"] == 1.0 and m.compute()["cIoU"] == 0.0
    with pytest.raises(ValueError):
        m.update(np.zeros((3, 3), bool), np.zeros((2, 2), bool))
    with pytest.raises(ValueError):
        refer_iou([], [])
