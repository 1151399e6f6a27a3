"""The referring map: a dense "is this the referred object?" logit map, trained against the referred
mask and pooled under each <seg> query's mask into that query's logit.

Why: trained from scratch, the published target choice (one 1-in-N decision per sample, `TargetHead`)
learns slowly; a per-position signal is far denser (the VIS semantic head's recipe, docs/vis.md).
Two sources of the per-position features (`IVSConfig.refer_map`):

- "tokens" (tiny): the language model's states of the *kept visual tokens*, dot the refer vector,
  one logit per kept token; every grid cell takes the logit of its nearest kept token (grid distance;
  a merged token sits at its group's anchor), then bilinear up-sampling to the mask grid. The map
  therefore sees only what selection kept: pruning changes it, and a spatially covering selection
  leaves no cell far from a kept token (EVTP's argument).
- "pixels": the never-pruned mask branch's stride-4 features, dot the refer vector. Grounds without
  the language model's visual tokens, so selection before the LLM barely matters (an ablation).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from patchprune.ivs.config import REFER_MAP_KINDS


def nearest_kept(index: Tensor, grid: tuple[int, int]) -> Tensor:
    """For every cell of the grid, the slot of its nearest kept token: index [B, K] grid positions ->
    [B, h * w] slots in [0, K) (ties: the lower slot)."""
    h, w = grid
    dev = index.device
    cells = torch.stack(torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij"), -1)
    cells = cells.reshape(1, h * w, 2).float()
    kept = torch.stack([index // w, index % w], -1).float()  # [B, K, 2]
    return torch.cdist(cells.expand(index.shape[0], -1, -1), kept).argmin(-1)


class ReferMap(nn.Module):
    """`forward(refer [B, D], token_states [B, K, D], index [B, K], grid, mask_features [B, C, h, w])
    -> [B, h, w]` from the source of its kind (`from_tokens` / `from_pixels`); `pooled(map,
    mask_logits) -> [B, N]`."""

    def __init__(self, kind: str, llm_dim: int, fpn_dim: int) -> None:
        super().__init__()
        if kind not in REFER_MAP_KINDS[1:]:
            raise ValueError(f"refer_map must be one of {REFER_MAP_KINDS[1:]} to build a map, got {kind!r}")
        self.kind = kind
        width = llm_dim if kind == "tokens" else fpn_dim
        self.text = nn.Linear(llm_dim, width)
        self.features = nn.Linear(llm_dim, width) if kind == "tokens" else nn.Conv2d(fpn_dim, width, 1)
        self.bias = nn.Parameter(torch.full((), -2.0))  # most of a frame is not the referred object
        self.scale = 1.0 / math.sqrt(width)

    def forward(self, refer: Tensor, token_states: Tensor, index: Tensor, grid: tuple[int, int],
                mask_features: Tensor) -> Tensor:
        """The map on the mask-feature grid [B, h, w], from the kept tokens or the mask features."""
        if self.kind == "tokens":
            return self.from_tokens(refer, token_states, index, grid, tuple(mask_features.shape[-2:]))
        return self.from_pixels(refer, mask_features)

    def from_tokens(self, refer: Tensor, token_states: Tensor, index: Tensor, grid: tuple[int, int],
                    size: tuple[int, int]) -> Tensor:
        logits = torch.einsum("bd,bkd->bk", self.text(refer), self.features(token_states)) * self.scale + self.bias
        cells = logits.gather(1, nearest_kept(index, grid)).view(-1, 1, *grid)
        return nn.functional.interpolate(cells, size=size, mode="bilinear", align_corners=False).squeeze(1)

    def from_pixels(self, refer: Tensor, mask_features: Tensor) -> Tensor:
        return torch.einsum("bc,bchw->bhw", self.text(refer), self.features(mask_features)) * self.scale + self.bias

    @staticmethod
    def pooled(refer_map: Tensor, mask_logits: Tensor) -> Tensor:
        """Mean of the map under each query's soft mask [B, N]; the mask is detached (the map scores
        masks, it does not reshape them) and one pseudo-pixel of weight 1 at 0 keeps empty masks near 0."""
        w = mask_logits.detach().sigmoid()
        return (w * refer_map.unsqueeze(1)).flatten(2).sum(-1) / (w.flatten(2).sum(-1) + 1.0)
