"""DynamicViT stage predictor (Rao et al.), positions 3, 6, 9.

h = GELU(Linear_{C->C}(LN(x))); the second half of h is replaced by its mean over the currently
kept tokens (global context); MLP C -> C/2 -> C/4 -> 2 with GELU; LogSoftmax (241,250 parameters
per stage at C = 384; the authors' init: Linear weights trunc-normal 0.02, zero biases).
Training, as the authors': hard Gumbel-softmax (standard convention, tau = 1) times the previous
decision; later blocks use DynamicViT's policy softmax (`patchprune.blocks.policy_softmax`, eps
1e-6) and update every token, pruned ones included (no residual gate; `freeze_pruned=True` gates
them as VPP does). Inference: deterministic top-k, k_s = int(N * rho^s) of the N grid tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchprune.learned.common import ensure_one, record_keep, rescue_empty, target_default
from patchprune.learned.gumbel import KEEP, keep_decision
from patchprune.learned.heads import init_keep_rate, init_trunc_normal
from patchprune.learned.registry import LearnedPruner, MethodConfig, check_positions, embed_dim, register_method
from patchprune.policies.base import Decision, Policy, PolicyContext, keep_count, register_policy
from patchprune.policies.common import eligible_tokens, topk_mask

DYNAMICVIT_POSITIONS = (3, 6, 9)


DYNAMICVIT_RHO = {0.55: 0.6, 0.40: 0.4}


def dynamicvit_rho(target: float) -> float:
    """Stage keep ratio rho for a PKR target: 0.6 for 55 % (PKR 54.4 %), 0.4 for 40 % (PKR 40.6 %)."""
    return target_default(DYNAMICVIT_RHO, target, "DynamicViT rho", "rho")


class DynamicViTPredictor(nn.Module):
    """Local / global token scorer -> two-class log-probabilities [B, n, 2] (class 0 = keep)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"DynamicViT predictor width must be a multiple of 4, got {dim}")
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, dim // 4), nn.GELU(), nn.Linear(dim // 4, 2)
        )
        init_trunc_normal(self)  # the authors' init (timm's ViT init over the whole model)

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        """x [B, n, C], weight [B, n] (current keep mask, float) -> log-probs [B, n, 2]."""
        h = F.gelu(self.proj(self.norm(x)))
        half = h.shape[-1] // 2
        local, glob = h[..., :half], h[..., half:]
        w = weight.to(h.dtype).unsqueeze(-1)
        g = (glob * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1e-6)
        return F.log_softmax(self.mlp(torch.cat([local, g.expand_as(glob)], dim=-1)), dim=-1)


class DynamicViTStage(Policy):
    """One DynamicViT pruning stage with a fixed keep ratio relative to the full grid."""

    training_attention = "policy"  # DynamicViT's policy softmax in masking execution
    training_gate = False  # pruned tokens keep being updated in training (the authors' code)

    def __init__(self, dim: int, keep_ratio: float, tau: float = 1.0, init_keep: float | None = None,
                 freeze_pruned: bool = False) -> None:
        super().__init__()
        self.training_gate = bool(freeze_pruned)
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep ratio must be in (0, 1], got {keep_ratio}")
        self.predictor = DynamicViTPredictor(dim)
        self.keep_ratio = float(keep_ratio)
        self.tau = float(tau)
        if init_keep is not None:  # start at the stage's keep rate (relative to the live tokens)
            init_keep_rate(self.predictor.mlp[-1], init_keep, noise_scale=self.tau)

    def decide(self, ctx: PolicyContext) -> tuple[Tensor, Tensor]:
        """(keep, log-probs): float straight-through cumulative mask in training, bool over live tokens in inference."""
        N = ctx.num_patches
        if ctx.training:
            z = self.predictor(ctx.tokens, ctx.alive)
            s = keep_decision(z, self.tau, noise=True, convention="standard")
            m = rescue_empty(s * ctx.alive, z[..., KEEP], ctx.alive > 0.5)
            record_keep(ctx, "dynamicvit", m)
            return m, z
        eligible = eligible_tokens(ctx)
        z = self.predictor(ctx.tokens, eligible)
        k = torch.full((z.shape[0],), keep_count(N, self.keep_ratio), device=z.device)
        keep = ensure_one(topk_mask(z[..., KEEP], k, eligible), z[..., KEEP], eligible)
        record_keep(ctx, "dynamicvit", keep)
        return keep, z

    def forward(self, ctx: PolicyContext) -> Decision:
        return Decision(keep=self.decide(ctx)[0])


@register_policy("dynamicvit")
def _make(ratio: float, dim: int = 384, tau: float = 1.0, init_keep: float | None = None,
          freeze_pruned: bool = False) -> DynamicViTStage:
    return DynamicViTStage(dim, ratio, tau=tau, init_keep=init_keep, freeze_pruned=freeze_pruned)


def build_stages(method: str, cls: type, model: nn.Module, target: float, rho: float | None,
                 positions: tuple[int, ...], tau: float, weight: float, execution: str,
                 init_keep: bool = False, freeze_pruned: bool = False) -> LearnedPruner:
    """DynamicViT-style stages of `cls` at `positions` keeping rho, rho^2, ... of the grid (DynamicViT, TPS)."""
    rho = dynamicvit_rho(target) if rho is None else rho
    check_positions(model, positions, method)
    dim = embed_dim(model)
    ratios = [rho ** (s + 1) for s in range(len(positions))]
    # init_keep: every stage starts keeping rho of its live tokens (zero output weights)
    schedule = {p: cls(dim, r, tau=tau, init_keep=rho if init_keep else None, freeze_pruned=freeze_pruned)
                for p, r in zip(positions, ratios)}
    config = MethodConfig(method, target, ratios, {"weight": weight},
                          {"rho": rho, "tau": tau, "init_keep": init_keep, "freeze_pruned": freeze_pruned})
    return LearnedPruner(model, schedule, config, execution=execution)


@register_method("dynamicvit")
def build_dynamicvit(model: nn.Module, target: float = 0.55, rho: float | None = None,
                     positions: tuple[int, ...] = DYNAMICVIT_POSITIONS, tau: float = 1.0, weight: float = 2.0,
                     init_keep: bool = False, freeze_pruned: bool = False, execution: str = "auto") -> LearnedPruner:
    """DynamicViT: three stages keeping rho, rho^2, rho^3 of the grid (rho 0.6 / 0.4).

    init_keep: our option, start every stage at rho (zero output weights) instead of the authors'
    trunc-normal init. freeze_pruned: our option, gate pruned tokens' updates in training as VPP
    does (the authors update every token; docs/learned/baselines.md)."""
    return build_stages("dynamicvit", DynamicViTStage, model, target, rho, positions, tau, weight, execution,
                        init_keep, freeze_pruned)
