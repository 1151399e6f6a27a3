"""Named shapes of the VIS model (`tiny`, `small`, `from-timm`) and their JSON form.

A `VISConfig` fixes everything a checkpoint's tensors depend on (backbone, pyramid, Mask2Former
head, categories) plus the frame size the model is fed. It is saved as `config.json` beside the
checkpoints, so `eval vis` / `segment` rebuild exactly the trained model.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from patchprune.run_config import RunConfig
from patchprune.validate import check_known_fields


@dataclass
class VISConfig(RunConfig):
    """Shape of a `VISModel`.

    backbone: "vit" builds a timm VisionTransformer from dim / depth / heads / patch; any other
    value is a timm model name (`from-timm`), created without CLS token, optionally loaded from the
    local safetensors file `weights`. img_size: the side of the square frames are resized to (rounded to a
    multiple of 32, the coarsest pyramid stride); with `segment --keep-aspect`, the longer side. fpn_dim: channels of the pyramid
    levels and the pixel decoder (multiple of 32: GroupNorm 32). hidden_dim / decoder_layers /
    num_queries / heads: the masked-attention decoder. pixel_layers: deformable encoder layers of
    the pixel decoder. points: sampled points per mask in the set loss (`train_num_points`).
    semantic_head: a per-pixel category map on the mask features, trained densely and pooled
    under each query's mask into its class logits (docs/vis.md, "semantic head"; off = the
    plain Mask2Former class head, as checkpoints written before it had). stem: "patch" (timm's
    one-convolution patch embedding) or "conv" (`vis.stem.ConvStem`: stride-2 3x3 convolutions,
    backbone "vit" only).
    categories: dataset category ids in label order (label i = categories[i]); names alike.
    """

    KIND = "VIS"
    COMMAND = "patchprune train vis"
    NOT_SHAPE = ("name", "weights", "img_size", "category_names")  # fields no tensor shape depends on

    name: str = "tiny"
    backbone: str = "vit"
    weights: str | None = None
    img_size: int = 96
    patch_size: int = 8
    dim: int = 128
    depth: int = 12
    heads: int = 4
    mlp_ratio: float = 4.0
    fpn_dim: int = 64
    hidden_dim: int = 64
    decoder_layers: int = 3
    decoder_heads: int = 4
    decoder_ffn: int = 256
    pixel_layers: int = 1
    pixel_ffn: int = 256
    num_queries: int = 10
    points: int = 1024
    semantic_head: bool = False
    stem: str = "patch"
    categories: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    category_names: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.categories)

    def validate(self) -> "VISConfig":
        """ValueError naming the field and the fix for shapes the parts cannot take."""
        if self.fpn_dim % 32 or self.fpn_dim <= 0:
            raise ValueError(f"fpn_dim must be a positive multiple of 32 (GroupNorm 32), got {self.fpn_dim}")
        if self.hidden_dim % self.decoder_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be divisible by decoder_heads {self.decoder_heads}")
        if self.backbone == "vit" and self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if self.img_size < 32:
            raise ValueError(f"img_size must be >= 32, got {self.img_size}")
        if self.patch_size not in (4, 8, 16, 32):
            raise ValueError(f"patch_size must be 4, 8, 16 or 32 (a power of two up to the stride 32), got {self.patch_size}")
        if self.decoder_layers < 1 or self.num_queries < 1 or self.points < 1:
            raise ValueError("decoder_layers, num_queries and points must be >= 1")
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"stem must be 'patch' or 'conv', got {self.stem!r}")
        if self.stem == "conv" and self.backbone != "vit":
            raise ValueError(f"stem 'conv' builds its own ViT; backbone {self.backbone!r} keeps its patch embedding")
        if not self.categories:
            raise ValueError("categories is empty: the data set declares no category")
        return self


NAMED_CONFIGS = ("tiny", "small", "from-timm")


def named_config(name: str, categories: list[int] | None = None, category_names: list[str] | None = None,
                 timm_model: str | None = None, weights: str | None = None, **overrides: Any) -> VISConfig:
    """`tiny` (trains on a 2-core CPU), `small` (ViT-S/16 at 512 px, the paper's scale) or
    `from-timm` (the timm model `timm_model`, optional local safetensors `weights`)."""
    if name == "tiny":
        cfg = VISConfig(semantic_head=True, stem="conv")
    elif name == "small":
        cfg = VISConfig(name="small", img_size=512, patch_size=16, dim=384, depth=12, heads=6, fpn_dim=256,
                        hidden_dim=256, decoder_layers=6, decoder_heads=8, decoder_ffn=1024, pixel_layers=3,
                        pixel_ffn=1024, num_queries=50, points=12544)
    elif name == "from-timm":
        if not timm_model:
            raise ValueError("config from-timm needs a timm model name (--timm-model, e.g. vit_small_patch16_224)")
        cfg = VISConfig(name="from-timm", backbone=timm_model, weights=weights, img_size=512, patch_size=16,
                        fpn_dim=256, hidden_dim=256, decoder_layers=6, decoder_heads=8, decoder_ffn=1024,
                        pixel_layers=3, pixel_ffn=1024, num_queries=50, points=12544)
    else:
        raise ValueError(f"unknown config {name!r}; expected one of {list(NAMED_CONFIGS)}")
    if categories is not None:
        cfg = replace(cfg, categories=list(categories), category_names=list(category_names or []))
    if overrides:
        check_known_fields("VIS config field", VISConfig, overrides)
        cfg = replace(cfg, **overrides)
    return cfg.validate()
