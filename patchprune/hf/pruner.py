"""`VisualTokenPruner`: keep K_i visual tokens per image of a Hugging Face LLaVA-style model.

Wraps the user's model (never patches or modifies it): image features come from the model's own
`get_image_features`, a `patchprune.select` method picks K_i = budget(N, ratio_i) tokens per image
(frame), the prompt is rebuilt with K_i placeholders per image, and the model's own `forward` /
`generate` receives the pruned features through `mm_encoder_outputs`. At ratio 1.0 nothing is
selected and the model sees exactly its usual inputs.

Positions: "compact" (default, what LLaVA-family pruning does) numbers the pruned prompt without
gaps; "dense" gives every kept token the position it had in the unpruned prompt (text after an image
is not shifted by the dropped tokens), as `patchprune.ivs` does: pruning then never shows the
language model relative distances it was not trained on (docs/ivs.md measured the difference).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from patchprune.hf.families import Family, resolve_family
from patchprune.hf.features import ImageFeatures, encode_images, encode_videos, scoring_attention
from patchprune.hf.prompts import (Prompt, check_prompt, default_positions, images_per_sample, infer_padding_side,
                                   rebuild_prompt)
from patchprune.hf.selection import select_visual_tokens
from patchprune.select.base import budget, method_spec

FEATURE_SPACES = ("vision", "projected")
POSITIONS = ("compact", "dense")


@dataclass
class PrunedInputs:
    """Everything the model's forward / generate needs, plus what was kept."""

    input_ids: Tensor  # [B, S'] prompt with K_i placeholders per image (and per video frame)
    attention_mask: Tensor  # [B, S']
    features: list[Tensor]  # per image [K_i, D] projected features, in placeholder order
    keep_counts: Tensor  # [n_images] K_i
    index: list[Tensor] = field(default_factory=list)  # per image [K_i] grid positions kept (merges: anchors)
    list_output: bool = True  # the family reads pooler_output as a per-image list (else one [1, total, D])
    video_features: list[Tensor] | None = None  # per video [frames * (P + K), D] (frames' CLS + kept tokens)
    video_keep_counts: Tensor | None = None  # [videos * frames] K per frame (patches, CLS not counted)
    position_ids: Tensor | None = None  # [B, S'] with positions="dense" (else the model numbers the prompt)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the model's forward / generate."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        def output(feats: list[Tensor]) -> Any:
            pooled = list(feats) if self.list_output else torch.cat(feats)[None]
            return BaseModelOutputWithPooling(pooler_output=pooled)

        encoded = {}
        if self.features:
            encoded["image"] = output(self.features)
        if self.video_features:
            encoded["video"] = output(self.video_features)
        kwargs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "mm_encoder_outputs": encoded}
        if self.position_ids is not None:
            kwargs["position_ids"] = self.position_ids
        return kwargs


def check_ratio(ratio: Any, name: str = "ratio") -> None:
    """ValueError unless ratio (or every entry of a sequence) is in (0, 1]."""
    values = list(ratio) if isinstance(ratio, (list, tuple)) else [ratio]
    if not values:
        raise ValueError(f"{name} must be a number in (0, 1] or one per sample, got an empty sequence")
    for r in values:
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or math.isnan(r) or not 0.0 < float(r) <= 1.0:
            raise ValueError(f"{name} must be in (0, 1] (keep ratio of visual tokens), got {r!r}")


def check_model_kwargs(kwargs: dict) -> None:
    """ValueError for model arguments the pruned call cannot honour."""
    if "labels" in kwargs:
        raise ValueError("labels are not supported: the pruned prompt has a different length")
    if "position_ids" in kwargs:
        raise ValueError("position_ids are built for the pruned prompt; choose them with "
                         "VisualTokenPruner(positions='compact' | 'dense')")


def kept_slots(index: list[Tensor], frames: int, tokens_per_frame: int, prefix: int) -> Tensor:
    """The placeholder slot of every kept token, frame after frame (index [K_f] kept grid positions
    per frame, `frames` frames per placeholder run): frame f of a run starts at slot
    f * tokens_per_frame with its `prefix` always-kept leading tokens, then its kept positions."""
    out = [torch.cat([torch.arange(prefix, device=idx.device), idx.long() + prefix]) + (g % frames) * tokens_per_frame
           for g, idx in enumerate(index)]  # one entry per frame, not per token
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


