"""Helpers shared by score-based policies: per-sample top-k masks over the eligible tokens."""
from __future__ import annotations

import torch
from torch import Tensor

from patchprune.policies.base import PolicyContext, keep_count


def eligible_tokens(ctx: PolicyContext) -> Tensor:
    """Bool [B, n]: tokens a policy may keep (alive in training mode, real slots in inference)."""
    if ctx.training:
        return ctx.alive > 0.5
    return ctx.alive


def topk_mask(scores: Tensor, k: Tensor, eligible: Tensor) -> Tensor:
    """Bool [B, n] keeping the k[b] highest-scoring eligible tokens of each sample (ties: lower index).

    k may differ per sample; ineligible tokens are never kept. Vectorised: one sort, no loops.
    """
    masked = scores.float().masked_fill(~eligible, float("-inf"))
    order = masked.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (rank < k.unsqueeze(1)) & eligible


def keep_top_ratio(ctx: PolicyContext, scores: Tensor, ratio: float) -> Tensor:
    """Keep `keep_count(live count, ratio)` best-scoring live tokens per sample."""
    eligible = eligible_tokens(ctx)
    k = keep_count(eligible.sum(1), ratio)
    return topk_mask(scores, k, eligible)


def as_decision_mask(ctx: PolicyContext, keep: Tensor) -> Tensor:
    """A bool keep mask in the form the runner expects for this execution mode.

    Training (masking) mode wants a float mask over all N tokens, cumulative with the mask in
    force; inference wants a bool mask over the live tokens.
    """
    if ctx.training:
        return keep.to(ctx.alive.dtype) * ctx.alive
    return keep
