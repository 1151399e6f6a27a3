"""Sparsity losses: the spec's formulas on known inputs and on the records of a real forward call."""
import pytest
import torch

from patchprune.learned import build, dynamicvit_loss, sparsity_loss, svit_loss, vpp_loss
from patchprune.learned.registry import LOSS_KEY
from patchprune.video import VideoStream
from test_learned_helpers import tiny_vit


def test_vpp_loss_formula():
    p, m = torch.tensor(0.6), [torch.tensor(0.5), torch.tensor(0.4), torch.tensor(0.3)]
    r = [0.56, 0.448, 0.3584]
    sm = (0.5 - 0.56) ** 2 + (0.4 - 0.448) ** 2 + (0.3 - 0.3584) ** 2
    assert float(vpp_loss(p, m, r)) == pytest.approx(40 * (10 * (0.6 - 0.5) ** 2 + sm) / 13, rel=1e-5)
    assert float(vpp_loss(None, m, r)) == pytest.approx(40 * sm / 3, rel=1e-5)  # first frame
    assert float(vpp_loss(p, m, r, lambda_sm=1, lambda_map=2, theta=0.6)) == pytest.approx(sm / 5, rel=1e-5)


def test_vpp_first_frame_loss_options():
    p, m = torch.tensor(0.6), [torch.tensor(0.5), torch.tensor(0.4), torch.tensor(0.3)]
    r = [0.56, 0.448, 0.3584]
    with_map = float(vpp_loss(p, m, r))
    # Map-SM passes are the same whatever the option; only prior-free passes change.
    for option in ("none", "live"):
        assert float(vpp_loss(p, m, r, first_frame=option, kappa=0.7)) == pytest.approx(with_map, rel=1e-6)
    assert float(vpp_loss(None, m, r, first_frame="none")) == 0.0
    live = sum((k - t / 0.7) ** 2 for k, t in zip((0.5, 0.4, 0.3), r))
    assert float(vpp_loss(None, m, r, first_frame="live", kappa=0.7)) == pytest.approx(40 * live / 3, rel=1e-5)
    with pytest.raises(ValueError, match="needs kappa"):
        vpp_loss(None, m, r, first_frame="live")
    with pytest.raises(ValueError, match="first_frame must be one of"):
        vpp_loss(None, m, r, first_frame="skip")


def test_vpp_first_frame_loss_reaches_the_runner_loss():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    losses = {}
    for option in ("spec", "none"):
        torch.manual_seed(1)
        pruner = build("vpp", tiny_vit(), 0.55, first_frame_loss=option, noise=False).train()
        losses[option] = float(pruner(x, stream=VideoStream()).aux[LOSS_KEY].detach())
    assert losses["none"] == 0.0 and losses["spec"] > 0.0  # the first frame has no Map-SM prior
    with pytest.raises(ValueError, match="first_frame_loss"):
        build("vpp", tiny_vit(), 0.55, first_frame_loss="skip")


def test_svit_and_dynamicvit_loss_formulas():
    keeps = [torch.tensor(0.8), torch.tensor(0.5)]
    assert float(svit_loss(keeps, [0.7, 0.49])) == pytest.approx(4 * ((0.1**2) + (0.01**2)) / 2, rel=1e-5)
    per_sample = [torch.tensor([0.5, 0.7]), torch.tensor([0.4, 0.2])]
    expected = 2 * (((0.1**2 + 0.1**2) / 2) + ((0.04**2 + 0.16**2) / 2)) / 2
    assert float(dynamicvit_loss(per_sample, [0.6, 0.36])) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError):
        svit_loss(keeps, [0.7])
    with pytest.raises(ValueError, match="no sparsity loss"):
        sparsity_loss("evit", {}, [])


@pytest.mark.parametrize("training", [True, False])
def test_vpp_loss_from_a_forward_matches_the_keep_masks(training):
    pruner = build("vpp", tiny_vit(), 0.55).train(training)
    stream = VideoStream()
    x = torch.randn(2, 3, 48, 48)
    with torch.set_grad_enabled(training):
        first = pruner(x, stream=stream)
        second = pruner(x + 0.1, stream=stream)
    r = pruner.config.targets
    for out, with_map in ((first, False), (second, True)):
        km = out.keep_masks
        sm = [km[p].float().mean() for p in (3, 6, 9)]  # cumulative masks relative to all N tokens
        prob = out.aux["sparsity"][1].prob_mean if with_map else None
        assert (prob is not None) == with_map
        assert float(out.aux[LOSS_KEY].detach()) == pytest.approx(float(vpp_loss(prob, sm, r).detach()), rel=1e-4, abs=1e-6)


def test_dynamicvit_loss_from_a_training_forward():
    pruner = build("dynamicvit", tiny_vit(), 0.40).train()
    out = pruner(torch.randn(3, 3, 48, 48))
    keeps = [out.keep_masks[p].float().mean(1) for p in (3, 6, 9)]
    assert float(out.aux[LOSS_KEY].detach()) == pytest.approx(float(dynamicvit_loss(keeps, [0.4, 0.16, 0.064])), rel=1e-4)
