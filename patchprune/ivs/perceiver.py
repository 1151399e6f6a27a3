"""Small perceivers: learned latents (or one target token) cross-attending to a set of tokens.

`CrossLayer` is one pre-norm cross-attention + MLP block. `ObjectPerceiver` is InstructSeg's
object-aware video perceiver: per reference frame its latents attend to [that frame's projected
(pruned) tokens; the instruction's word embeddings; the latents], giving `latents` tokens a frame.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class CrossLayer(nn.Module):
    """queries [B, Q, D] <- attention over keys [B, S, D] (key_padding [B, S] True = ignore), then MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, queries: Tensor, keys: Tensor, key_padding: Tensor | None = None) -> Tensor:
        kv = self.norm_kv(keys)
        queries = queries + self.attn(self.norm_q(queries), kv, kv, key_padding_mask=key_padding, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))


class ObjectPerceiver(nn.Module):
    """frames [F, K, D] + text [F, T, D] (text_pad [F, T] True = padding) -> [F, latents, D]."""

    def __init__(self, dim: int, latents: int, layers: int, heads: int) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, dim) * 0.02)
        self.layers = nn.ModuleList(CrossLayer(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, frames: Tensor, text: Tensor, text_pad: Tensor) -> Tensor:
        F_, K, _ = frames.shape
        lat = self.latents.unsqueeze(0).expand(F_, -1, -1)
        fixed_pad = torch.zeros(F_, K, dtype=torch.bool, device=frames.device)
        lat_pad = torch.zeros(F_, lat.shape[1], dtype=torch.bool, device=frames.device)
        pad = torch.cat([fixed_pad, text_pad, lat_pad], 1)
        for layer in self.layers:
            lat = layer(lat, torch.cat([frames, text, lat], 1), pad)
        return self.norm(lat)
