"""TPS, token pruning and squeezing (Wei et al.): DynamicViT's predictor, then the newly pruned
tokens are squeezed into their most similar kept token before the stage's block:

host(p) = argmax_k cos(x_p, x_k) over kept k;  x_k <- (e x_k + sum_{p->k} e^{cos} x_p) / (e + sum_{p->k} e^{cos}).

Works in both execution modes. In training the squeeze weights of the pruned tokens carry the
straight-through mask gradient; which tokens are hosts is a hard choice with no gradient (no
straight-through gate on hosts, as the authors). Pruned tokens keep their own feature on the grid;
only hosts change. Training attention and updates are DynamicViT's (policy softmax, no gate).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchprune.learned.dynamicvit import DYNAMICVIT_POSITIONS, DynamicViTStage, build_stages
from patchprune.learned.registry import LearnedPruner, register_method
from patchprune.policies.base import Decision, PolicyContext, register_policy
from patchprune.policies.common import eligible_tokens
from patchprune.tokens import add_rows, gather_tokens, mask_to_slots, row_max


def squeeze(x: Tensor, keep: Tensor, pruned: Tensor) -> Tensor:
    """Fuse pruned tokens into their most similar kept host.

    x [B, n, C]; keep [B, n] (float 0/1, may carry a gradient; hosts are where keep > 0.5);
    pruned [B, n] float weight of each newly pruned token (0 elsewhere). Returns [B, n, C] where
    hosts hold the weighted average and every other token is unchanged.
    """
    hosts = keep.detach() > 0.5
    xn = F.normalize(x, dim=-1)
    cos = xn @ xn.transpose(1, 2)  # [B, p, k]
    cand = cos.masked_fill(~hosts[:, None, :], float("-inf"))
    host = cand.argmax(dim=-1, keepdim=True)  # [B, p, 1]
    sim = cos.gather(-1, host).squeeze(-1)  # cos(x_p, x_host(p))
    w = torch.exp(sim) * pruned * (~hosts).to(pruned.dtype)  # [B, p]: hosts squeeze nothing into themselves
    route = torch.zeros_like(cos).scatter_(-1, host, 1.0) * w.unsqueeze(-1)  # [B, p, k]
    num = math.e * x + route.transpose(1, 2) @ x
    den = math.e + route.sum(1)  # [B, k]
    fused = num / den.unsqueeze(-1)
    return torch.where(hosts.unsqueeze(-1), fused, x)  # hosts take the fused feature (hard, no gradient)


def squeeze_kept(x: Tensor, hosts: Tensor, pruned: Tensor) -> Tensor:
    """`squeeze` at inference, gathered: only the newly pruned rows against the host columns.

    x [B, n, C]; hosts, pruned [B, n] bool (disjoint). The same fused features as `squeeze` (up to
    float summation order) at p x k instead of 2 n^2 multiply-adds per channel: the dense form's
    [n, n] cosine and routing GEMMs were most of TPS's inference cost (issue 10)."""
    if not bool(pruned.any()):
        return x
    h_slots, h_valid = mask_to_slots(hosts)  # [B, k]; padding slots repeat slot 0
    p_slots, p_valid = mask_to_slots(pruned)  # [B, p]
    xn = F.normalize(x, dim=-1)
    xh, xp = gather_tokens(xn, h_slots), gather_tokens(xn, p_slots)
    cos = xp @ xh.transpose(1, 2)  # [B, p, k]
    if h_valid is not None:
        cos = cos.masked_fill(~h_valid[:, None, :], float("-inf"))
    sim, host = row_max(cos)  # [B, p]: each pruned token's host slot and cos to it
    w = torch.exp(sim)
    if p_valid is not None:
        w = w * p_valid.to(w.dtype)
    C = x.shape[-1]
    num = math.e * gather_tokens(x, h_slots)
    num = add_rows(num, host, w.unsqueeze(-1) * gather_tokens(x, p_slots))
    den = torch.full(h_slots.shape, math.e, dtype=x.dtype, device=x.device).scatter_add(1, host, w)
    fused = num / den.unsqueeze(-1)
    if h_valid is not None:  # a padding slot writes slot 0's value where slot 0 writes it
        fused = torch.where(h_valid.unsqueeze(-1), fused, fused[:, :1])
    return x.scatter(1, h_slots.unsqueeze(-1).expand(-1, -1, C), fused)


class TPSStage(DynamicViTStage):
    """DynamicViT stage whose pruned tokens are squeezed into kept hosts."""

    def forward(self, ctx: PolicyContext) -> Decision:
        keep, _ = self.decide(ctx)
        if ctx.training:
            pruned = ctx.alive * (1 - keep)
            return Decision(keep=keep, tokens=squeeze(ctx.tokens, keep, pruned))
        alive = eligible_tokens(ctx)
        return Decision(keep=keep, tokens=squeeze_kept(ctx.tokens, keep, alive & ~keep))


@register_policy("tps")
def _make(ratio: float, dim: int = 384, tau: float = 1.0, init_keep: float | None = None,
          freeze_pruned: bool = False) -> TPSStage:
    return TPSStage(dim, ratio, tau=tau, init_keep=init_keep, freeze_pruned=freeze_pruned)


@register_method("tps")
def build_tps(model: nn.Module, target: float = 0.55, rho: float | None = None,
              positions: tuple[int, ...] = DYNAMICVIT_POSITIONS, tau: float = 1.0, weight: float = 2.0,
              init_keep: bool = False, freeze_pruned: bool = False, execution: str = "auto") -> LearnedPruner:
    """TPS: DynamicViT's stages with squeezing of the pruned tokens into their hosts (options as DynamicViT)."""
    return build_stages("tps", TPSStage, model, target, rho, positions, tau, weight, execution, init_keep,
                        freeze_pruned)
