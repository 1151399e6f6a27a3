"""Image features from the model's own `get_image_features`, and the scoring layer's attention.

`get_image_features` returns the projected features (what the language model receives, one
[N, D] tensor per image) and the vision tower's hidden states; the pruner scores tokens on the
vision-space features the model selected (the layer `vision_feature_layer`, the CLS dropped under
the "default" strategy), as EVTP does, and gathers the projected rows (selection commutes with the
per-token projector). Attention-based methods need softmax attention, which SDPA does not return:
it is recomputed for the one scoring layer from that layer's input, its `layer_norm1`, `q_proj` and
`k_proj` (CLIP / SigLIP encoder layers), without touching the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from patchprune.hf.families import Family


@dataclass
class ImageFeatures:
    """Per-image features of one batch of images (frames of a video are images)."""

    vision: Tensor  # [n_images, N, Dv] vision-tower features the model projects (scoring space)
    projected: Tensor  # [n_images, N, D] projector output (what the language model receives)
    attn: Tensor | None = None  # [n_images, heads, P+N, P+N] softmax attention of the scoring layer
    hidden: tuple[Tensor, ...] | None = None  # every vision hidden state (kept for the attention)
    feature_layer: int = -1  # index into `hidden` of the selected features
    prefix: int = 0  # leading tokens per image that are always kept (the CLS of Video-LLaVA's video frames)
    tower: str = ""  # inner-model attribute of the tower that produced them ("" = the family's image tower)

    @property
    def tokens_per_image(self) -> int:
        return self.projected.shape[1]


def encode_images(model: nn.Module, family: Family, pixel_values: Tensor, *, keep_hidden: bool = False) -> ImageFeatures:
    """Run the model's `get_image_features` once (all hidden states kept when `keep_hidden`)."""
    extra = {"output_hidden_states": True} if keep_hidden else {}  # the scoring layer's input is needed too
    out = model.get_image_features(pixel_values=pixel_values, return_dict=True, **extra)
    projected = torch.stack(list(out.pooler_output))
    hidden = out.hidden_states
    layer = family.feature_layer(model) % len(hidden)
    drop = 1 if family.drops_cls(model) else 0
    vision = hidden[layer][:, drop:]
    if vision.shape[1] != projected.shape[1]:
        raise ValueError(f"vision features hold {vision.shape[1]} tokens per image but the projector returned "
                         f"{projected.shape[1]}; the pruner needs one feature per placeholder")
    return ImageFeatures(vision=vision, projected=projected, hidden=tuple(hidden) if keep_hidden else None,
                         feature_layer=layer, prefix=_prefix_tokens(model, projected.shape[1]))


def _prefix_tokens(model: nn.Module, tokens: int) -> int:
    """Tokens per image beyond the patch grid (a CLS the model keeps, e.g. CLIP under "full"): always kept."""
    vc = model.config.vision_config
    return max(0, tokens - (vc.image_size // vc.patch_size) ** 2)


def encode_videos(model: nn.Module, family: Family, pixel_values_videos: Tensor, *,
                  keep_hidden: bool = False) -> ImageFeatures:
    """Per-frame features [videos * frames, T, .] from the model's own `get_video_features` (Video-LLaVA:
    the video tower's layer `vision_feature_layer`, CLS kept, so `prefix` = T - patches)."""
    extra = {"output_hidden_states": True} if keep_hidden else {}
    out = family.base(model).get_video_features(pixel_values_videos=pixel_values_videos, return_dict=True, **extra)
    projected = out.pooler_output
    hidden = out.hidden_states
    layer = family.feature_layer(model) % len(hidden)
    vision = hidden[layer]
    prefix = _prefix_tokens(model, projected.shape[1])
    if vision.shape[:2] != projected.shape[:2]:
        raise ValueError(f"video features {tuple(projected.shape)} do not match the tower's hidden states "
                         f"{tuple(vision.shape)} and its patch grid")
    return ImageFeatures(vision=vision, projected=projected, hidden=tuple(hidden) if keep_hidden else None,
                         feature_layer=layer, prefix=prefix, tower="video_tower")


def scoring_attention(model: nn.Module, family: Family, feats: ImageFeatures,
                      attention_layer: int | None = None) -> Tensor:
    """Attention of the scoring layer: by default the layer producing the selected features."""
    if feats.hidden is None:
        raise ValueError("the features were encoded without hidden states: encode with keep_hidden=True")
    index = feats.feature_layer - 1 if attention_layer is None else attention_layer
    tower = getattr(family.base(model), feats.tower) if feats.tower else family.image_tower(model)
    return layer_attention(tower, feats.hidden, index)


def encoder_layers(tower: nn.Module) -> nn.ModuleList:
    """The encoder layers of a CLIP / SigLIP-style vision tower."""
    for owner in (tower, getattr(tower, "vision_model", None)):
        layers = getattr(getattr(owner, "encoder", None), "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(f"cannot find encoder layers in vision tower {type(tower).__name__}: attention-based "
                     "methods support CLIP / SigLIP-style towers (encoder.layers[i].self_attn.q_proj / k_proj)")


def layer_attention(tower: nn.Module, hidden_states: tuple[Tensor, ...], index: int) -> Tensor:
    """Softmax attention [B, heads, T, T] of encoder layer `index` (0-based; negative counts from the end).

    hidden_states[i] is the input of layer i, so only this layer's norm, q and k are recomputed.
    """
    layers = encoder_layers(tower)
    if not -len(layers) <= index < len(layers):
        raise ValueError(f"attention_layer={index} is outside the {len(layers)} encoder layers")
    index %= len(layers)
    layer = layers[index]
    attn_mod = layer.self_attn
    x = layer.layer_norm1(hidden_states[index])
    B, T, _ = x.shape
    heads, head_dim = attn_mod.num_heads, attn_mod.head_dim
    q = attn_mod.q_proj(x).view(B, T, heads, head_dim).transpose(1, 2)
    k = attn_mod.k_proj(x).view(B, T, heads, head_dim).transpose(1, 2)
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * float(attn_mod.scale)
    return logits.softmax(dim=-1)
