"""A small dense foreground / category segmentation model for fast pruning experiments.

Backbone: a timm VisionTransformer without CLS token (12 blocks by default, small width), whose
patch-grid features [B, C, h, w] go through a light per-pixel head: 1x1 conv -> GELU -> 3x3
depthwise conv -> GELU -> 1x1 conv to (1 + num_categories) classes, upsampled bilinearly to the
image size. Class 0 is background. The backbone can run dense or under any pruning runner
(`patchprune.sparse_vit` / `patchprune.learned.build`): the head only needs the restored grid.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from patchprune.vit import SparseViTOutput, sparse_vit

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)


@dataclass
class FgSegConfig:
    """Shape of an `FgSegModel`: input size and patch size (px), ViT width / depth / heads / MLP ratio,
    number of output classes (background + categories) and the head's hidden width."""

    img_size: int = 96
    patch_size: int = 8
    dim: int = 192
    depth: int = 12
    heads: int = 3
    mlp_ratio: float = 4.0
    num_classes: int = 7  # background + categories
    head_hidden: int = 64


class SegHead(nn.Module):
    """Per-pixel classifier on the restored patch grid."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(dim, hidden, 1)
        self.mix = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.classify = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, features: Tensor, size: tuple[int, int]) -> Tensor:
        h = F.gelu(self.reduce(features))
        h = F.gelu(self.mix(h)) + h
        return F.interpolate(self.classify(h), size=size, mode="bilinear", align_corners=False)


class FgSegModel(nn.Module):
    """ViT backbone + light head. `forward(images, encoder=None, stream=None)` -> (logits, runner output)."""

    def __init__(self, config: FgSegConfig | None = None) -> None:
        super().__init__()
        self.config = config or FgSegConfig()
        c = self.config
        if c.dim % c.heads:
            raise ValueError(f"width {c.dim} is not divisible by {c.heads} heads")
        self.backbone = VisionTransformer(
            img_size=c.img_size, patch_size=c.patch_size, embed_dim=c.dim, depth=c.depth, num_heads=c.heads,
            mlp_ratio=c.mlp_ratio, class_token=False, global_pool="", num_classes=0, dynamic_img_size=True,
        )
        self.head = SegHead(c.dim, c.num_classes, c.head_hidden)
        # Not a registered submodule (the backbone is registered once, as `backbone`); gather
        # execution with an empty schedule is the plain dense forward in both train and eval mode.
        self.__dict__["dense"] = sparse_vit(self.backbone, {}, execution="gather")

    def forward(self, images: Tensor, encoder: nn.Module | None = None, stream: Any = None,
                return_layers: tuple[int, ...] = ()) -> tuple[Tensor, SparseViTOutput]:
        """images: float [B, 3, H, W], already normalised (see `normalise`)."""
        enc = encoder if encoder is not None else self.dense
        out = enc(images, stream=stream, return_layers=return_layers)
        return self.head(out.features, images.shape[-2:]), out

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)


def module_device(module: nn.Module) -> torch.device:
    """The device a module's parameters live on (the CPU for a module without any): the fgseg steps
    and scorers move their CPU-held data there, so they run wherever the model was put."""
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def normalise(frames: Tensor) -> Tensor:
    """uint8 [B, H, W, 3] or [B, 3, H, W] frames -> normalised float [B, 3, H, W]."""
    x = frames
    if x.dim() != 4:
        raise ValueError(f"frames must be 4-D, got shape {tuple(x.shape)}")
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    mean = torch.tensor(IMAGE_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
