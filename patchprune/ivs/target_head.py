"""Target choice: which <seg> query is the referred object.

The mean language-model state over the <refer> span (instruction words + [SEG]) -> a target token
refined by a small perceiver cross-attending to the coarsest mask-branch features -> target [B, H];
per-query logit = dot(MLP(LayerNorm(query)), target) / sqrt(H) (the 1/sqrt(H) keeps initial logits
near 0; InstructSeg writes a plain dot product). No class vocabulary.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from patchprune.ivs.perceiver import CrossLayer


class TargetHead(nn.Module):
    """`target(refer [B, D_llm], coarsest [B, fpn, h, w]) -> [B, H]`; `logits(queries [B, N, H], target) -> [B, N]`."""

    def __init__(self, llm_dim: int, fpn_dim: int, hidden: int, layers: int, heads: int) -> None:
        super().__init__()
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
