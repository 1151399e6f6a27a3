"""The one selection step before a language model: K of the N visual tokens of every image.

`select_visual_tokens` is called by `VisualTokenPruner` (Hugging Face LLaVA-family models, on the
projected features their `get_image_features` returns) and by `patchprune.ivs.IVSModel` (on the
vision tower's features, before its projector), so every method prunes the same way in both.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from patchprune.select.base import method_spec, select, take_rows


def select_visual_tokens(scored: Tensor, k: int, method: str, grid: tuple[int, int] | None = None,
                         attn: Tensor | None = None, values: Tensor | None = None, **options: Any
                         ) -> tuple[Tensor, Tensor]:
    """(kept tokens [n, K, D], their grid positions [n, K]) of every image.

    scored [n, N, E]: the features the method judges (EVTP's vision features, or the projected ones);
    values [n, N, D]: the features the language model receives (default `scored`); they are gathered
    at the kept slots, never masked. A merging method (ToMe) merges `values` themselves, since merged
    tokens are averages of what reaches the model. K == N keeps everything, in grid order, unselected.
    grid: the patch grid (inferred by `select` when N is a square); attn: the softmax attention that
    attention-scored methods read. Options are the method's keyword arguments (docs/select/)."""
    values = scored if values is None else values
    if values.shape[:2] != scored.shape[:2]:
        raise ValueError(f"values {tuple(values.shape)} must have the tokens of scored {tuple(scored.shape)}")
    n, N = scored.shape[:2]
    if k == N:
        return values, torch.arange(N, device=values.device).expand(n, N)
    if method_spec(method).merges:
        res = select(values, k, method, grid, attn, **options)
        return res.tokens, res.index
    res = select(scored, k, method, grid, attn, **options)
    if values is scored:
        return res.tokens, res.index
    return take_rows(values.contiguous(), res.slots), res.index


__all__ = ["select_visual_tokens"]
