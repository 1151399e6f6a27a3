"""Simple feature pyramid (ViTDet): one ViT grid at stride p -> maps at strides 4, 8, 16, 32.

Why: the Mask2Former pixel decoder wants four scales; a plain ViT has one. Finer levels come from
2x transposed convolutions, coarser ones from max-pooling, then a 1x1 projection to `out_dim`.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

PYRAMID_STRIDES = (4, 8, 16, 32)


def _resampler(dim: int, factor: float) -> nn.Module:
    """Upsample by `factor` (power of two > 1) with transposed convs, downsample with max-pool."""
    if factor == 1:
        return nn.Identity()
    if factor < 1:
        k = int(round(1 / factor))
        return nn.MaxPool2d(kernel_size=k, stride=k)
    layers: list[nn.Module] = []
    for i in range(int(math.log2(factor))):
        if i:
            layers += [nn.GroupNorm(1, dim), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class SimpleFeaturePyramid(nn.Module):
    """[B, C, h, w] grid at stride `patch` -> list of 4 maps [B, out_dim, H/s, W/s], s = 4, 8, 16, 32."""

    def __init__(self, in_dim: int, out_dim: int, patch: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        for s in PYRAMID_STRIDES:
            self.levels.append(nn.Sequential(
                _resampler(in_dim, patch / s),
                nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False),
                nn.GroupNorm(32 if out_dim % 32 == 0 else 1, out_dim),
                nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False),
                nn.GroupNorm(32 if out_dim % 32 == 0 else 1, out_dim),
            ))

    def forward(self, grid: Tensor) -> list[Tensor]:
        return [level(grid) for level in self.levels]