class VisualTokenPruner:
    """Prune the visual tokens of `model` (a covered Hugging Face class) with a selection method.

    model: e.g. `LlavaForConditionalGeneration`; method: any `patchprune.select` method; ratio: keep
    ratio in (0, 1] (or, per call, one per sample); padding_side: "left" / "right" as the tokenizer
    pads (None: inferred from the attention mask); features: "vision" (score on the vision-tower
    features, EVTP's setting) or "projected" (on the projector output); attention_layer: the vision
    layer whose attention scores tokens (default: the layer that produces the selected features);
    positions: "compact" (no gaps) or "dense" (kept tokens keep their unpruned positions; see the
    module docstring); options: the method's own options.
    """

    def __init__(self, model: nn.Module, method: str = "evtp", ratio: float = 0.2, *,
                 padding_side: str | None = None, features: str = "vision", attention_layer: int | None = None,
                 positions: str = "compact", **options: Any) -> None:
        self.family: Family = resolve_family(model)
        self.model = model
        self.spec = method_spec(method)
        self.spec.check_options(options)
        check_ratio(ratio)
        if padding_side not in (None, "left", "right"):
            raise ValueError(f"padding_side must be 'left', 'right' or None (infer), got {padding_side!r}")
        if features not in FEATURE_SPACES:
            raise ValueError(f"features must be one of {FEATURE_SPACES}, got {features!r}")
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        self.positions = positions
        self.method, self.ratio, self.options = method, ratio, options
        self.padding_side, self.features, self.attention_layer = padding_side, features, attention_layer

    # -- stages (public so benchmarks can time them separately) ------------------------------------
    def encode(self, pixel_values: Tensor) -> ImageFeatures:
        """Image features of every image (frame), with attention when the method needs it."""
        if not isinstance(pixel_values, Tensor) or pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [images, channels, height, width] (video frames as images), "
                             f"got {getattr(pixel_values, 'shape', type(pixel_values))}")
        feats = encode_images(self.model, self.family, pixel_values, keep_hidden=self.spec.needs_attention)
        return self.with_attention(feats)

    def with_attention(self, feats: ImageFeatures) -> ImageFeatures:
        """feats with the scoring layer's attention attached when the method needs it (else unchanged)."""
        if not self.spec.needs_attention or feats.attn is not None:
            return feats
        attn = scoring_attention(self.model, self.family, feats, self.attention_layer)
        return replace(feats, attn=attn)

    def keep_counts(self, per_sample: Tensor, tokens_per_image: int, ratio: Any = None) -> Tensor:
        """[n_images] K_i = budget(N, ratio of the image's sample)."""
        ratio = self.ratio if ratio is None else ratio
        check_ratio(ratio)
        B = per_sample.numel()
        ratios = list(ratio) if isinstance(ratio, (list, tuple)) else [ratio] * B
        if len(ratios) != B:
            raise ValueError(f"ratio holds {len(ratios)} values but the batch has {B} samples; give one per sample")
        ks = torch.tensor([budget(tokens_per_image, r) for r in ratios], dtype=torch.long)
        return ks.repeat_interleave(per_sample.cpu())

    def select_tokens(self, feats: ImageFeatures, keep_counts: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Per image (projected features [P + K_i, D], kept grid positions [K_i]); one batched call per
        distinct K. The `feats.prefix` leading tokens (a video frame's CLS) are always kept, first."""
        n, T, _ = feats.projected.shape
        P = feats.prefix
        N = T - P
        out: list[Tensor | None] = [None] * n
        index: list[Tensor | None] = [None] * n
        for k in torch.unique(keep_counts).tolist():
            group = (keep_counts == k).nonzero().flatten().to(feats.projected.device)
            proj = feats.projected.index_select(0, group)
            if k == N:  # keep everything: the model sees exactly its own features
                kept, idx = proj, torch.arange(N, device=proj.device).expand(len(group), N)
            else:
                kept, idx = self._select_group(feats, group, proj[:, P:], int(k))
                kept = torch.cat([proj[:, :P], kept], 1) if P else kept
            for j, i in enumerate(group.tolist()):
                out[i], index[i] = kept[j], idx[j]
        return out, index  # type: ignore[return-value]

    def _select_group(self, feats: ImageFeatures, group: Tensor, proj: Tensor, k: int) -> tuple[Tensor, Tensor]:
        N = proj.shape[1]
        side = math.isqrt(N)
        grid = (side, side) if side * side == N else None
        attn = None if feats.attn is None else feats.attn.index_select(0, group)
        scored = proj if self.features == "projected" else feats.vision.index_select(0, group)[:, feats.prefix:]
        return select_visual_tokens(scored, k, self.method, grid, attn, values=proj, **self.options)

    def prepare(self, input_ids: Tensor, pixel_values: Tensor | None = None, attention_mask: Tensor | None = None,
                ratio: float | Sequence[float] | None = None, features: ImageFeatures | None = None, *,
                pixel_values_videos: Tensor | None = None, generate: bool = False) -> PrunedInputs:
        """Encode, select and rebuild the prompt. `features` reuses an earlier `encode(pixel_values)`;
        `pixel_values_videos` [videos, frames, 3, H, W] for families with a video tower (Video-LLaVA);
        generate: the inputs are for `generate` (dense positions then number real tokens only, as
        generate does; forward numbers every slot)."""
        mask = check_prompt(input_ids, attention_mask)
        side = self.padding_side or infer_padding_side(mask)
        pos = default_positions(mask, generate) if self.positions == "dense" else None
        if pixel_values is None and features is None and pixel_values_videos is None:
            raise ValueError("pass pixel_values [images, 3, H, W] (video frames as images) or, for Video-LLaVA, "
                             "pixel_values_videos [videos, frames, 3, H, W]")
        ids, kept, ks, index = input_ids, [], torch.zeros(0, dtype=torch.long), []
        if pixel_values is not None or features is not None:
            feats = self.encode(pixel_values) if features is None else self.with_attention(features)
            kept, ks, index, ids, mask, pos = self._prune(ids, mask, pos, feats, self.family.image_token_id(self.model),
                                                          1, ratio, side, "image", "pixel_values")
        videos, video_ks = None, None
        if pixel_values_videos is not None:
            feats = self.encode_videos(pixel_values_videos)
            videos, video_ks, _, ids, mask, pos = self._prune(ids, mask, pos, feats,
                                                              self.family.video_token_id(self.model),
                                                              pixel_values_videos.shape[1], ratio, side, "video",
                                                              "pixel_values_videos")
        if pos is not None and not generate:  # padding slots numbered by column, as the model's forward does
            pos = torch.where(mask, pos, default_positions(mask, False))
        dtype = attention_mask.dtype if attention_mask is not None else torch.long
        return PrunedInputs(ids, mask.to(dtype), kept, ks, index, self.family.list_output, videos, video_ks, pos)

    def encode_videos(self, pixel_values_videos: Tensor) -> ImageFeatures:
        """Per-frame features of [videos, frames, 3, H, W] (families with a video tower only)."""
        if not self.family.videos:
            raise ValueError(f"pixel_values_videos: {self.family.class_name} has no video tower; pass video "
                             "frames as images in pixel_values, one placeholder run per frame")
        if not isinstance(pixel_values_videos, Tensor) or pixel_values_videos.dim() != 5:
            raise ValueError("pixel_values_videos must be [videos, frames, channels, height, width], got "
                             f"{getattr(pixel_values_videos, 'shape', type(pixel_values_videos))}")
        feats = encode_videos(self.model, self.family, pixel_values_videos, keep_hidden=self.spec.needs_attention)
        return self.with_attention(feats)

    def _prune(self, ids: Tensor, mask: Tensor, pos: Tensor | None, feats: ImageFeatures, token_id: int,
               frames: int, ratio: Any, side: str, what: str, source: str):
        """Select per frame and shrink the placeholder runs of one modality (images: frames = 1);
        pos: the prompt's dense positions (None: compact)."""
        T, P = feats.tokens_per_image, feats.prefix
        units = feats.projected.shape[0] // frames
        per_sample = images_per_sample(ids, mask, token_id, frames * T, units, what, source)
        ks = self.keep_counts(per_sample * frames, T - P, ratio)
        kept, index = self.select_tokens(feats, ks)
        if frames > 1:
            kept = [torch.cat(kept[u * frames:(u + 1) * frames]) for u in range(units)]
        placeholders = (ks + P).view(units, frames).sum(1)
        slots = None if pos is None else kept_slots(index, frames, T, P)
        prompt = rebuild_prompt(ids, mask, token_id, frames * T, placeholders, self.pad_token_id(), side,
                                kept_slots=slots, positions=pos)
        return kept, ks, index, prompt.input_ids, prompt.attention_mask.bool(), prompt.position_ids

    def rebuild(self, input_ids: Tensor, mask: Tensor, keep_counts: Tensor, tokens_per_image: int) -> Prompt:
        """The prompt with keep_counts[i] placeholders for image i, padded as the caller pads."""
        side = self.padding_side or infer_padding_side(mask)
        return rebuild_prompt(input_ids, mask, self.family.image_token_id(self.model), tokens_per_image,
                              keep_counts, self.pad_token_id(), side)

    def pad_token_id(self) -> int:
        """The text model's pad token (0 when the config has none; padded positions are masked)."""
        for cfg in (getattr(self.model.config, "text_config", None), self.model.config):
            pad = getattr(cfg, "pad_token_id", None)
            if pad is not None:
                return int(pad)
        return 0

    # -- the model's own entry points ---------------------------------------------------------------
    def __call__(self, input_ids: Tensor, pixel_values: Tensor | None = None, attention_mask: Tensor | None = None,
                 *, ratio: float | Sequence[float] | None = None, pixel_values_videos: Tensor | None = None,
                 **kwargs: Any) -> Any:
        """The model's forward on the pruned inputs (kwargs go to the model: labels are not supported)."""
        check_model_kwargs(kwargs)
        inputs = self.prepare(input_ids, pixel_values, attention_mask, ratio, pixel_values_videos=pixel_values_videos)
        return self.model(**inputs.model_kwargs(), **kwargs)

    def generate(self, input_ids: Tensor, pixel_values: Tensor | None = None, attention_mask: Tensor | None = None,
                 *, ratio: float | Sequence[float] | None = None, pixel_values_videos: Tensor | None = None,
                 **kwargs: Any) -> Tensor:
        """The model's generate on the pruned inputs; returns the pruned prompt followed by new tokens."""
        check_model_kwargs(kwargs)
        inputs = self.prepare(input_ids, pixel_values, attention_mask, ratio, pixel_values_videos=pixel_values_videos,
                              generate=True)
        return self.model.generate(**inputs.model_kwargs(), **kwargs)
