"""Gumbel utilities: the VPP temperature convention, straight-through hard samples, noise off."""
import math

import pytest
import torch
import torch.nn.functional as F

from patchprune.learned.gumbel import gumbel_noise, gumbel_softmax, keep_decision, perturb, straight_through


def _keep_rate(margin: float, tau: float, convention: str, n: int = 40000) -> float:
    torch.manual_seed(0)
    z = torch.tensor([margin, 0.0]).expand(n, 2).contiguous()
    mask = keep_decision(z, tau=tau, noise=True, convention=convention)
    return float(mask.mean())


def test_vpp_convention_scales_noise_down():
    # keep iff margin + (g0 - g1) / tau > 0; g0 - g1 ~ Logistic(0, 1) -> P = sigmoid(margin * tau)
    assert _keep_rate(0.5, 10.0, "vpp") == pytest.approx(1 / (1 + math.exp(-5.0)), abs=0.01)
    # standard convention: the temperature does not change the argmax -> P = sigmoid(margin)
    assert _keep_rate(0.5, 10.0, "standard") == pytest.approx(1 / (1 + math.exp(-0.5)), abs=0.01)


def test_torch_gumbel_softmax_equals_scaled_logits_in_vpp_convention():
    # the spec's warning: torch's gumbel_softmax(z, tau) is our VPP softmax of z * tau with tau
    z = torch.randn(5, 7)
    g = gumbel_noise(z, torch.Generator().manual_seed(3))
    ours = F.softmax(z * 10 + g / 10, dim=-1)
    torch_form = F.softmax((z * 10 * 10 + g) / 10, dim=-1)
    assert torch.allclose(ours, torch_form, atol=1e-6)
    gen = torch.Generator().manual_seed(3)
    assert torch.allclose(perturb(z, 10.0, True, "vpp", gen), z + g / 10)


def test_hard_is_one_hot_with_soft_gradient():
    z = torch.randn(4, 6, requires_grad=True)
    y = gumbel_softmax(z, tau=10.0, hard=True, noise=False)
    assert torch.allclose(y.detach(), y.detach().round(), atol=1e-6)
    assert torch.allclose(y.detach().sum(-1), torch.ones(4))
    assert torch.equal(y.detach().argmax(-1), z.detach().argmax(-1))
    w = torch.randn(4, 6)
    (y * w).sum().backward()
    z2 = z.detach().clone().requires_grad_(True)
    (F.softmax(z2, -1) * w).sum().backward()
    assert torch.allclose(z.grad, z2.grad, atol=1e-6)


def test_noise_off_is_deterministic_and_masked_logits_stay_impossible():
    z = torch.tensor([[1.0, float("-inf"), 0.5]])
    for _ in range(20):
        y = gumbel_softmax(z, tau=10.0, noise=True)
        assert y[0, 1] == 0
    z = torch.randn(3, 5, 2)
    assert torch.equal(keep_decision(z, 10.0, noise=False), keep_decision(z, 10.0, noise=False))
    assert torch.allclose(keep_decision(z, 10.0, noise=False), (z[..., 0] >= z[..., 1]).float())


def test_straight_through_value_and_bad_inputs():
    soft = torch.tensor([0.3, 0.7], requires_grad=True)
    out = straight_through(torch.tensor([0.0, 1.0]), soft)
    assert torch.allclose(out, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="positive"):
        perturb(torch.zeros(2), tau=0.0)
    with pytest.raises(ValueError, match="two-class"):
        keep_decision(torch.zeros(3, 3), tau=1.0)
