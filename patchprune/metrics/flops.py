"""FLOPs and MACs with torch.utils.flop_counter, plus the closed-form ViT cost it is checked against.

Convention: 1 MAC = 2 FLOPs. Most pruning papers report MACs and call them FLOPs; we name both.
torch's FlopCounterMode has no formula for the CPU SDPA kernel (it would count attention as zero),
so one is registered here: dense and pruned runs, SDPA or eager, are counted alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_formulas() -> dict:
    ops = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"):
        op = getattr(aten, name, None)
        if op is not None:
            ops[op] = _sdpa_cpu_flop
    return ops


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one call; `macs` = flops / 2. `by_module` maps module names to FLOPs."""

    flops: int
    by_module: Mapping[str, int]

    @property
    def macs(self) -> float:
        return self.flops / 2

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def flops(module: nn.Module, inputs: Any, **kwargs: Any) -> FlopCount:
    """Count the FLOPs of `module(*inputs, **kwargs)` (inputs: a tensor or a tuple of arguments).

    Runs the module once under FlopCounterMode in no-grad mode; matmul-type ops only (norms,
    softmax and activations are not counted, as in the closed form).
    """
    return flops_with_output(module, inputs, **kwargs)[0]


def flop_counter() -> FlopCounterMode:
    """The project's FlopCounterMode: torch's formulas plus the CPU SDPA kernels' (see the module
    docstring). Every count goes through it, so CPU and GPU runs count attention alike."""
    return FlopCounterMode(display=False, custom_mapping=_extra_formulas())


def flops_with_output(module: nn.Module, inputs: Any, **kwargs: Any) -> tuple[FlopCount, Any]:
    """`flops`, also returning the call's output (so token counts of that same call can be read)."""
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    counter = flop_counter()
    with torch.no_grad(), counter:
        out = module(*args, **kwargs)
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return FlopCount(flops=counter.get_total_flops(), by_module=per_module), out


def vit_block_macs(tokens: float, dim: int, mlp_hidden: int) -> float:
    """MACs of one pre-norm ViT block on `tokens` tokens: qkv + proj (4 n C^2), QK^T and AV (2 n^2 C), MLP.

    `tokens` may be fractional (a batch mean); for a batch with different counts per sample, sum
    this over the samples rather than calling it on the mean (attention is quadratic).
    """
    return 4 * tokens * dim * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * mlp_hidden


def vit_macs(model: nn.Module, grid: tuple[int, int], tokens_per_block: list[float] | None = None) -> float:
    """Closed-form MACs per image of a timm ViT's forward_features at a patch grid.

    tokens_per_block: patch tokens processed by each block (prefix tokens are added); default dense.
    """
    dim = model.embed_dim
    mlp_hidden = model.blocks[0].mlp.fc1.out_features
    pe = model.patch_embed.proj
    n = grid[0] * grid[1]
    if hasattr(pe, "macs"):  # a multi-layer stem (e.g. `vis.stem.ConvStem`) counts itself
        ph, pw = model.patch_embed.patch_size
        embed = pe.macs(grid[0] * ph, grid[1] * pw)
    else:
        embed = n * pe.in_channels * pe.kernel_size[0] * pe.kernel_size[1] * pe.out_channels
    P = model.num_prefix_tokens
    counts = tokens_per_block if tokens_per_block is not None else [n] * len(model.blocks)
    if len(counts) != len(model.blocks):
        raise ValueError(f"tokens_per_block has {len(counts)} entries for {len(model.blocks)} blocks")
    return embed + sum(vit_block_macs(t + P, dim, mlp_hidden) for t in counts)

