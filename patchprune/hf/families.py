"""Which Hugging Face multimodal families the pruner wraps, and where their parts are.

A family is covered when its `forward` / `generate` accept precomputed features as
`mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=...)}`, scatter them into the
placeholder tokens whatever their number, and derive nothing else (positions, tiles) from the full
placeholder count. In transformers 5.24 that holds for LLaVA (`LlavaForConditionalGeneration`,
per-image list) and for Video-LLaVA's images and videos (one tensor: the kept features go in as
[1, sum K_i, D]; a video frame keeps its CLS token). Not covered, with the reason (see docs/hf.md):
LLaVA-NeXT / LLaVA-NeXT-Video / LLaVA-OneVision pack several anyres tiles per image plus an
`image_newline` token after every row, so an image's features are not one patch grid; Qwen2-VL
computes its 3-D rotary positions from `image_grid_thw` for the full grid of placeholders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Family:
    """How to reach the parts of one covered model class."""

    name: str
    class_name: str
    tower: str = "vision_tower"  # attribute of the inner model holding the image tower
    list_output: bool = True  # pooler_output as a per-image list (else one [1, total, D] tensor)
    videos: bool = False  # has a video tower: pixel_values_videos [videos, frames, 3, H, W] + video tokens

    def base(self, model: nn.Module) -> nn.Module:
        """The inner model holding vision tower, projector and language model (`model.model`)."""
        return model.model

    def video_token_id(self, model: nn.Module) -> int:
        return int(model.config.video_token_id)

    def image_tower(self, model: nn.Module) -> nn.Module:
        return getattr(self.base(model), self.tower)

    def image_token_id(self, model: nn.Module) -> int:
        return int(model.config.image_token_id)

    def feature_layer(self, model: nn.Module) -> int:
        layer = model.config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"vision_feature_layer={layer!r}: the pruner supports one feature layer (an int)")
        return layer

    def drops_cls(self, model: nn.Module) -> bool:
        """True when the model drops the first vision token ("default" strategy, CLIP's CLS)."""
        return model.config.vision_feature_select_strategy == "default"


FAMILIES: dict[str, Family] = {
    "LlavaForConditionalGeneration": Family("llava", "LlavaForConditionalGeneration"),
    "VideoLlavaForConditionalGeneration": Family("video-llava", "VideoLlavaForConditionalGeneration",
                                                 tower="image_tower", list_output=False, videos=True),
}
NOT_COVERED: dict[str, str] = {
    "LlavaNextForConditionalGeneration": "anyres tiles plus image_newline tokens: an image's features are no single patch grid",
    "LlavaNextVideoForConditionalGeneration": "anyres tiles plus image_newline tokens: an image's features are no single patch grid",
    "LlavaOnevisionForConditionalGeneration": "anyres tiles plus image_newline tokens: an image's features are no single patch grid",
    "Qwen2VLForConditionalGeneration": "3-D rotary positions are computed from image_grid_thw for the full placeholder grid",
    "Qwen2_5_VLForConditionalGeneration": "3-D rotary positions are computed from image_grid_thw for the full placeholder grid",
}


def resolve_family(model: Any) -> Family:
    """The covered family of `model`, or a ValueError naming the supported classes (and why not)."""
    name = type(model).__name__
    for cls in type(model).__mro__:  # subclasses of a covered class are covered too
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    supported = ", ".join(sorted(FAMILIES))
    why = f" ({NOT_COVERED[name]})" if name in NOT_COVERED else ""
    raise ValueError(f"model class {name} is not supported{why}; supported: {supported} "
                     "(models whose forward takes mm_encoder_outputs with per-image feature lists)")
