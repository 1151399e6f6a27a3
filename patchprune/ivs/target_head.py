"""Target choice: which <seg> query is the referred object.

The mean language-model state over the <refer> span (instruction words + [SEG]) -> a target token
refined by a small perceiver cross-attending to the coarsest mask-branch features -> target [B, H];
per-query logit = dot(MLP(LayerNorm(query)), target) / sqrt(H) (the 1/sqrt(H) keeps initial logits
near 0; InstructSeg writes a plain dot product). No class vocabulary.

Optional referring map (`refer_map`): per pixel of the stride-4 mask features,
dot(Linear(refer), Conv1x1(features)) / sqrt(C) + b -> [B, h, w] logits, trained densely against the
referred mask; each query's logit then adds the map's mean under the query's (detached) mask. A
from-scratch model gets a per-pixel signal for "which object does the text mean" instead of one
1-in-N choice per sample (the VIS semantic head's recipe, docs/vis.md).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from patchprune.ivs.perceiver import CrossLayer


class TargetHead(nn.Module):
    """`target(refer [B, D_llm], coarsest [B, fpn, h, w]) -> [B, H]`; `logits(queries [B, N, H], target) -> [B, N]`;
    with `refer_map`: `pixel_map(refer, mask_features [B, fpn, h, w]) -> [B, h, w]` and
    `pooled(pixel_map, mask_logits [B, N, h, w]) -> [B, N]`."""

    def __init__(self, llm_dim: int, fpn_dim: int, hidden: int, layers: int, heads: int, refer_map: bool = False
                 ) -> None:
        super().__init__()
        self.map_text = nn.Linear(llm_dim, fpn_dim) if refer_map else None
        self.map_pixels = nn.Conv2d(fpn_dim, fpn_dim, 1) if refer_map else None
        self.map_bias = nn.Parameter(torch.full((), -2.0)) if refer_map else None  # most pixels are background
        self.refer_proj = nn.Linear(llm_dim, hidden)
        self.feat_proj = nn.Linear(fpn_dim, hidden)
        self.layers = nn.ModuleList(CrossLayer(hidden, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.query_mlp = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.scale = 1.0 / math.sqrt(hidden)

    def target(self, refer: Tensor, coarsest: Tensor) -> Tensor:
        t = self.refer_proj(refer).unsqueeze(1)
        feats = self.feat_proj(coarsest.flatten(2).transpose(1, 2))
        for layer in self.layers:
            t = layer(t, feats)
        return self.norm(t).squeeze(1)

    def logits(self, queries: Tensor, target: Tensor) -> Tensor:
        return (self.query_mlp(queries) * target.unsqueeze(1)).sum(-1) * self.scale

    def pixel_map(self, refer: Tensor, mask_features: Tensor) -> Tensor:
        if self.map_text is None:
            raise ValueError("this target head was built without refer_map")
        t = self.map_text(refer)
        f = self.map_pixels(mask_features)
        return torch.einsum("bc,bchw->bhw", t, f) / math.sqrt(f.shape[1]) + self.map_bias

    @staticmethod
    def pooled(pixel_map: Tensor, mask_logits: Tensor) -> Tensor:
        """Mean of the map under each query's soft mask; the mask is detached (the map scores masks,
        it does not reshape them) and one pseudo-pixel of weight 1 at 0 keeps empty masks near 0."""
        w = mask_logits.detach().sigmoid()
        return (w * pixel_map.unsqueeze(1)).flatten(2).sum(-1) / (w.flatten(2).sum(-1) + 1.0)
