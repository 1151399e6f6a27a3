"""The policy contract between the sparse ViT runner and every pruning method.

A policy sits at a block position `i` and acts on the input of block `i`. It sees a
`PolicyContext` (the live patch tokens, their grid positions, optionally that block's attention
weights) and returns one of:

- `Decision(keep=...)`: which live tokens go on (bool in inference, a float 0/1 or soft mask with
  gradient in training). Optional `tokens=` replaces the live features first (e.g. TPS squeezing).
- `Decision(keep_grid=...)`: which *grid positions* go on, so a pruned token can be reactivated with
  its last feature (SViT).
- `Merge(...)`: a smaller set of merged tokens (ToMe); every grid position of a group gets the
  group's feature when the grid is restored.

Learned and training-free families plug in here without touching the runner.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor, nn

from patchprune.registry import Registry
from patchprune.tokens import keep_count  # noqa: F401  (the one ratio -> K rule, re-exported for policies)


@dataclass
class PolicyContext:
    """What a policy sees at block position `position`."""

    position: int
    num_blocks: int
    tokens: Tensor  # [B, n, C] live patch tokens (training mode: all N, in raster order)
    index: Tensor  # [B, n] grid positions of the live tokens
    grid: tuple[int, int]
    prefix: Tensor  # [B, P, C] CLS / register tokens (never pruned); P may be 0
    training: bool  # True: masking execution (mask over all N tokens); False: gather execution
    alive: Tensor  # [B, n] mask in force: training -> float (0/1 or soft); inference -> bool (False on padding)
    valid: Tensor | None = None  # [B, n] bool, padding slots False (inference only)
    size: Tensor | None = None  # [B, n] patches per token after merges; None = ones
    attn: Tensor | None = None  # [B, heads, P+n, P+n] softmax attention of this block (if asked for)
    keys: Tensor | None = None  # [B, heads, P+n, head_dim] attention keys of this block (if asked for)
    stream: Any = None  # per-video streaming state (see patchprune.video), or None
    scratch: dict = field(default_factory=dict)  # shared by the policies of one forward call
    aux: dict = field(default_factory=dict)  # returned to the caller as output.aux (losses, scores)
    grid_features: Callable[[], Tensor] | None = None  # -> [B, N, C] last feature of every position

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass
class Decision:
    """Keep mask over the live tokens (`keep`) or over grid positions (`keep_grid`)."""

    keep: Tensor | None = None  # [B, n]
    keep_grid: Tensor | None = None  # [B, N]
    tokens: Tensor | None = None  # [B, n, C] replacement features for the live tokens

    def __post_init__(self) -> None:
        if (self.keep is None) == (self.keep_grid is None):
            raise ValueError("a Decision needs exactly one of keep / keep_grid")


@dataclass
class Merge:
    """Merged tokens: live slot j of the input goes into output slot assign[:, j]."""

    tokens: Tensor  # [B, k, C]
    index: Tensor  # [B, k] anchor grid position of each merged token
    size: Tensor | None  # [B, k] patches per merged token (log-size attention bias); None: no bias (EViT)
    assign: Tensor  # [B, n] long, output slot of each input slot


class Policy(nn.Module):
    """Base class. Subclasses implement `forward(ctx) -> Decision | Merge`.

    Class attributes a subclass may set:
    - needs_attention: the runner computes this block's attention weights into ctx.attn (only for
      this block; every other block keeps SDPA); `attention_queries` may limit them to the first rows.
    - observe_positions: block positions whose input features (full grid) the runner hands to
      `observe` (e.g. a temporal cache that stores x_6 for the next frame).
    - needs_keys: the runner puts this block's attention keys [B, heads, P+n, head_dim] into ctx.keys.
    - acts_after_attention: the policy acts between its block's attention and MLP (EViT, ToMe's
      per-block merge) instead of on the block's input; ctx.tokens are then the post-attention tokens.
    - training_attention: how later blocks hide pruned tokens in masking execution: "hard" (boolean
      key-padding mask; the mask's gradient flows only through the residual gate) or "policy"
      (DynamicViT's policy softmax, differentiable w.r.t. the mask).
    - training_gate: masking execution freezes pruned tokens (x <- m * block(x) + (1 - m) * x);
      False lets every token be updated by every block (DynamicViT's and TPS's training).
    - counts_vary: at inference the number of kept tokens depends on the input (a threshold or a
      draw, not a fixed budget): later blocks see a new shape on almost every call, so gather
      execution runs them without oneDNN's per-shape kernels (`patchprune/kernels.py`).
    """

    needs_attention: bool = False
    needs_keys: bool = False
    acts_after_attention: bool = False
    training_attention: str = "hard"
    training_gate: bool = True
    counts_vary: bool = False
    observe_positions: tuple[int, ...] = ()

    def attention_queries(self, num_prefix: int) -> int | None:
        """Leading query rows of ctx.attn this policy reads (None: all). A CLS score reads 1: the runner
        then computes ctx.attn as [B, heads, 1, P+n] (one query row, no n x n softmax)."""
        return None

    def observe(self, position: int, features: Tensor, alive: Tensor, stream: Any) -> None:
        """Called with the full-grid input features [B, N, C] of an observed block."""

    def forward(self, ctx: PolicyContext) -> Decision | Merge:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Registry: "name" -> factory(ratio, **options) -> Policy. One file per method registers itself.

_POLICIES: Registry[Callable[..., Policy]] = Registry("policy")


def register_policy(name: str) -> Callable[[Callable[..., Policy]], Callable[..., Policy]]:
    """Decorator: make `factory(ratio, **options)` available as `name` in schedules."""
    return _POLICIES.register(name)


def available_policies() -> list[str]:
    _load_builtin_families()
    return _POLICIES.names()


def make_policy(name: str, ratio: float | None = None, **options: Any) -> Policy:
    """Build a registered policy; `ratio` is the fraction of live tokens to keep."""
    _load_builtin_families()
    factory = _POLICIES.get(name)
    if ratio is not None:
        check_ratio(ratio)
    args = () if ratio is None else (ratio,)
    try:  # options are checked against the factory's signature, so a bad one is a clear error
        inspect.signature(factory).bind(*args, **options)
    except TypeError as err:
        needs_ratio = ratio is None and "ratio" in str(err)
        fix = f"give a keep ratio, e.g. ({name!r}, 0.5)" if needs_ratio else f"check the options of {name!r}"
        raise ValueError(f"policy {name!r}: {err}; {fix}") from None
    return factory(*args, **options)


def check_ratio(ratio: float) -> None:
    if not isinstance(ratio, (int, float)) or not (0.0 < float(ratio) <= 1.0):
        raise ValueError(f"keep ratio must be in (0, 1], got {ratio!r}")


# Modules whose import registers a family of policies (each method in its own file).
POLICY_FAMILIES: tuple[str, ...] = ("patchprune.policies.builtin", "patchprune.select.policies", "patchprune.learned")


def _load_builtin_families() -> None:
    import importlib

    for name in POLICY_FAMILIES:
        importlib.import_module(name)
