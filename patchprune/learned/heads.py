"""The small two-class selector MLP shared by SM, Map-SM and SViT.

z = LogSoftmax(FC2(GELU(FC1(LN(x))))), FC1: C -> C / hidden_div, FC2: -> 2 (class 0 = keep).
At C = 384: hidden_div 4 -> 37,922 parameters (SM), hidden_div 2 -> 75,074 (Map-SM).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SelectorMLP(nn.Module):
    """LayerNorm -> Linear(C, C/div) -> GELU -> Linear(C/div, 2) -> LogSoftmax."""

    def __init__(self, dim: int, hidden_div: int = 4) -> None:
        super().__init__()
        if dim < hidden_div or dim % hidden_div:
            raise ValueError(f"selector width {dim} must be a positive multiple of {hidden_div}")
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim // hidden_div)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim // hidden_div, 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(self.fc2(self.act(self.fc1(self.norm(x)))), dim=-1)

    def init_keep(self, rate: float, noise_scale: float = 1.0) -> None:
        """Start at a given keep rate: zero output weights, bias margin so that a Gumbel decision
        keeps with probability `rate` (see `init_keep_rate`)."""
        init_keep_rate(self.fc2, rate, noise_scale)


def init_keep_rate(layer: nn.Linear, rate: float, noise_scale: float = 1.0) -> None:
    """Zero a two-class output layer's weights and set its bias so that P(keep) = rate.

    A hard Gumbel decision keeps iff margin + noise_scale * (g0 - g1) > 0 with g0 - g1 ~ Logistic(0, 1),
    so P(keep) = sigmoid(margin / noise_scale): margin = noise_scale * logit(rate). noise_scale is
    1 / tau for the VPP convention and 1 for the standard convention with tau = 1.
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"initial keep rate must be in (0, 1), got {rate}")
    if layer.out_features != 2:
        raise ValueError("init_keep_rate needs a two-class output layer")
    margin = noise_scale * math.log(rate / (1.0 - rate))
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor([margin, 0.0], dtype=layer.bias.dtype))


def init_trunc_normal(module: nn.Module, std: float = 0.02) -> None:
    """Every Linear of `module`: weights trunc_normal_(std) (cut at +-2 absolute, as timm's), bias zero; LayerNorms
    weight 1, bias 0. The authors' init of Map-SM and of DynamicViT's predictor (timm's ViT init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
