"""The selection contract: result type, method registry and the `select()` entry point.

A method picks or merges K of the N patch tokens of every frame (the batch dimension is frames).
Selection methods return the kept slots in *priority order* (greedy pick order, or best score
first), which lets a caller take a shorter prefix per sample; `select()` then sorts them into
ascending raster order and gathers the original features. Merging methods build their own result.

Every method computes in fp32 on a detached copy of the features (fp16 / bf16 inputs included);
the returned tokens keep the input dtype.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import torch
from torch import Tensor

from patchprune.registry import Registry
from patchprune.tokens import TokenState, check_grid, gather_tokens, keep_count


@dataclass
class SelectResult:
    """K tokens per frame: kept (selection) or merged (ToMe, VisionZip's contextual tokens)."""

    tokens: Tensor  # [B, K, C] kept or merged features, input dtype
    index: Tensor  # [B, K] grid positions: ascending for selection; each group's anchor for merges
    size: Tensor  # [B, K] patches per token (ones for pure selection of unmerged tokens)
    slots: Tensor  # [B, K] slots of the input tokens (the kept ones, or each group's anchor)
    assign: Tensor | None = None  # [B, N] output slot of every input token, -1 if dropped (merges); None = selection
    order: Tensor | None = None  # [B, K] kept slots in pick / priority order (selection only)

    def to_state(self, grid: tuple[int, int]) -> TokenState:
        """The result as a TokenState (sizes kept only when something was merged)."""
        merged = self.assign is not None or bool((self.size != 1).any())
        return TokenState(tokens=self.tokens, index=self.index, grid=grid, size=self.size if merged else None)


@dataclass
class SelectInput:
    """What a method sees besides the fp32 features and the budget."""

    tokens: Tensor  # [B, N, C] original features (input dtype, may require grad)
    grid: tuple[int, int]  # (H, W) patch grid the positions refer to
    index: Tensor  # [B, N] grid position of every token (arange for a full grid)
    attn: Tensor | None = None  # [B, heads, P+N, P+N] softmax attention (attention-based methods)
    valid: Tensor | None = None  # [B, N] bool, False on padding slots that must never be kept
    size: Tensor | None = None  # [B, N] patches per token when the tokens were merged before

    @property
    def num_prefix(self) -> int:
        return 0 if self.attn is None else self.attn.shape[-1] - self.tokens.shape[1]


MethodFn = Callable[..., Any]  # fn(x fp32 [B, N, C], k, inp: SelectInput, **options) -> Tensor | SelectResult


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function and what it needs from the caller."""

    name: str
    fn: MethodFn
    needs_attention: bool = False
    merges: bool = False
    needs_grid: bool = False  # uses spatial coordinates: the grid must be known

    @cached_property
    def options(self) -> tuple[str, ...]:
        """The method's option names (its keyword-only parameters), read once."""
        params = inspect.signature(self.fn).parameters.values()
        return tuple(p.name for p in params if p.kind == p.KEYWORD_ONLY)

    def check_options(self, options: dict) -> None:
        """ValueError naming the unknown options and the method's own."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"method {self.name!r} has no option(s) {', '.join(unknown)}; its options: "
                             f"{', '.join(self.options) or 'none'}")


_METHODS: Registry[MethodSpec] = Registry("selection method")


def register_method(name: str, *, needs_attention: bool = False, merges: bool = False,
                    needs_grid: bool = False) -> Callable[[MethodFn], MethodFn]:
    """Decorator: make `fn(x, k, inp, *, options...)` available as `select(..., method=name)`.

    A selection method returns the kept slots [B, k] in priority order; a merging method returns a
    `SelectResult`. Options must be keyword-only parameters (they are validated by name).
    """

    def wrap(fn: MethodFn) -> MethodFn:
        _METHODS.add(name, MethodSpec(name, fn, needs_attention=needs_attention, merges=merges, needs_grid=needs_grid))
        return fn

    return wrap


def available_methods() -> list[str]:
    """Names accepted by `select(..., method=)` (sorted)."""
    return _METHODS.names()


def method_spec(name: str) -> MethodSpec:
    """The registered method `name`, or a ValueError listing the available ones."""
    return _METHODS.get(name)


def budget(n: int, ratio: float) -> int:
    """Tokens kept out of n at keep ratio `ratio` (729 at 5/10/20 % -> 36/73/146): the library's one
    rule, `patchprune.tokens.keep_count` (max(1, round(ratio * n)), halves up)."""
    return keep_count(int(n), ratio)


# ------------------------------------------------------------------------------------------------
# Entry point


def select(tokens: Tensor, k: int, method: str = "evtp", grid: tuple[int, int] | None = None,
           attn: Tensor | None = None, *, index: Tensor | None = None, valid: Tensor | None = None,
           size: Tensor | None = None, **options: Any) -> SelectResult:
    """Keep (or merge down to) `k` of the N tokens of every frame with a registered method.

    tokens [B, N, C]; grid (H, W) of the patch grid (inferred when N is a square and `index` is not
    given); attn [B, heads, P+N, P+N] softmax attention for attention-based methods (P prefix tokens
    first, inferred from the shape). `index` [B, N] gives the grid positions when the tokens are a
    subset of the grid; `valid` [B, N] marks padding slots (never kept); `size` [B, N] the patches
    each token already stands for. Method options are keyword arguments (see docs/select/).
    """
    spec = method_spec(method)
    spec.check_options(options)
    inp = prepare_input(tokens, k, grid, attn, index=index, valid=valid, size=size,
                        needs_attention=spec.needs_attention, needs_grid=spec.needs_grid, method=method)
    out = run_method(spec, k, inp, options)
    if isinstance(out, SelectResult):
        return out
    return selection_result(inp, out)


def run_method(spec: MethodSpec, k: int, inp: SelectInput, options: dict) -> Tensor | SelectResult:
    """Call a method on a detached fp32 copy of inp.tokens without grad tracking; plain
    (non-inference) tensors come back."""
    x = fp32_copy(inp.tokens)
    with torch.inference_mode():
        out = spec.fn(x, k, inp, **options)
    if isinstance(out, SelectResult):
        return SelectResult(**{f: (v.clone() if isinstance(v, Tensor) and v.is_inference() else v)
                               for f, v in vars(out).items()})
    return out.clone()


def fp32_copy(tokens: Tensor) -> Tensor:
    """What a method computes on: the tokens detached, in fp32, contiguous (no copy when they already are)."""
    return tokens.detach().float().contiguous()


def selection_result(inp: SelectInput, order: Tensor) -> SelectResult:
    """Build the result of a pure selection from kept slots in priority order."""
    slots = order.sort(dim=1).values
    size = torch.ones_like(slots, dtype=torch.float32) if inp.size is None else inp.size.gather(1, slots)
    return SelectResult(tokens=take_rows(inp.tokens, slots), index=inp.index.gather(1, slots), size=size,
                        slots=slots, order=order)


def prepare_input(tokens: Tensor, k: int, grid: tuple[int, int] | None, attn: Tensor | None, *,
                  index: Tensor | None = None, valid: Tensor | None = None, size: Tensor | None = None,
                  needs_attention: bool = False, needs_grid: bool = False, method: str = "") -> SelectInput:
    """Validate the call and bundle what a method needs; every error is a ValueError that says why."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 3:
        raise ValueError(f"tokens must be a [B, N, C] tensor, got {getattr(tokens, 'shape', type(tokens))}")
    if not tokens.is_floating_point():
        raise ValueError(f"tokens must be floating point, got {tokens.dtype}")
    B, N, _ = tokens.shape
    if B < 1 or N < 1:
        raise ValueError(f"tokens must hold at least one frame and one token, got shape {tuple(tokens.shape)}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {k!r}")
    if not 1 <= k <= N:
        raise ValueError(f"k must be in [1, {N}] (the number of tokens), got {k}")
    if not all_finite(tokens):
        raise ValueError("tokens contain NaN or inf")
    grid = _resolve_grid(N, grid, index, needs_grid, method)
    if index is None:
        index = torch.arange(N, device=tokens.device).expand(B, N)
    else:
        if index.shape != (B, N) or index.dtype != torch.long:
            raise ValueError(f"index must be a long tensor of shape {(B, N)}, got {index.dtype} {tuple(index.shape)}")
        if (int(index.min()) < 0 or int(index.max()) >= grid[0] * grid[1]):
            raise ValueError(f"index holds positions outside the {grid[0]}x{grid[1]} grid")
    if valid is not None:
        if valid.shape != (B, N) or valid.dtype != torch.bool:
            raise ValueError(f"valid must be a bool tensor of shape {(B, N)}")
        fewest = int(valid.sum(1).min())
        if k > fewest:
            raise ValueError(f"k = {k} exceeds the {fewest} valid tokens of a frame")
    if size is not None and size.shape != (B, N):
        raise ValueError(f"size must have shape {(B, N)}, got {tuple(size.shape)}")
    if needs_attention:
        attn = check_attention(attn, B, N, method)
    return SelectInput(tokens=tokens, grid=grid, index=index, attn=attn, valid=valid, size=size)


def check_attention(attn: Tensor | None, B: int, N: int, method: str) -> Tensor:
    """Attention [B, heads, T, T] (or [B, T, T]) with T = P + N, or its first Q query rows
    [B, heads, Q, T] (enough for CLS scores: the runner passes Q = 1); returns the 4-d form."""
    if attn is None:
        raise ValueError(
            f"method {method!r} scores tokens by attention: pass attn=[B, heads, P+N, P+N] "
            "(softmax weights of the scoring layer; SDPA does not return them)"
        )
    if attn.dim() == 3:
        attn = attn.unsqueeze(1)
    if attn.dim() != 4 or attn.shape[0] != B or not 1 <= attn.shape[-2] <= attn.shape[-1] or attn.shape[-1] < N:
        raise ValueError(f"attn must be [B={B}, heads, P+N, P+N] (or its first query rows) with N={N}, "
                         f"got {tuple(attn.shape)}")
    if not all_finite(attn):
        raise ValueError("attn contains NaN or inf")
    return attn


def _resolve_grid(n: int, grid: tuple[int, int] | None, index: Tensor | None, needs_grid: bool,
                  method: str) -> tuple[int, int]:
    if grid is not None:
        grid = tuple(int(g) for g in grid)
        if index is None:
            check_grid(n, grid)
        elif len(grid) != 2 or grid[0] < 1 or grid[1] < 1:
            raise ValueError(f"grid must be (H, W) with positive sides, got {grid}")
        return grid
    side = math.isqrt(n)
    if index is None and side * side == n:
        return side, side
    if needs_grid:
        raise ValueError(f"method {method!r} uses token coordinates: pass grid=(H, W) for {n} tokens")
    return 1, n


# ------------------------------------------------------------------------------------------------
# Shared numeric helpers (fp32, batched)


def all_finite(x: Tensor) -> bool:
    """True when x holds no NaN / inf (one min/max pass: NaN propagates, inf shows up in the extremes)."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


# x [B, N, C] at slots [B, k] -> [B, k, C]: the library's one row gather, under the name the selection
# code uses (`patchprune.tokens.gather_tokens`).
take_rows = gather_tokens


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


def grid_coordinates(index: Tensor, grid: tuple[int, int]) -> Tensor:
    """[B, N] grid positions -> [B, N, 2] coordinates (row / (H-1), col / (W-1)) in [0, 1]."""
    H, W = grid
    rows = torch.div(index, W, rounding_mode="floor").float()
    cols = (index % W).float()
    return torch.stack([rows / max(H - 1, 1), cols / max(W - 1, 1)], dim=-1)


def masked_mean(z: Tensor, valid: Tensor | None = None) -> Tensor:
    """[B, N, E] -> [B, E] mean over the (valid) tokens of every frame (one GEMV per frame)."""
    B, N, _ = z.shape
    w = z.new_full((B, 1, N), 1.0 / N) if valid is None else (valid / valid.sum(1, keepdim=True).clamp_min(1)).to(z.dtype)[:, None]
    return torch.bmm(w, z).squeeze(1)


def first_valid(valid: Tensor | None, B: int, device: torch.device) -> Tensor:
    """[B] slot of the first valid token (0 without padding)."""
    if valid is None:
        return torch.zeros(B, dtype=torch.long, device=device)
    return valid.to(torch.uint8).argmax(1)


def seeded_uniform(B: int, N: int, valid: Tensor | None, seed: int, device: torch.device) -> Tensor:
    """[B, N] uniform scores in [0, 1) from a CPU generator seeded with `seed` (the same draw on every
    device); padding slots score -1, so they never win."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    u = torch.rand(B, N, generator=g).to(device)
    return u if valid is None else u.masked_fill(~valid, -1.0)


def resolve_start(init: Any, sq: Tensor, valid: Tensor | None, seed: int = 0) -> Tensor:
    """First pick [B] of a farthest-first run on centred points with squared norms sq [B, N].

    init: "mean" (the token farthest from the mean: argmax of sq, first on ties), "first" (the first
    valid slot), "random" (seeded), a slot, or a [B] tensor of slots.
    """
    B, N = sq.shape
    if isinstance(init, str):
        if init == "mean":
            return (sq if valid is None else sq.masked_fill(~valid, float("-inf"))).argmax(1)
        if init == "first":
            return first_valid(valid, B, sq.device)
        if init == "random":
            return seeded_uniform(B, N, valid, seed, sq.device).argmax(1)
        raise ValueError(f"init must be 'mean', 'first', 'random', a token slot or a [B] tensor, got {init!r}")
    if isinstance(init, Tensor):
        start = init.to(device=sq.device, dtype=torch.long).reshape(-1)
        if start.numel() == 1:
            start = start.expand(B)
        if start.shape != (B,):
            raise ValueError(f"init tensor must hold one slot per frame ({B}), got shape {tuple(init.shape)}")
    elif isinstance(init, int) and not isinstance(init, bool):
        start = torch.full((B,), init, dtype=torch.long, device=sq.device)
    else:
        raise ValueError(f"init must be 'mean', 'first', 'random', a token slot or a [B] tensor, got {init!r}")
    if int(start.min()) < 0 or int(start.max()) >= N:
        raise ValueError(f"init slot out of range [0, {N})")
    if valid is not None and not bool(valid.gather(1, start[:, None]).all()):
        raise ValueError("init slot points at a padding token")
    return start
