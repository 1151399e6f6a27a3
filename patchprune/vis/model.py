"""The VIS model: timm ViT (no CLS) -> simple feature pyramid -> Mask2Former head.

The backbone runs through a runner (`sparse_vit` dense by default, or a `LearnedPruner` /
`SparseViT` built on `model.backbone`), which returns the restored full grid: the pyramid and the
head see a dense map whatever was pruned.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from patchprune.vis.config import VISConfig
from patchprune.vis.head import HeadOutput, Mask2FormerHead
from patchprune.vis.pyramid import SimpleFeaturePyramid
from patchprune.vit import SparseViTOutput, sparse_vit

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class VISOutput:
    """Head output plus the backbone runner's output (keep masks, PKR, sparsity aux)."""

    head: HeadOutput
    backbone: SparseViTOutput

    @property
    def class_logits(self) -> Tensor:
        """Last decoder layer's class logits [B, Q, K+1]."""
        return self.head.class_logits[-1]

    @property
    def mask_logits(self) -> Tensor:
        """Last decoder layer's mask logits [B, Q, H/4, W/4]."""
        return self.head.mask_logits[-1]


def build_backbone(cfg: VISConfig) -> nn.Module:
    """A timm ViT without CLS token taking any image size (`dynamic_img_size`)."""
    if cfg.backbone == "vit":
        from patchprune.vis.stem import embed_layer_kwargs

        extra = embed_layer_kwargs(cfg.stem)
        return VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.dim, depth=cfg.depth,
                                 num_heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, class_token=False, global_pool="",
                                 num_classes=0, dynamic_img_size=True, **extra)
    try:
        model = timm.create_model(cfg.backbone, pretrained=False, class_token=False, global_pool="", num_classes=0,
                                  dynamic_img_size=True, img_size=cfg.img_size)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"timm model {cfg.backbone!r} cannot be built as a ViT without CLS token: {err}") from err
    if getattr(model, "num_prefix_tokens", 0):
        raise ValueError(f"timm model {cfg.backbone!r} keeps {model.num_prefix_tokens} prefix tokens; pick a plain ViT")
    if cfg.weights:
        load_backbone_weights(model, cfg.weights)
    return model


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local safetensors file into the backbone (CLS / head entries are skipped)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} not found")
    if path.suffix != ".safetensors":
        raise ValueError(f"backbone weights must be a .safetensors file (never unpickled), got {path.name}")
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith(("cls_token", "head", "fc_norm"))}
    own = model.state_dict()
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed

        src = state["pos_embed"]
        n_src = src.shape[1] - (1 if src.shape[1] != int(src.shape[1] ** 0.5) ** 2 else 0)
        prefix = src.shape[1] - n_src
        side = int(round((own["pos_embed"].shape[1]) ** 0.5))
        state["pos_embed"] = resample_abs_pos_embed(src, (side, side), num_prefix_tokens=prefix)[:, prefix:]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("head")]:
        raise ValueError(f"{path}: weights do not fit the backbone (missing {missing[:4]}, unexpected {unexpected[:4]})")


class VISModel(nn.Module):
    """`forward(images, encoder=None, stream=None, track_queries=None) -> VISOutput`."""

    def __init__(self, config: VISConfig) -> None:
        super().__init__()
        self.config = config.validate()
        self.backbone = build_backbone(config)
        width = getattr(self.backbone, "embed_dim", None) or self.backbone.num_features
        patch = self.backbone.patch_embed.patch_size[0]
        self.pyramid = SimpleFeaturePyramid(width, config.fpn_dim, patch)
        self.head = Mask2FormerHead(config)
        # Not registered (the backbone is registered once): dense gather run in train and eval mode.
        self.__dict__["dense"] = sparse_vit(self.backbone, {}, execution="gather")

    def forward(self, images: Tensor, encoder: nn.Module | None = None, stream: Any = None,
                track_queries: Tensor | None = None) -> VISOutput:
        """images: normalised float [B, 3, H, W], H and W multiples of 32 (see `normalise`)."""
        if images.dim() != 4 or images.shape[-2] % 32 or images.shape[-1] % 32:
            raise ValueError(f"images must be [B, 3, H, W] with H, W multiples of 32, got {tuple(images.shape)}")
        enc = encoder if encoder is not None else self.dense
        out = enc(images, stream=stream)
        return VISOutput(head=self.head(self.pyramid(out.features), track_queries), backbone=out)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (inputs go there: `VideoPredictor`, eval's GMACs and FPS)."""
        return self.head.class_head.weight.device

    def head_parameters(self) -> list[nn.Parameter]:
        """Pyramid and head parameters (lr x1 when the backbone is initialised from a checkpoint)."""
        return list(self.pyramid.parameters()) + list(self.head.parameters())


def normalise(frames: Tensor) -> Tensor:
    """uint8 [B, H, W, 3] frames -> normalised float [B, 3, H, W]."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [B, H, W, 3], got {tuple(frames.shape)}")
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
