"""FGS probes: class-balanced weights, chance on noise, high accuracy on separable features."""
import numpy as np
import pytest
import torch

from patchprune.metrics.fgs import BalancedLinearProbe, fgs, patch_foreground


def _data(n, separable, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=g) < 0.1  # 10 % foreground: an always-background probe scores 0.9
    x = torch.randn(n, 8, generator=g)
    if separable:
        x[:, 0] += 3.0 * y.float()
    return x, y


def test_fgs_separable_layer_beats_noise_layer():
    xs, ys = _data(4000, True, 0)
    xn, _ = _data(4000, False, 1)
    ts, yt = _data(2000, True, 2)
    tn, _ = _data(2000, False, 3)
    res = fgs({0: xn, 1: xs}, ys, {0: tn, 1: ts}, yt, steps=200, lr=0.05)
    assert res[1].accuracy > 0.9 and res[1].balanced_accuracy > 0.9
    # balanced training keeps a noise layer near chance instead of predicting "background" everywhere
    assert res[0].balanced_accuracy == pytest.approx(0.5, abs=0.06)
    assert res[0].accuracy < 0.8
    assert res[1].fg_share == pytest.approx(float(yt.float().mean()))


def test_running_mean_class_weights():
    probe = BalancedLinearProbe(4, momentum=0.5)
    w = probe.class_weights(torch.tensor([True, False, False, False]))
    assert torch.allclose(w, torch.tensor([0.5 / 0.75, 0.5 / 0.25]))
    w = probe.class_weights(torch.tensor([True, True, False, False]))  # share -> 0.5 * 0.25 + 0.5 * 0.5
    assert torch.allclose(w, torch.tensor([0.5 / 0.625, 0.5 / 0.375]))


def test_patch_foreground_half_rule():
    fg = np.zeros((1, 4, 4), dtype=bool)
    fg[0, :2, :1] = True  # half of patch 0
    fg[0, 2:, 2:3] = True  # half of patch 3
    fg[0, 0, 3] = True  # a quarter of patch 1
    assert patch_foreground(fg, (2, 2)).tolist() == [[True, False, False, True]]
    with pytest.raises(ValueError):
        fgs({0: torch.zeros(3, 2)}, torch.zeros(3, dtype=torch.bool), {1: torch.zeros(3, 2)}, torch.zeros(3))


def test_probe_and_bucket_helpers_are_exported_from_patchprune_metrics():
    import importlib

    import patchprune.metrics as m

    # the submodules (patchprune.metrics.fgs / .ioi are the functions of the same names)
    fgs_module = importlib.import_module("patchprune.metrics.fgs")
    ioi_module = importlib.import_module("patchprune.metrics.ioi")

    for name in ("train_probe", "evaluate_probe", "patch_foreground"):
        assert getattr(m, name) is getattr(fgs_module, name) and name in m.__all__
    for name in ("patch_coverage", "size_bucket", "SIZE_THRESHOLDS"):
        assert getattr(m, name) is getattr(ioi_module, name) and name in m.__all__
