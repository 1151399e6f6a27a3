"""IoI on hand-made masks: the half-area patch rule, the small-instance fallback, S / M / L buckets,
and PKR as a ratio of sums over frames."""
import numpy as np
import pytest
import torch

from patchprune.metrics.ioi import IoIMeter, ioi, patch_masks, size_bucket
from patchprune.metrics.pkr import keep_ratio_per_block, pkr


def test_patch_rule_half_area_and_fallback():
    m = np.zeros((8, 8), dtype=bool)
    m[0:4, 0:2] = True  # half of patch (0, 0) in a 2 x 2 grid of 4 x 4 px patches
    m[4:5, 4:5] = True  # 1/16 of patch (1, 1)
    g = patch_masks(np.stack([m]), (2, 2))
    assert g.tolist() == [[True, False, False, False]]
    tiny = np.zeros((1, 8, 8), dtype=bool)
    tiny[0, 5, 1] = True  # covers no patch by half -> falls back to its most-covered patch
    assert patch_masks(tiny, (2, 2)).tolist() == [[False, False, True, False]]
    assert patch_masks(np.zeros((1, 8, 8), dtype=bool), (2, 2)).tolist() == [[False] * 4]


def test_ioi_on_hand_made_masks():
    # 2 x 2 grid, 8 x 8 px frame. Instance A covers patches 0 and 1; instance B covers patch 3.
    a = np.zeros((8, 8), dtype=bool)
    a[0:4, :] = True
    b = np.zeros((8, 8), dtype=bool)
    b[4:8, 4:8] = True
    keep = {
        0: torch.tensor([[True, True, True, True]]),
        1: torch.tensor([[True, False, False, True]]),
        2: torch.tensor([[False, False, False, False]]),
    }
    out = ioi(keep, [np.stack([a, b])], (2, 2), thresholds=(0.3, 0.4))
    ioi_a = (1 + 0.5 + 0) / 3
    ioi_b = (1 + 1 + 0) / 3
    assert out["ioi"] == pytest.approx((ioi_a + ioi_b) / 2)
    assert out["n"] == 2
    # A covers 50 % of the frame (L), B 25 % (S with thresholds 0.3 / 0.4)
    assert out["L"] == pytest.approx(ioi_a) and out["S"] == pytest.approx(ioi_b) and out["M"] is None
    assert out["n_S"] == 1 and out["n_M"] == 0 and out["n_L"] == 1


def test_meter_accumulates_frames_and_skips_empty_instances():
    meter = IoIMeter()
    inst = np.zeros((1, 8, 8), dtype=bool)
    inst[0, :4, :4] = True
    meter.update({0: torch.tensor([[True, False, False, False], [False] * 4])},
                 [inst, np.zeros((0, 8, 8), dtype=bool)], (2, 2))
    meter.update({0: torch.tensor([[False, False, False, False]])}, [np.concatenate([inst, np.zeros_like(inst)])], (2, 2))
    res = meter.compute()
    assert res["n"] == 2 and res["ioi"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="instance lists"):
        meter.update({0: torch.ones(2, 4, dtype=torch.bool)}, [inst], (2, 2))
    with pytest.raises(ValueError, match="thresholds"):
        size_bucket(torch.zeros(1), (0.5, 0.1))


def test_pkr_is_a_ratio_of_sums_over_frames():
    f1 = {0: torch.ones(1, 4, dtype=torch.bool), 1: torch.tensor([[True, False, False, False]])}
    f2 = {0: torch.ones(1, 4, dtype=torch.bool), 1: torch.tensor([[True, True, True, False]])}
    assert keep_ratio_per_block([f1, f2]) == pytest.approx([1.0, 0.5])
    assert pkr([f1, f2]) == pytest.approx(0.75)
