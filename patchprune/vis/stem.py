"""A convolutional stem for the ViT's patch embedding ("early convolutions", Xiao et al. 2021).

A plain ViT embeds each patch with one linear map; from scratch it must learn local texture and
edge detectors through attention and MLPs, which is slow on a CPU budget. The stem replaces the
patch embedding's single strided convolution by stride-2 3x3 convolutions (GroupNorm + GELU;
GroupNorm so that statistics do not depend on how a batch is split between processes) and a
1x1 projection: same token grid, same token width, the transformer blocks (and the pruning after
block 1) untouched. It is installed as timm's `PatchEmbed.proj`, the slot timm itself fills with
the embedding convolution, so timm's grid bookkeeping (dynamic sizes, flatten, norm) is reused.
"""
from __future__ import annotations

import math

from timm.layers import PatchEmbed
from torch import Tensor, nn


class ConvStem(nn.Module):
    """[B, C, H, W] -> [B, dim, H / patch, W / patch] through log2(patch) stride-2 3x3 convolutions
    (width doubling up to dim / 2... dim) and a 1x1 projection to dim."""

    def __init__(self, in_channels: int, dim: int, patch: int) -> None:
        super().__init__()
        stages = int(math.log2(patch))
        if 2 ** stages != patch or stages < 1:
            raise ValueError(f"a conv stem needs a power-of-two patch size >= 2, got {patch}")
        self.in_channels, self.out_channels = in_channels, dim
        widths = [max(16, dim // 2 ** (stages - 1 - i)) for i in range(stages)]
        layers: list[nn.Module] = []
        prev = in_channels
        for w in widths:
            layers += [nn.Conv2d(prev, w, 3, stride=2, padding=1, bias=False), nn.GroupNorm(min(8, w // 4), w), nn.GELU()]
            prev = w
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(prev, dim, 1)

    @property
    def weight(self) -> Tensor:
        """The projection's weight: its dtype and device are the stem's (what runners check)."""
        return self.out.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))

    def macs(self, height: int, width: int) -> int:
        """Multiply-accumulates of one image of size height x width."""
        total, h, w = 0, height, width
        for conv in [m for m in self.body if isinstance(m, nn.Conv2d)] + [self.out]:
            h, w = (h + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1, \
                   (w + 2 * conv.padding[1] - conv.kernel_size[1]) // conv.stride[1] + 1
            total += h * w * conv.in_channels * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        return total


class ConvStemEmbed(PatchEmbed):
    """timm's `PatchEmbed` whose `proj` is a `ConvStem` (pass as the ViT's `embed_layer`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.proj = ConvStem(self.proj.in_channels, self.proj.out_channels, self.patch_size[0])


def embed_layer_kwargs(stem: str) -> dict[str, type]:
    """Keyword arguments of a timm `VisionTransformer` for a stem name: none for "patch" (timm's own
    patch embedding), `embed_layer=ConvStemEmbed` for "conv"."""
    if stem not in ("patch", "conv"):
        raise ValueError(f"stem must be 'patch' or 'conv', got {stem!r}")
    return {"embed_layer": ConvStemEmbed} if stem == "conv" else {}
