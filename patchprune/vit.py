"""Sparse ViT runner: wraps a timm VisionTransformer and prunes patch tokens between its blocks.

`sparse_vit(model, schedule)` returns a module that runs the user's own timm blocks (never swapped,
never patched) under a schedule of policies. Two execution modes:

- mask (training): every token stays; a policy's keep mask hides pruned keys with a hard boolean
  key-padding mask and gates each block's residual update (x <- m * block(x) + (1 - m) * x), so the
  mask's gradient flows through the gate only (VPP, SViT: the spec's and the authors' form). A policy
  may instead declare DynamicViT's policy softmax and no gate (`Policy.training_attention`,
  `Policy.training_gate`; see `patchprune.blocks`).
- gather (inference): only the kept tokens run; they are gathered, processed, and written back into
  a full-grid buffer where pruned positions keep their last feature. Samples that keep different
  counts are padded to the batch maximum; on a CPU each block then runs its projections and MLP on
  the real tokens only (`ragged` "split" / "pack": attention per sample, or one padded call), elsewhere
  the whole padded batch runs hidden by a key-padding mask (`ragged="pad"`; SDPA in every mode).

Prefix tokens (CLS, registers) always run and are never seen as candidates for pruning.
A policy with `acts_after_attention` acts between its block's attention and MLP (EViT, ToMe's
per-block merge): the runner calls that block's branches itself (`patchprune.blocks`).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ContextManager, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from patchprune.kernels import kernels_for
from patchprune.policies.base import Decision, Merge, Policy, PolicyContext, check_ratio, make_policy
from patchprune.tokens import TokenState, check_grid, gather_tokens, keep_at_least_one, mask_to_slots
from patchprune.validate import check_finite
from patchprune.blocks import (POLICY_SOFTMAX_EPS, attention_part, attention_part_scored, attention_weights,
                               check_block_parts, is_prenorm_block, reuses_qkv, key_padding_mask, mlp_part,
                               policy_attention, policy_vector, split_block)

ScheduleEntry = Policy | tuple | str
Schedule = Mapping[int, ScheduleEntry] | str

# eps of DynamicViT's policy softmax, used in masking execution by policies that declare
# training_attention = "policy" (DynamicViT, TPS): the authors' 1e-6 (see `patchprune.blocks`).
POLICY_ATTENTION_EPS = POLICY_SOFTMAX_EPS


@dataclass
class SparseViTOutput:
    """Result of one forward call."""

    features: Tensor  # [B, C, H, W] full grid after the last block and the final norm
    keep_masks: dict[int, Tensor]  # block -> bool [B, N] tokens that block processed
    pkr: float  # patch keep ratio of this call (mean over blocks of processed / N)
    # block -> "split" | "pack" | "pad": how it ran a batch whose samples kept different counts
    ragged: dict[int, str] = field(default_factory=dict)
    aux: dict = field(default_factory=dict)  # filled by the policies (losses, scores, ...)
    layers: dict[int, Tensor] = field(default_factory=dict)  # pos -> [B, C, H, W] input of block pos
    prefix: Tensor | None = None  # [B, P, C] prefix tokens after the final norm

    @property
    def tokens_per_block(self) -> list[float]:
        """Mean processed patch tokens per sample, per block."""
        return [float(m.sum(1).float().mean()) for _, m in sorted(self.keep_masks.items())]


def sparse_vit(model: nn.Module, schedule: Schedule | None = None, execution: str = "auto",
               default_policy: str = "random", policy_eps: float = POLICY_ATTENTION_EPS,
               compile: bool = False, ragged: str = "auto") -> "SparseViT":
    """Wrap a timm VisionTransformer with a pruning schedule.

    schedule: {block position: Policy | (name, ratio) | (name, ratio, options)} or a string
    "1:0.6,3:0.8" using `default_policy`. A policy at position i acts on the input of block i; a
    ratio is the fraction of the *live* tokens kept, so ratios compound along the depth.
    execution: "auto" (mask when the module is in training mode, gather in eval), "mask", "gather".
    The runner starts in the mode of `model` (`model.eval()` first -> an eval runner, gather
    execution); `.train()` / `.eval()` on the runner switch it afterwards.
    policy_eps: eps of DynamicViT's policy softmax in masking execution, for policies that train
    with it (`training_attention = "policy"`; default the authors' 1e-6). Hard-masked policies
    (VPP, SViT) and gather execution do not use it.
    compile: in gather execution, run every whole block through one `torch.compile`d call
    (`compiled_block_call`: the block's own forward, compiled; the policies, the token bookkeeping
    and the blocks a policy splits stay eager). Meant for inference at fixed budgets, where each
    block sees few distinct token counts; the first calls compile (minutes on a CPU).
    ragged: how gather execution runs a batch whose samples keep different counts
    (`patchprune.blocks.split_block`). "split": no padding anywhere (qkv, proj and MLP once over all
    real tokens packed together, attention one SDPA call per sample); "pack": the same projections
    and MLP, attention in one padded SDPA call (padding only in the attention core, no per-sample
    calls); "pad": the padded batch with a key-padding mask (the padding is computed and discarded);
    "auto" (default): "split" on a CPU, "pad" elsewhere (not measured on a GPU yet; "pack" is the
    batched candidate there). Measured on 2 CPU cores (docs/benchmarks.md, issue 10): split is
    within -6 % .. +2 % of pad when the counts differ little and 1.3-2x faster when they differ
    widely; pack is slower than split in every case measured. Blocks other than timm's pre-norm
    Block, size-weighted (merged) attention and `compile` run "pad". `SparseViTOutput.ragged` says
    how each padded block ran.
    """
    return SparseViT(model, schedule or {}, execution=execution, default_policy=default_policy,
                     policy_eps=policy_eps, compile=compile, ragged=ragged)


class SparseViT(nn.Module):
    """The wrapped model. See `sparse_vit`."""

    def __init__(self, model: nn.Module, schedule: Schedule, execution: str = "auto",
                 default_policy: str = "random", proportional_attention: bool = True,
                 policy_eps: float = POLICY_ATTENTION_EPS, compile: bool = False, ragged: str = "auto") -> None:
        super().__init__()
        check_vit(model)
        self.compile = bool(compile)
        self.ragged = check_ragged(ragged)
        if execution not in ("auto", "mask", "gather"):
            raise ValueError(f"execution must be 'auto', 'mask' or 'gather', got {execution!r}")
        self.policy_eps = check_policy_eps(policy_eps)
        self.model = model
        self.execution = execution
        self.proportional_attention = proportional_attention
        self.depth = len(model.blocks)
        self.policies = nn.ModuleDict(
            {str(pos): pol for pos, pol in parse_schedule(schedule, self.depth, default_policy).items()}
        )
        for pos, pol in self.schedule.items():
            check_policy_execution(pol, pos, list(model.blocks))
        # Mode follows the wrapped model: an eval model gives an eval runner (gather execution). Only the
        # runner's own flag and its policies change; the user's model keeps its submodules' modes.
        self.training = model.training
        self.policies.train(model.training)

    # -- schedule access --------------------------------------------------------------------------
    def policy_at(self, position: int) -> Policy | None:
        return self.policies[str(position)] if str(position) in self.policies else None

    @property
    def schedule(self) -> dict[int, Policy]:
        return {int(k): v for k, v in self.policies.items()}

    def ragged_mode(self, device: torch.device) -> str:
        """"split", "pack" or "pad": how gather execution runs a padded batch on `device` (see
        `sparse_vit`'s `ragged`)."""
        if self.compile:
            return "pad"
        if self.ragged != "auto":
            return self.ragged
        return "split" if device.type == "cpu" else "pad"

    @property
    def execution_in_force(self) -> str:
        """"mask" or "gather": `execution`, or for "auto" the runner's mode (training -> mask, eval -> gather)."""
        if self.execution != "auto":
            return self.execution
        return "mask" if self.training else "gather"

    def grid_for(self, images: Tensor) -> tuple[int, int]:
        """Patch grid (H, W) for an image batch, with clear errors for sizes the model cannot take."""
        return image_grid(self.model, images)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, images: Tensor, stream: Any = None, return_layers: Iterable[int] = ()) -> SparseViTOutput:
        grid = self.grid_for(images)
        return_layers = tuple(sorted(set(int(p) for p in return_layers)))
        for p in return_layers:
            if not 0 <= p <= self.depth:
                raise ValueError(f"return_layers position {p} is outside 0..{self.depth}")
        x = embed(self.model, images)
        run = _MaskRun if self.execution_in_force == "mask" else _GatherRun
        return run(self, x, grid, stream, return_layers).run()


# ------------------------------------------------------------------------------------------------
# Model checks and shared pieces

RAGGED_MODES = ("auto", "split", "pack", "pad")


def check_ragged(mode: str) -> str:
    """`mode` if it is one of `RAGGED_MODES` (see `sparse_vit`), else a ValueError listing them."""
    if mode not in RAGGED_MODES:
        raise ValueError(f"ragged must be one of {', '.join(map(repr, RAGGED_MODES))}, got {mode!r}")
    return mode


def call_pkr(keep_masks: Mapping[int, Tensor]) -> float:
    """PKR of one call: mean over blocks of processed / N (each mask bool [B, N]); the same value as
    `patchprune.metrics.pkr` for one call, computed here so the runner needs nothing from `metrics/`."""
    return float(torch.stack([m.to(torch.float64).mean() for m in keep_masks.values()]).mean())


def check_policy_eps(eps: float) -> float:
    """eps of the policy softmax (see `patchprune.blocks.policy_softmax`) as a float in (0, 1), or a ValueError."""
    if not 0.0 < float(eps) < 1.0:
        raise ValueError(f"policy_eps must be in (0, 1), got {eps!r}")
    return float(eps)


def check_policy_execution(policy: Policy, pos: int, blocks: Sequence[nn.Module]) -> None:
    """ValueError unless the runner can execute `policy` as it declares (training attention, mid-block)."""
    if policy.training_attention not in ("hard", "policy"):
        raise ValueError(f"policy at {pos} declares training_attention={policy.training_attention!r}; "
                         "use 'hard' or 'policy'")
    if policy.acts_after_attention:
        check_block_parts(blocks[pos], f"the policy at {pos} (acting between attention and MLP)")
    if policy.training_attention == "policy":
        for i, later in enumerate(blocks[pos:], start=pos):
            check_block_parts(later, f"block {i} (training under the policy softmax of the policy at {pos})")


SUPPORTED_FAMILIES = ("timm VisionTransformer models with global attention: vit_*, deit_*, deit3_*, "
                      "and others built on timm.models.vision_transformer.VisionTransformer")


def check_vit(model: nn.Module) -> None:
    """One check for every model `sparse_vit` cannot prune, with one message listing what it can.

    Needs timm's VisionTransformer interface (patch_embed, _pos_embed, blocks, norm, prefix tokens)
    and global timm `Attention` in every block; windowed (SAM), relative-position (BEiT), rotary
    (EVA) and non-ViT models fail here instead of with an AttributeError later."""
    from timm.layers import Attention

    reason = None
    missing = [a for a in ("patch_embed", "blocks", "norm", "_pos_embed", "patch_drop", "norm_pre",
                           "num_prefix_tokens") if not hasattr(model, a)]
    if missing:
        reason = f"it has no {', '.join(repr(a) for a in missing)}"
    elif not hasattr(getattr(model.patch_embed, "proj", None), "in_channels"):
        reason = "its patch embedding has no convolution 'proj'"
    else:
        for i, blk in enumerate(model.blocks):
            if not isinstance(getattr(blk, "attn", None), Attention):
                reason = f"block {i} has {type(getattr(blk, 'attn', None)).__name__} instead of global timm Attention"
                break
    if reason is not None:
        raise ValueError(f"model: sparse_vit cannot prune {type(model).__name__} ({reason}); "
                         f"supported: {SUPPORTED_FAMILIES}")


def image_grid(model: nn.Module, images: Tensor) -> tuple[int, int]:
    """Patch grid (H, W) of an image batch, after checking it is one the model can run: a
    non-empty [B, C, H, W] tensor of the model's dtype and device, finite, of a size it takes."""
    pe = model.patch_embed
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a [B, 3, H, W] tensor, got {_describe(images)}")
    if images.shape[0] == 0:
        raise ValueError("images: the batch is empty (B = 0); pass at least one image")
    weight = pe.proj.weight
    if images.dtype != weight.dtype:
        raise ValueError(f"images are {images.dtype} but the model is {weight.dtype}; "
                         f"convert with images.to({weight.dtype}) (or the model with model.to(dtype))")
    if images.device != weight.device:
        raise ValueError(f"images are on {images.device} but the model is on {weight.device}; "
                         f"move them with images.to({str(weight.device)!r})")
    if not torch.compiler.is_compiling():  # a data-dependent check would break a compiled graph
        check_finite("images", images)
    in_ch = pe.proj.in_channels
    if images.shape[1] != in_ch:
        raise ValueError(f"images have {images.shape[1]} channels, the model expects {in_ch}")
    ph, pw = pe.patch_size
    H, W = images.shape[-2:]
    if H % ph or W % pw:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {ph}x{pw}")
    grid = (H // ph, W // pw)
    if not getattr(model, "dynamic_img_size", False) and tuple(pe.grid_size) != grid:
        raise ValueError(
            f"image size {H}x{W} gives a {grid[0]}x{grid[1]} patch grid but the model was built for "
            f"{pe.grid_size[0]}x{pe.grid_size[1]}; create it with img_size=({H}, {W}) or dynamic_img_size=True"
        )
    return grid


def _describe(x: Any) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def embed(model: nn.Module, images: Tensor) -> Tensor:
    """Patch embedding, position embedding and prefix tokens: [B, P + N, C] (timm's own steps)."""
    x = model.patch_embed(images)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    return model.norm_pre(x)


def parse_schedule(schedule: Schedule, depth: int, default_policy: str = "random") -> dict[int, Policy]:
    """Normalise a schedule to {position: Policy}, validating positions and ratios."""
    if isinstance(schedule, str):
        schedule = parse_keep_string(schedule, default_policy)
    out: dict[int, Policy] = {}
    for pos, entry in schedule.items():
        if isinstance(pos, bool) or not isinstance(pos, int):
            raise ValueError(f"schedule positions must be ints, got {pos!r}")
        if not 0 <= pos < depth:
            raise ValueError(f"schedule position {pos} is outside the model's blocks 0..{depth - 1}")
        if isinstance(entry, Policy):
            out[pos] = entry
        elif isinstance(entry, (int, float)) and not isinstance(entry, bool):
            out[pos] = make_policy(default_policy, float(entry))
        elif isinstance(entry, tuple) and entry and isinstance(entry[0], str):
            name, ratio, opts = (tuple(entry) + (None, {}))[:3]
            if ratio is not None:
                check_ratio(ratio)
            out[pos] = make_policy(name, ratio, **(opts or {}))
        else:
            raise ValueError(f"schedule entry at {pos} must be a Policy, a ratio or (name, ratio[, options]); got {entry!r}")
    return dict(sorted(out.items()))


def parse_keep_string(text: str, policy: str = "random") -> dict[int, tuple]:
    """"1:0.6,3:0.8" -> {1: (policy, 0.6), 3: (policy, 0.8)}."""
    out: dict[int, tuple] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            pos_text, ratio_text = part.split(":")
            pos, ratio = int(pos_text), float(ratio_text)
        except ValueError:
            raise ValueError(f"bad schedule item {part!r}; expected POSITION:RATIO, e.g. '1:0.6,3:0.8'") from None
        if pos in out:
            raise ValueError(f"position {pos} appears twice in {text!r}")
        check_ratio(ratio)
        out[pos] = (policy, ratio)
    return out


def block_keys(block: nn.Module, x: Tensor) -> Tensor:
    """Attention keys [B, heads, n, head_dim] of a timm Block on input x (the block's own modules)."""
    return block_scores(block, x, keys=True)[1]


def block_attention(block: nn.Module, x: Tensor, attn_mask: Tensor | None = None, rows: int | None = None) -> Tensor:
    """Softmax attention weights [B, heads, q, n] of a timm Block on input x (for scoring only): every
    query (q = n) or, with `rows`, the first `rows` queries only (e.g. 1 for CLS-attention scores).

    Recomputes what it needs with the block's own modules; the block itself still runs with SDPA.
    """
    return block_scores(block, x, attn_mask, attention=True, rows=rows)[0]


def block_scores(block: nn.Module, x: Tensor, attn_mask: Tensor | None = None, *, attention: bool = False,
                 rows: int | None = None, keys: bool = False) -> tuple[Tensor | None, Tensor | None]:
    """(attention weights [B, heads, q, n] | None, keys [B, heads, n, head_dim] | None) of a timm Block
    on input x, with one projection of the block's input for both.

    rows: leading query rows of the weights (None: all n). With few rows only the key third of the
    qkv projection runs on every token (`qkv_part`) and the query third on the `rows` tokens, so a
    CLS score costs a third of a full recompute and no n x n softmax. Softmax in fp32 at least.
    """
    a = block.attn
    h = block.norm1(x)
    B, n, _ = h.shape
    q = k = None
    if attention and (rows is None or rows >= n):
        qkv = a.qkv(h).reshape(B, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k = a.q_norm(qkv[0]), a.k_norm(qkv[1])
    elif attention or keys:
        k = a.k_norm(qkv_part(a, h, 1))
        if attention:
            q = a.q_norm(qkv_part(a, h[:, :rows], 0))
    weights = attention_weights(q, k, a.scale, attn_mask) if attention else None
    return weights, (k if keys else None)


def qkv_part(attn: nn.Module, h: Tensor, part: int) -> Tensor:
    """One third of a timm Attention's qkv projection of h [B, n, C] (part 0 = q, 1 = k, 2 = v) as
    [B, heads, n, head_dim]; only that third of the weight runs when qkv is a plain nn.Linear."""
    B, n, _ = h.shape
    qkv = attn.qkv
    if type(qkv) is nn.Linear:
        d = attn.num_heads * attn.head_dim
        bias = None if qkv.bias is None else qkv.bias[part * d:(part + 1) * d]
        out = torch.nn.functional.linear(h, qkv.weight[part * d:(part + 1) * d], bias)
    else:
        out = qkv(h).reshape(B, n, 3, -1)[:, :, part]
    return out.reshape(B, n, attn.num_heads, attn.head_dim).transpose(1, 2)


def policy_scores(policy: Policy, block: nn.Module, x: Tensor, attn_mask: Tensor | None,
                  num_prefix: int) -> tuple[Tensor | None, Tensor | None]:
    """(ctx.attn, ctx.keys) for `policy` at `block` on input x: only what it asked for, attention
    limited to the query rows it reads (`Policy.attention_queries`)."""
    if not (policy.needs_attention or policy.needs_keys):
        return None, None
    rows = policy.attention_queries(num_prefix) if policy.needs_attention else None
    return block_scores(block, x, attn_mask, attention=policy.needs_attention, rows=rows, keys=policy.needs_keys)


def call_block(block: nn.Module, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """block(x), with attn_mask= only when there is one (the plain SDPA path otherwise)."""
    return block(x) if attn_mask is None else block(x, attn_mask=attn_mask)


_COMPILED_BLOCK_CALL = None


def compiled_block_call():
    """`call_block` under `torch.compile` (one compiled function for every block: parameters are
    graph inputs, so blocks of one model share a graph; a new token count recompiles once, then the
    count becomes dynamic)."""
    global _COMPILED_BLOCK_CALL
    if _COMPILED_BLOCK_CALL is None:
        _COMPILED_BLOCK_CALL = torch.compile(call_block)
    return _COMPILED_BLOCK_CALL


def to_image_layout(x: Tensor, grid: tuple[int, int]) -> Tensor:
    """[B, N, C] -> [B, C, H, W]."""
    B, N, C = x.shape
    return x.transpose(1, 2).reshape(B, C, *grid)


# ------------------------------------------------------------------------------------------------
# Execution: one object per forward call, so no state leaks between calls.


class _Run:
    def __init__(self, owner: SparseViT, x: Tensor, grid: tuple[int, int], stream: Any,
                 return_layers: tuple[int, ...]) -> None:
        self.owner, self.model, self.grid, self.stream = owner, owner.model, grid, stream
        self.P = owner.model.num_prefix_tokens
        self.N = grid[0] * grid[1]
        check_grid(x.shape[1] - self.P, grid)
        self.x = x
        self.return_layers = return_layers
        self.layers: dict[int, Tensor] = {}
        self.keep_masks: dict[int, Tensor] = {}
        self.ragged_runs: dict[int, str] = {}  # block -> how it ran a padded batch (gather execution)
        self.scratch: dict = {}
        self.aux: dict = {}
        self.observers = {}
        for pos, pol in owner.schedule.items():
            for p in pol.observe_positions:
                self.observers.setdefault(p, []).append(pol)

    def context(self, pos: int, policy: Policy, **kw: Any) -> PolicyContext:
        return PolicyContext(position=pos, num_blocks=self.owner.depth, grid=self.grid, stream=self.stream,
                             scratch=self.scratch, aux=self.aux, grid_features=self.grid_features, **kw)

    def visit(self, pos: int) -> None:
        """Hand the input of block `pos` to observers and to return_layers, before its policy acts."""
        if pos in self.return_layers:
            self.layers[pos] = to_image_layout(self.grid_features(), self.grid)
        for pol in self.observers.get(pos, ()):
            pol.observe(pos, self.grid_features(), self.alive_grid(), self.stream)

    def finish(self) -> SparseViTOutput:
        self.visit(self.owner.depth)
        full = self.model.norm(torch.cat([self.prefix_tokens(), self.grid_features()], dim=1))
        return SparseViTOutput(
            features=to_image_layout(full[:, self.P:], self.grid),
            keep_masks=self.keep_masks,
            pkr=call_pkr(self.keep_masks),
            aux=self.aux,
            layers=self.layers,
            prefix=full[:, : self.P],
            ragged=self.ragged_runs,
        )


class _MaskRun(_Run):
    """Masking execution: all tokens flow; the mask in force hides pruned keys and gates updates.

    The form comes from the policy that acted last: "hard" (boolean key padding, gated residual:
    the mask's gradient flows through the gate only) or "policy" (DynamicViT's policy softmax,
    differentiable w.r.t. the mask; no gate when the policy declares `training_gate = False`).
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.alive = self.x.new_ones(self.x.shape[0], self.N)
        self.dense = True  # no policy has acted yet: plain SDPA, no mask
        self.gate = True
        self.attn_mask: Tensor | None = None  # hard key mask of `alive` ("hard" form)
        self.attend = None  # policy-softmax attention of `alive` ("policy" form)

    def grid_features(self) -> Tensor:
        return self.x[:, self.P:]

    def prefix_tokens(self) -> Tensor:
        return self.x[:, : self.P]

    def alive_grid(self) -> Tensor:
        return self.alive

    def run(self) -> SparseViTOutput:
        B = self.x.shape[0]
        index = torch.arange(self.N, device=self.x.device).expand(B, -1)
        for pos, block in enumerate(self.model.blocks):
            self.visit(pos)
            policy = self.owner.policy_at(pos)
            mid = policy is not None and policy.acts_after_attention
            if policy is not None and not mid:
                self.apply(pos, policy, index, block)
            self.keep_masks[pos] = (self.alive > 0.5).detach()
            if self.dense and not mid:
                self.x = block(self.x)
                continue
            if not mid:
                y = block(self.x, attn_mask=self.attn_mask) if self.attend is None else \
                    mlp_part(block, attention_part(block, self.x, attend=self.attend))
                self.x = self.gated(y)
                continue
            attn, keys = self.scores(policy, block)
            self.x = self.gated(attention_part(block, self.x, self.attn_mask, self.attend))
            self.apply(pos, policy, index, block, attn, keys)
            self.x = self.gated(mlp_part(block, self.x))
        return self.finish()

    def gated(self, y: Tensor) -> Tensor:
        """x <- m * y + (1 - m) * x on the patch tokens (prefix takes y); y itself without a gate."""
        if self.dense or not self.gate:
            return y
        m = self.alive.unsqueeze(-1).to(y.dtype)
        return torch.cat([y[:, : self.P], m * y[:, self.P:] + (1 - m) * self.x[:, self.P:]], dim=1)

    def scores(self, policy: Policy, block: nn.Module) -> tuple[Tensor | None, Tensor | None]:
        """The attention weights / keys a policy asked for, of `block` on the current input."""
        return policy_scores(policy, block, self.x, self.attn_mask, self.P)

    def apply(self, pos: int, policy: Policy, index: Tensor, block: nn.Module,
              attn: Tensor | None = None, keys: Tensor | None = None) -> None:
        if not policy.acts_after_attention:
            attn, keys = self.scores(policy, block)
        ctx = self.context(pos, policy, tokens=self.x[:, self.P:], index=index, prefix=self.x[:, : self.P],
                           training=True, alive=self.alive, attn=attn, keys=keys)
        decision = policy(ctx)
        if isinstance(decision, Merge):
            raise ValueError(f"policy at {pos} merges tokens; merging runs in gather (inference) execution only")
        keep = decision.keep if decision.keep is not None else decision.keep_grid
        if keep.shape != self.alive.shape:
            raise ValueError(f"policy at {pos} returned a keep mask of shape {tuple(keep.shape)}, expected {tuple(self.alive.shape)}")
        if decision.tokens is not None:
            self.x = torch.cat([self.x[:, : self.P], decision.tokens], dim=1)
        self.alive = keep.to(self.x.dtype)
        self.dense = False
        self.gate = policy.training_gate
        if policy.training_attention == "policy":
            self.attn_mask = None
            self.attend = policy_attention(policy_vector(self.alive, self.P), self.owner.policy_eps)
        else:
            self.attn_mask = key_padding_mask(self.alive, self.P)
            self.attend = None


class _GatherRun(_Run):
    """Gather execution: only live tokens run; a full-grid buffer keeps every position's last feature."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        B = self.x.shape[0]
        patches = self.x[:, self.P:]
        self.full = patches  # last feature of every grid position (valid where owner < 0)
        self.state = TokenState.from_grid(patches, self.grid)
        # owner[b, p] = slot of the live token standing for grid position p, or -1 once pruned
        self.owner_map: Tensor | None = None  # None: identity (nothing pruned yet)
        self.flushed = True  # full is up to date with the live tokens
        self.attn_mask: Tensor | None = None
        # (real tokens per sample, their flat rows, key mask for "pack" | None) while a padded batch splits
        self.ragged: tuple[list[int], Tensor, Tensor | None] | None = None
        self.processed = torch.ones(B, self.N, dtype=torch.bool, device=self.x.device)
        self.counts_vary = False  # a policy whose kept count follows the input has acted (kernels.py)

    # -- state access --
    def prefix_tokens(self) -> Tensor:
        return self.x[:, : self.P]

    def live_tokens(self) -> Tensor:
        return self.x[:, self.P:]

    def grid_features(self) -> Tensor:
        """Full grid [B, N, C]: live tokens (merged ones fill their group), pruned keep their last feature."""
        if not self.flushed:
            live = self.live_tokens()
            if self.owner_map is None:
                self.full = live
            else:
                owned = self.owner_map >= 0
                from_live = gather_tokens(live, self.owner_map.clamp(min=0))
                self.full = torch.where(owned.unsqueeze(-1), from_live, self.full)
            self.flushed = True
        return self.full

    def alive_grid(self) -> Tensor:
        return self.processed

    # -- main loop --
    def run(self) -> SparseViTOutput:
        for pos, block in enumerate(self.model.blocks):
            self.visit(pos)
            policy = self.owner.policy_at(pos)
            if policy is not None and policy.acts_after_attention:
                self.keep_masks[pos] = self.processed  # the block's attention ran on these tokens
                if self.state.valid is not None:
                    self.ragged_runs[pos] = "pad"
                self.x, attn, keys = self.attention_with_scores(policy, block)
                self.flushed = False
                with self.kernels():
                    self.apply(pos, policy, block, attn, keys)
                with self.kernels():
                    self.x = mlp_part(block, self.x)
                self.flushed = False
                continue
            if policy is not None:
                with self.kernels():
                    self.apply(pos, policy, block)
            with self.kernels():
                if self.ragged is not None and is_prenorm_block(block):
                    self.x = split_block(block, self.x, *self.ragged)
                    self.ragged_runs[pos] = "pack" if self.ragged[2] is not None else "split"
                else:
                    self.x = (compiled_block_call() if self.owner.compile else call_block)(block, self.x,
                                                                                          self.attn_mask)
                    if self.state.valid is not None:
                        self.ragged_runs[pos] = "pad"
            self.flushed = False
            self.keep_masks[pos] = self.processed
        return self.finish()

    def kernels(self) -> ContextManager[None]:
        """Whether oneDNN may run the next step (`patchprune/kernels.py`): not once a policy whose
        counts follow the input has acted (the shapes move from call to call). Compiled blocks
        bring their own kernels."""
        if self.owner.compile:
            return nullcontext()
        return kernels_for(self.counts_vary, self.x.device)

    def scores(self, policy: Policy, block: nn.Module) -> tuple[Tensor | None, Tensor | None]:
        """The attention weights / keys a policy asked for, of `block` on the current live tokens."""
        return policy_scores(policy, block, self.x, self.attn_mask, self.P)

    def attention_with_scores(self, policy: Policy, block: nn.Module) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Block's attention branch plus the weights / keys a mid-block policy asked for, from the
        branch's own q / k when the block allows it (`reuses_qkv`), else by a separate scoring pass."""
        if (policy.needs_attention or policy.needs_keys) and reuses_qkv(block):
            rows = None
            if policy.needs_attention:
                rows = policy.attention_queries(self.P) or self.x.shape[1]
            return attention_part_scored(block, self.x, self.attn_mask, rows=rows, keys=policy.needs_keys)
        attn, keys = self.scores(policy, block)
        return attention_part(block, self.x, self.attn_mask), attn, keys

    def apply(self, pos: int, policy: Policy, block: nn.Module,
              attn: Tensor | None = None, keys: Tensor | None = None) -> None:
        st = self.state
        alive = st.valid if st.valid is not None else torch.ones_like(st.index, dtype=torch.bool)
        if not policy.acts_after_attention:
            attn, keys = self.scores(policy, block)
        ctx = self.context(pos, policy, tokens=self.live_tokens(), index=st.index, prefix=self.prefix_tokens(),
                           training=False, alive=alive, valid=st.valid, size=st.size, attn=attn, keys=keys)
        decision = policy(ctx)
        if not (isinstance(decision, Merge) and bool((decision.assign >= 0).all())):
            self.grid_features()  # pruned positions must keep the feature they have now (a merge that
            # keeps every live slot prunes nothing: its groups stand for every position they held)
        if isinstance(decision, Merge):
            self.merge(pos, decision)
        elif decision.keep is not None:
            self.keep_live(pos, decision, alive)
        else:
            self.keep_grid(pos, decision)
        self.processed = self.processed_mask()
        self.attn_mask = self.build_attn_mask()
        self.ragged = self.ragged_layout()
        self.counts_vary = self.counts_vary or policy.counts_vary

    def keep_live(self, pos: int, decision: Decision, alive: Tensor) -> None:
        st = self.state
        keep = decision.keep
        if keep.shape != st.index.shape or keep.dtype != torch.bool:
            raise ValueError(
                f"policy at {pos} returned keep {tuple(keep.shape)} {keep.dtype}; expected bool {tuple(st.index.shape)}"
            )
        keep = keep_at_least_one(keep & alive, eligible=alive)  # an empty sample keeps its first live slot
        tokens = decision.tokens if decision.tokens is not None else self.live_tokens()
        slots, valid = mask_to_slots(keep)
        new_of_old = _slot_remap(slots, valid, st.index.shape[1])
        self.owner_map = (
            new_of_old if self.owner_map is None else _compose_owner(self.owner_map, new_of_old)
        )
        self.state = TokenState(
            tokens=gather_tokens(tokens, slots), index=st.index.gather(1, slots), grid=self.grid,
            size=None if st.size is None else st.size.gather(1, slots), valid=valid,
        )
        self.x = torch.cat([self.prefix_tokens(), self.state.tokens], dim=1)

    def keep_grid(self, pos: int, decision: Decision) -> None:
        keep = decision.keep_grid
        if keep.shape != (self.x.shape[0], self.N) or keep.dtype != torch.bool:
            raise ValueError(f"policy at {pos} returned keep_grid {tuple(keep.shape)} {keep.dtype}; expected bool [B, N]")
        if self.state.size is not None:
            raise ValueError(f"policy at {pos} re-selects grid positions after a merge; that is not supported")
        keep = keep_at_least_one(keep)  # an empty sample keeps position 0
        slots, valid = mask_to_slots(keep)
        self.owner_map = _slot_remap(slots, valid, self.N)
        self.state = TokenState(tokens=gather_tokens(self.full, slots), index=slots, grid=self.grid, valid=valid)
        self.x = torch.cat([self.prefix_tokens(), self.state.tokens], dim=1)

    def merge(self, pos: int, m: Merge) -> None:
        st = self.state
        if st.valid is not None:
            raise ValueError(f"policy at {pos} merges tokens of a padded batch; merging needs equal counts per sample")
        if m.assign.shape != st.index.shape:
            raise ValueError(f"policy at {pos}: Merge.assign has shape {tuple(m.assign.shape)}, expected {tuple(st.index.shape)}")
        identity = torch.arange(self.N, device=self.x.device).expand_as(m.assign) if self.owner_map is None else None
        base = identity if identity is not None else self.owner_map
        owned = base >= 0
        self.owner_map = torch.where(owned, m.assign.gather(1, base.clamp(min=0)), base)
        self.state = TokenState(tokens=m.tokens, index=m.index, grid=self.grid, size=m.size)
        self.x = torch.cat([self.prefix_tokens(), m.tokens], dim=1)

    def processed_mask(self) -> Tensor:
        st = self.state
        mask = torch.zeros(st.index.shape[0], self.N + 1, dtype=torch.bool, device=st.index.device)
        target = st.index if st.valid is None else torch.where(st.valid, st.index, torch.full_like(st.index, self.N))
        return mask.scatter(1, target, True)[:, : self.N]

    def ragged_layout(self) -> tuple[list[int], Tensor, Tensor | None] | None:
        """`split_block`'s (real tokens per sample, prefix included; their rows in x flattened; the
        key mask when attention runs padded ("pack") else None) for a padded batch under a plain key
        mask that the runner's `ragged_mode` does not run padded; else None."""
        if self.attn_mask is None or self.attn_mask.dtype != torch.bool:
            return None
        mode = self.owner.ragged_mode(self.x.device)
        if mode == "pad":
            return None
        real = self.attn_mask[:, 0, 0, :]
        return real.sum(1).tolist(), real.flatten().nonzero().squeeze(1), (self.attn_mask if mode == "pack" else None)

    def build_attn_mask(self) -> Tensor | None:
        """Key mask [B, 1, 1, P+n]: bool for padding only, additive float when sizes are present."""
        st = self.state
        use_size = st.size is not None and self.owner.proportional_attention
        if st.valid is None and not use_size:
            return None
        B = st.index.shape[0]
        if not use_size:
            keys = torch.cat([st.valid.new_ones(B, self.P), st.valid], dim=1)
            return keys[:, None, None, :]
        bias = torch.log(st.size.to(self.x.dtype).clamp(min=1))
        if st.valid is not None:
            bias = bias.masked_fill(~st.valid, float("-inf"))
        keys = torch.cat([bias.new_zeros(B, self.P), bias], dim=1)
        return keys[:, None, None, :]


def _slot_remap(slots: Tensor, valid: Tensor | None, n_old: int) -> Tensor:
    """[B, n_old] long: new slot of each old slot (-1 when dropped). Padding slots write nowhere."""
    B, k = slots.shape
    new = torch.arange(k, device=slots.device).expand(B, -1)
    target = slots if valid is None else torch.where(valid, slots, torch.full_like(slots, n_old))
    out = torch.full((B, n_old + 1), -1, dtype=torch.long, device=slots.device)
    return out.scatter(1, target, new)[:, :n_old]


def _compose_owner(owner: Tensor, new_of_old: Tensor) -> Tensor:
    owned = owner >= 0
    return torch.where(owned, new_of_old.gather(1, owner.clamp(min=0)), owner)


__all__ = ["sparse_vit", "SparseViT", "SparseViTOutput", "parse_schedule", "parse_keep_string",
           "block_attention", "block_keys", "block_scores", "check_vit", "image_grid", "embed"]
