"""`VisualTokenPruner`: keep K_i visual tokens per image of a Hugging Face LLaVA-style model.

Wraps the user's model (never patches or modifies it): image features come from the model's own
`get_image_features`, a `patchprune.select` method picks K_i = budget(N, ratio_i) tokens per image
(frame), the prompt is rebuilt with K_i placeholders per image, and the model's own `forward` /
`generate` receives the pruned features through `mm_encoder_outputs`. At ratio 1.0 nothing is
selected and the model sees exactly its usual inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from patchprune.hf.families import Family, resolve_family
from patchprune.hf.features import ImageFeatures, encode_images, scoring_attention
from patchprune.hf.prompts import Prompt, check_prompt, images_per_sample, infer_padding_side, rebuild_prompt
from patchprune.select.base import SelectResult, budget, method_spec, select, take_rows

FEATURE_SPACES = ("vision", "projected")


@dataclass
class PrunedInputs:
    """Everything the model's forward / generate needs, plus what was kept."""

    input_ids: Tensor  # [B, S'] prompt with K_i placeholders per image
    attention_mask: Tensor  # [B, S']
    features: list[Tensor]  # per image [K_i, D] projected features, in placeholder order
    keep_counts: Tensor  # [n_images] K_i
    index: list[Tensor] = field(default_factory=list)  # per image [K_i] grid positions kept (merges: anchors)
    list_output: bool = True  # the family reads pooler_output as a per-image list (else one [1, total, D])

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the model's forward / generate."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        feats = list(self.features) if self.list_output else torch.cat(self.features)[None]
        outputs = BaseModelOutputWithPooling(pooler_output=feats)
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "mm_encoder_outputs": {"image": outputs}}


def check_ratio(ratio: Any, name: str = "ratio") -> None:
    """ValueError unless ratio (or every entry of a sequence) is in (0, 1]."""
    values = list(ratio) if isinstance(ratio, (list, tuple)) else [ratio]
    if not values:
        raise ValueError(f"{name} must be a number in (0, 1] or one per sample, got an empty sequence")
    for r in values:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0.0 < float(r) <= 1.0) or math.isnan(r):
            raise ValueError(f"{name} must be in (0, 1] (keep ratio of visual tokens), got {r!r}")


def check_model_kwargs(kwargs: dict) -> None:
    """ValueError for model arguments the pruned call cannot honour."""
    if "labels" in kwargs:
        raise ValueError("labels are not supported: the pruned prompt has a different length")
    if "pixel_values_videos" in kwargs:
        raise ValueError("pixel_values_videos is not supported (Video-LLaVA's video tower is not covered); "
                         "pass video frames as images in pixel_values with one placeholder run per frame")


class VisualTokenPruner:
    """Prune the visual tokens of `model` (a covered Hugging Face class) with a selection method.

    model: e.g. `LlavaForConditionalGeneration`; method: any `patchprune.select` method; ratio: keep
    ratio in (0, 1] (or, per call, one per sample); padding_side: "left" / "right" as the tokenizer
    pads (None: inferred from the attention mask); features: "vision" (score on the vision-tower
    features, EVTP's setting) or "projected" (on the projector output); attention_layer: the vision
    layer whose attention scores tokens (default: the layer that produces the selected features);
    options: the method's own options.
    """

    def __init__(self, model: nn.Module, method: str = "evtp", ratio: float = 0.2, *,
                 padding_side: str | None = None, features: str = "vision", attention_layer: int | None = None,
                 **options: Any) -> None:
        self.family: Family = resolve_family(model)
        self.model = model
        self.spec = method_spec(method)
        self.spec.check_options(options)
        check_ratio(ratio)
        if padding_side not in (None, "left", "right"):
            raise ValueError(f"padding_side must be 'left', 'right' or None (infer), got {padding_side!r}")
        if features not in FEATURE_SPACES:
            raise ValueError(f"features must be one of {FEATURE_SPACES}, got {features!r}")
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
        return ImageFeatures(feats.vision, feats.projected, attn, feats.hidden, feats.feature_layer)

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
        """Per image (projected features [K_i, D], kept grid positions [K_i]); one batched call per distinct K."""
        n, N, _ = feats.projected.shape
        out: list[Tensor | None] = [None] * n
        index: list[Tensor | None] = [None] * n
        for k in torch.unique(keep_counts).tolist():
            group = (keep_counts == k).nonzero().flatten().to(feats.projected.device)
            proj = feats.projected.index_select(0, group)
            if k == N:  # keep everything: the model sees exactly its own features
                kept, idx = proj, torch.arange(N, device=proj.device).expand(len(group), N)
            else:
                kept, idx = self._select_group(feats, group, proj, int(k))
            for j, i in enumerate(group.tolist()):
                out[i], index[i] = kept[j], idx[j]
        return out, index  # type: ignore[return-value]

    def _select_group(self, feats: ImageFeatures, group: Tensor, proj: Tensor, k: int) -> tuple[Tensor, Tensor]:
        N = proj.shape[1]
        side = math.isqrt(N)
        grid = (side, side) if side * side == N else None
        attn = None if feats.attn is None else feats.attn.index_select(0, group)
        scored = proj if (self.spec.merges or self.features == "projected") else feats.vision.index_select(0, group)
        res: SelectResult = select(scored, k, self.method, grid, attn, **self.options)
        if scored is proj:
            return res.tokens, res.index
        return take_rows(proj.contiguous(), res.slots), res.index

    def prepare(self, input_ids: Tensor, pixel_values: Tensor, attention_mask: Tensor | None = None,
                ratio: float | Sequence[float] | None = None, features: ImageFeatures | None = None) -> PrunedInputs:
        """Encode, select and rebuild the prompt. `features` reuses an earlier `encode(pixel_values)`."""
        mask = check_prompt(input_ids, attention_mask)
        feats = self.encode(pixel_values) if features is None else self.with_attention(features)
        N = feats.tokens_per_image
        per_sample = images_per_sample(input_ids, mask, self.family.image_token_id(self.model), N,
                                       feats.projected.shape[0])
        ks = self.keep_counts(per_sample, N, ratio)
        kept, index = self.select_tokens(feats, ks)
        prompt = self.rebuild(input_ids, mask, ks, N)
        return PrunedInputs(prompt.input_ids, prompt.attention_mask.to(
            attention_mask.dtype if attention_mask is not None else torch.long), kept, ks, index,
            self.family.list_output)

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
    def __call__(self, input_ids: Tensor, pixel_values: Tensor, attention_mask: Tensor | None = None, *,
                 ratio: float | Sequence[float] | None = None, **kwargs: Any) -> Any:
        """The model's forward on the pruned inputs (kwargs go to the model: labels are not supported)."""
        check_model_kwargs(kwargs)
        inputs = self.prepare(input_ids, pixel_values, attention_mask, ratio)
        return self.model(**inputs.model_kwargs(), **kwargs)

    def generate(self, input_ids: Tensor, pixel_values: Tensor, attention_mask: Tensor | None = None, *,
                 ratio: float | Sequence[float] | None = None, **kwargs: Any) -> Tensor:
        """The model's generate on the pruned inputs; returns the pruned prompt followed by new tokens."""
        check_model_kwargs(kwargs)
        inputs = self.prepare(input_ids, pixel_values, attention_mask, ratio)
        return self.model.generate(**inputs.model_kwargs(), **kwargs)
