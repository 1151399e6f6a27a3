"""attention: EViT-style top-k of the tokens by the attention they receive.

Scores come from the softmax attention of one layer, [B, heads, P+N, P+N] with the P prefix tokens
first: "cls" = attention of the first prefix token (CLS) to every patch, averaged over heads;
"mean" = attention each patch receives, averaged over all queries and then over heads (for
encoders without CLS such as SigLIP). VisionZip and VisPruner score their important tokens the same way.
"""
from __future__ import annotations

import torch
from torch import Tensor

from patchprune.select.base import SelectInput, register_method


def attention_scores(attn: Tensor, n: int, score: str = "auto", valid: Tensor | None = None) -> Tensor:
    """[B, n] importance of the n patch tokens (the last n keys of `attn`; "cls" needs only the
    first query row, so attn may be [B, heads, 1, P+n])."""
    num_prefix = attn.shape[-1] - n
    if score == "auto":
        score = "cls" if num_prefix > 0 else "mean"
    a = attn.float()
    if score == "cls":
        if num_prefix < 1:
            raise ValueError("score='cls' needs a CLS token: attn must be [B, heads, 1+N, 1+N] (or more prefix tokens)")
        s = a[:, :, 0, num_prefix:].mean(1)
    elif score == "mean":
        if a.shape[-2] != a.shape[-1]:
            raise ValueError(f"score='mean' averages over every query: attn must be [B, heads, P+N, P+N], "
                             f"got {a.shape[-2]} query rows of {a.shape[-1]}")
        if valid is None:
            s = a[:, :, :, num_prefix:].mean(2).mean(1)
        else:  # average over real queries only (prefix queries are always real)
            q = torch.cat([valid.new_ones(valid.shape[0], num_prefix), valid], dim=1).to(a.dtype)
            s = torch.einsum("bhqk,bq->bhk", a[:, :, :, num_prefix:], q).mean(1) / q.sum(1, keepdim=True)
    else:
        raise ValueError(f"score must be 'auto', 'cls' or 'mean', got {score!r}")
    if valid is not None:
        s = s.masked_fill(~valid, float("-inf"))
    return s


def rank(scores: Tensor) -> Tensor:
    """Slots [B, N] by descending score; ties go to the lower slot (deterministic)."""
    return scores.argsort(dim=1, descending=True, stable=True)


@register_method("attention", needs_attention=True)
def attention_topk(x: Tensor, k: int, inp: SelectInput, *, score: str = "auto") -> Tensor:
    """Kept slots [B, k], most attended first. score: "auto" (cls when there is a prefix token), "cls", "mean"."""
    return rank(attention_scores(inp.attn, x.shape[1], score, inp.valid))[:, :k]
