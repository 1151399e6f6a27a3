"""Named shapes of the instructed-segmentation model (`tiny`) and their JSON form.

An `IVSConfig` fixes every tensor shape of an `IVSModel` (vision tower, projector, language model,
perceivers, mask branch, tokenizer size) and the frame size it is fed. It is saved as `config.json`
beside the checkpoint, with the tokenizer (`tokenizer.json`), so `eval ivs` rebuilds the exact model.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from patchprune.run_config import RunConfig
from patchprune.validate import check_known_fields

LLM_KINDS = ("llama", "phi")
PATCH_SIZES = (4, 8, 16, 32)  # divide every img_size (a multiple of 32)
REFER_MAP_KINDS = ("none", "tokens", "pixels")  # see `ivs.refer_map`
MAP_WEIGHT = 10.0  # default weight of the referring-map loss (`ivs.loss.ReferLoss`, `train ivs --map-weight`);
# 2 until the eighth session, where the map stayed at chance in the joint loss (docs/ivs.md)
QUERY_WEIGHT = 2.0  # default weight of the target choice's query BCE (ivs.md's; `train ivs --query-weight`)


@dataclass
class IVSConfig(RunConfig):
    """Shape of an `IVSModel`.

    Vision tower (SigLIP, no CLS): img_size px frames, patch_size, vision_* widths. vision_path:
    a local folder with real `SiglipVisionModel` weights (`from_pretrained`), else random init.
    vision_patch: the tower's own patch size when it differs from the mask branch's patch_size
    (None: the same), so the pruned tokens per frame can grow toward the published 729 while the
    mask branch keeps the patch of the VIS run it starts from (`--mask-init`).
    LLM: llm ("llama" | "phi") with llm_* widths, or real weights from the local folder llm_path.
    latents / perceiver_layers: the object-aware video perceiver (latents per reference frame);
    ref_frames: reference frames of a video key frame (its neighbours; an image uses itself).
    Mask branch (never pruned): timm ViT mask_* -> simple pyramid fpn_dim -> HF Mask2Former pixel
    decoder (pixel_layers) + masked-attention decoder (decoder_layers x hidden_dim); seg_queries:
    the N <seg> slots = Mask2Former queries. target_layers: the target perceiver's layers.
    refer_map: "none", "tokens" (tiny) or "pixels": a dense referring map from the LLM's kept visual
    token states or from the mask features, pooled under each query's mask into its logit
    (`ivs.refer_map`, docs/ivs.md "Referring map"); older runs load with "none". mask_stem: the mask
    branch ViT's patch embedding, "patch" (timm's) or "conv" (`vis.stem.ConvStem`, the VIS recipe's
    stem; `tiny`). instruction_prefix: the instruction also precedes the image tokens in the language
    model's sequence, so their states (the "tokens" referring map's features) are conditioned on it
    (our option, docs/ivs.md; the published order puts the image first only).
    vocab_size: the tokenizer's size (set from the data set's tokenizer when training starts).
    instance_classes: categories of the auxiliary instance loss's class head on the decoder's query
    states (`train ivs --instance-weight`, set from the data's categories; 0: no class head).
    """

    KIND = "IVS"
    COMMAND = "patchprune train ivs"
    NOT_SHAPE = ("name", "vision_path", "llm_path")  # fields no tensor shape depends on

    name: str = "tiny"
    img_size: int = 96
    patch_size: int = 8
    vision_patch: int | None = None
    vision_dim: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    vision_ffn: int = 512
    vision_path: str | None = None
    llm: str = "llama"
    llm_dim: int = 192
    llm_layers: int = 3
    llm_heads: int = 4
    llm_ffn: int = 512
    llm_path: str | None = None
    latents: int = 16
    perceiver_layers: int = 2
    perceiver_heads: int = 4
    ref_frames: int = 2
    mask_dim: int = 128
    mask_depth: int = 6
    mask_heads: int = 4
    fpn_dim: int = 64
    hidden_dim: int = 64
    decoder_layers: int = 3
    decoder_heads: int = 4
    decoder_ffn: int = 256
    pixel_layers: int = 1
    pixel_ffn: int = 256
    seg_queries: int = 8
    target_layers: int = 2
    refer_map: str = "none"
    mask_stem: str = "patch"
    instruction_prefix: bool = False
    vocab_size: int = 64
    instance_classes: int = 0

    @property
    def tower_patch(self) -> int:
        """Patch size of the vision tower (`vision_patch`, else the shared `patch_size`)."""
        return self.vision_patch or self.patch_size

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (h, w) of the vision tower: the tokens a selection method chooses from."""
        return self.img_size // self.tower_patch, self.img_size // self.tower_patch

    def validate(self) -> "IVSConfig":
        """ValueError naming the field and the fix for shapes the parts cannot take."""
        if self.img_size < 32 or self.img_size % 32:
            raise ValueError(f"img_size must be a positive multiple of 32 (the mask branch's coarsest stride), "
                             f"got {self.img_size}")
        if self.patch_size not in PATCH_SIZES:
            raise ValueError(f"patch_size must be 4, 8, 16 or 32, got {self.patch_size}")
        if self.vision_patch is not None and self.vision_patch not in PATCH_SIZES:
            raise ValueError(f"vision_patch must be 4, 8, 16, 32 or None (the patch_size), got {self.vision_patch}")
        if self.refer_map not in REFER_MAP_KINDS:
            raise ValueError(f"refer_map must be one of {REFER_MAP_KINDS}, got {self.refer_map!r}")
        if self.mask_stem not in ("patch", "conv"):
            raise ValueError(f"mask_stem must be 'patch' or 'conv', got {self.mask_stem!r}")
        if self.llm not in LLM_KINDS:
            raise ValueError(f"llm must be one of {LLM_KINDS}, got {self.llm!r}")
        for dim, heads in (("vision_dim", "vision_heads"), ("llm_dim", "llm_heads"), ("llm_dim", "perceiver_heads"),
                           ("mask_dim", "mask_heads"), ("hidden_dim", "decoder_heads")):
            if getattr(self, dim) % getattr(self, heads):
                raise ValueError(f"{dim} {getattr(self, dim)} must be divisible by {heads} {getattr(self, heads)}")
        if self.fpn_dim % 32 or self.fpn_dim <= 0:
            raise ValueError(f"fpn_dim must be a positive multiple of 32 (GroupNorm 32), got {self.fpn_dim}")
        for name in ("vision_layers", "llm_layers", "latents", "perceiver_layers", "ref_frames", "mask_depth",
                     "decoder_layers", "seg_queries", "target_layers", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.instance_classes < 0:
            raise ValueError(f"instance_classes must be >= 0, got {self.instance_classes}")
        return self


NAMED_CONFIGS = ("tiny", "micro")


def named_config(name: str, **overrides: Any) -> IVSConfig:
    """`tiny` (trains on a 2-core CPU) or `micro` (tests: the smallest shapes every part accepts)."""
    if name == "tiny":
        cfg = IVSConfig(refer_map="tokens", mask_stem="conv")
    elif name == "micro":
        cfg = IVSConfig(name="micro", img_size=64, patch_size=16, vision_dim=32, vision_layers=1, vision_heads=2,
                        vision_ffn=64, llm_dim=32, llm_layers=1, llm_heads=2, llm_ffn=64, latents=4,
                        perceiver_layers=1, perceiver_heads=2, ref_frames=2, mask_dim=32, mask_depth=1,
                        mask_heads=2, fpn_dim=32, hidden_dim=32, decoder_layers=1, decoder_heads=2, decoder_ffn=64,
                        pixel_layers=1, pixel_ffn=64, seg_queries=3, target_layers=1)
    else:
        raise ValueError(f"unknown config {name!r}; expected one of {list(NAMED_CONFIGS)}")
    if overrides:
        check_known_fields("IVS config field", IVSConfig, overrides)
        cfg = replace(cfg, **overrides)
    return cfg.validate()
