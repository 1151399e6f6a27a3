"""The small two-class selector MLP shared by SM, Map-SM and SViT.

z = LogSoftmax(FC2(GELU(FC1(LN(x))))), FC1: C -> C / hidden_div, FC2: -> 2 (class 0 = keep).
At C = 384: hidden_div 4 -> 37,922 parameters (SM), hidden_div 2 -> 75,074 (Map-SM).
"""
from __future__ import annotations

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


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
