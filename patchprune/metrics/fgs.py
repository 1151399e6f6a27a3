"""FGS (foreground selectivity): how well each layer's features of a frozen dense model separate
foreground from background patches.

Per layer l a linear probe (fg / bg) is trained on frozen patch features with a class-balanced
cross-entropy whose class weights follow the running mean of the foreground share
(w_fg = 1 / (2 f), w_bg = 1 / (2 (1 - f))). FGS_l = the probe's accuracy over all held-out patches;
0.5 is chance (a random mask). Balanced accuracy is reported as well. A patch is foreground when
objects cover at least half of it (the IoI rule, without its small-instance fallback).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchprune.metrics.ioi import patch_coverage


def patch_foreground(fg: Tensor | np.ndarray, grid: tuple[int, int]) -> Tensor:
    """bool [B, H, W] pixel foreground -> bool [B, N] patch foreground (>= half of the patch)."""
    return (patch_coverage(fg, grid) >= 0.5).flatten(-2)


@dataclass
class ProbeResult:
    accuracy: float
    balanced_accuracy: float
    fg_share: float


class BalancedLinearProbe(nn.Module):
    """Standardised features -> Linear(C, 2); class weights from a running mean of the fg share."""

    def __init__(self, dim: int, momentum: float = 0.99) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 2)
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fg_share", torch.tensor(-1.0))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear((x - self.mean) / self.std)

    def class_weights(self, y: Tensor) -> Tensor:
        """Update the running fg share with this batch and return [w_bg, w_fg]."""
        share = y.float().mean()
        if float(self.fg_share) < 0:
            self.fg_share.fill_(float(share))
        else:
            self.fg_share.mul_(self.momentum).add_((1 - self.momentum) * share)
        f = float(self.fg_share.clamp(1e-3, 1 - 1e-3))
        return torch.tensor([0.5 / (1 - f), 0.5 / f])


def train_probe(x: Tensor, y: Tensor, steps: int = 300, lr: float = 1e-2, batch: int = 4096,
                seed: int = 0) -> BalancedLinearProbe:
    """Fit a balanced linear probe on features x [M, C] with labels y [M] (bool)."""
    if x.dim() != 2 or y.shape != x.shape[:1]:
        raise ValueError(f"expected features [M, C] and labels [M], got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.detach().float(), y.bool()
    probe = BalancedLinearProbe(x.shape[1])
    probe.mean.copy_(x.mean(0))
    probe.std.copy_(x.std(0).clamp(min=1e-6))
    opt = torch.optim.Adam(probe.linear.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():  # callers often extract features under no_grad
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (min(batch, x.shape[0]),), generator=gen)
            xb, yb = x[idx], y[idx]
            loss = F.cross_entropy(probe(xb), yb.long(), weight=probe.class_weights(yb))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe


@torch.no_grad()
def evaluate_probe(probe: BalancedLinearProbe, x: Tensor, y: Tensor) -> ProbeResult:
    """Score a probe on features x [M, C] with labels y [M] (bool): accuracy, balanced accuracy
    (mean of the true-positive and true-negative rates) and the foreground share of y."""
    pred = probe(x.float()).argmax(-1).bool()
    y = y.bool()
    acc = float((pred == y).float().mean())
    tpr = float((pred & y).sum() / y.sum().clamp(min=1))
    tnr = float((~pred & ~y).sum() / (~y).sum().clamp(min=1))
    return ProbeResult(acc, 0.5 * (tpr + tnr), float(y.float().mean()))


def fgs(train: Mapping[int, Tensor], train_labels: Tensor, test: Mapping[int, Tensor], test_labels: Tensor,
        steps: int = 300, lr: float = 1e-2, seed: int = 0) -> dict[int, ProbeResult]:
    """FGS per layer: probes fitted on `train` features (layer -> [M, C]) and scored on `test`."""
    if set(train) != set(test):
        raise ValueError(f"train layers {sorted(train)} and test layers {sorted(test)} differ")
    out = {}
    for layer in sorted(train):
        probe = train_probe(train[layer], train_labels, steps=steps, lr=lr, seed=seed)
        out[layer] = evaluate_probe(probe, test[layer], test_labels)
    return out
