"""Running one timm ViT block in parts, and the attention forms training under a mask uses.

The sparse ViT runner calls the user's own block modules, never a copy or a patched class:

- `attention_part` / `mlp_part`: the block's two residual branches, called separately so a policy
  can act between a block's attention and its MLP (EViT and ToMe prune / merge there, as published).
  `attention_part` can take a replacement for the softmax step (DynamicViT's policy softmax).
- `split_block` / `packed_attention`: a whole block over a padded batch without its padding (the
  real tokens packed into one sequence: projections and MLP once over all, attention per sample),
  the gather runner's execution of samples that keep different counts on a CPU.
- `key_padding_mask`: the hard boolean key mask of masking execution (VPP, SViT): pruned keys are
  hidden from every query, pruned queries included, and no gradient reaches the mask through it.
- `policy_softmax` / `policy_attention`: DynamicViT's training attention,
  A = (e^{s - max} P + eps / n) / (sum_j e^{s - max} P + eps), P_ij = m_j + (1 - m_j) [i == j].
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLOCK_PARTS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")
POLICY_SOFTMAX_EPS = 1e-6  # DynamicViT's softmax_with_policy default

Attend = Callable[[nn.Module, Tensor], Tensor]  # (attention module, normed x) -> attention output


def check_block_parts(block: nn.Module, why: str) -> None:
    """ValueError unless `block` is a pre-norm timm Block whose branches can be called one by one."""
    missing = [name for name in BLOCK_PARTS if not hasattr(block, name)]
    if missing:
        raise ValueError(f"{why} needs a timm Block with {', '.join(BLOCK_PARTS)}; "
                         f"{type(block).__name__} has no {', '.join(missing)}")
    if not is_prenorm_block(block):
        raise ValueError(f"{why} needs timm's pre-norm Block (x + attn(norm1(x)), then x + mlp(norm2(x))); "
                         f"{type(block).__name__} runs its forward differently, so its branches cannot be "
                         "called one by one")


def is_prenorm_block(block: nn.Module) -> bool:
    """True when `block` runs timm's pre-norm `Block.forward` (that class or a subclass keeping its
    forward): the order `attention_part` then `mlp_part` reproduce. A post-norm `ResPostBlock` has the
    same submodule names and a different forward, so names alone do not tell."""
    from timm.models.vision_transformer import Block

    return isinstance(block, Block) and type(block).forward is Block.forward


def attention_part(block: nn.Module, x: Tensor, attn_mask: Tensor | None = None,
                   attend: Attend | None = None) -> Tensor:
    """x + drop_path1(ls1(attn(norm1(x)))): the block's attention branch (SDPA unless `attend` is given)."""
    h = block.norm1(x)
    a = block.attn(h, attn_mask=attn_mask) if attend is None else attend(block.attn, h)
    return x + block.drop_path1(block.ls1(a))


def attention_part_scored(block: nn.Module, x: Tensor, attn_mask: Tensor | None = None, *,
                          rows: int | None = None, keys: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """`attention_part` that also hands back what a policy acting after the attention scores with,
    from the block's own q / k (no second projection): (x + attention branch, softmax weights of the
    first `rows` queries [B, heads, rows, n] or None, keys [B, heads, n, head_dim] or None).

    The branch runs timm Attention's steps with the block's submodules (qkv, q_norm / k_norm, SDPA,
    norm, gate, proj), so its output is the one `attention_part` gives. Only for a fused-attention
    timm `Attention` in eval mode (`reuses_qkv`); callers fall back to a separate scoring pass otherwise.
    """
    a = block.attn
    h = block.norm1(x)
    B, n, _ = h.shape
    gate = attention_gate(a, h)
    q, k, v = a.qkv(h).reshape(B, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = a.q_norm(q), a.k_norm(k)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    out = attention_output(a, out.transpose(1, 2).reshape(B, n, a.num_heads * a.head_dim), gate)
    y = x + block.drop_path1(block.ls1(out))
    weights = None if rows is None else attention_weights(q[:, :, :rows], k, a.scale, attn_mask)
    return y, weights, (k if keys else None)


def split_block(block: nn.Module, x: Tensor, lengths: list[int], rows: Tensor,
                attn_mask: Tensor | None = None) -> Tensor:
    """block(x) for a padded batch x [B, n, C] whose sample b holds its real tokens in its first
    lengths[b] slots (`rows`: their indices in x flattened to [B * n, C]), without running the padding
    through the block's projections and MLP.

    The real tokens are packed into one sequence [1, T, C]: the MLP branch and (for a plain timm
    `Attention`, `reuses_qkv`) the qkv / proj GEMMs run once over all of them. Attention itself runs
    per sample on its own tokens (attn_mask None: no padding anywhere, one SDPA call a sample) or,
    given the batch's key mask [B, 1, 1, n], in one padded SDPA call (padding only in the attention
    core; no per-sample calls). Other attention modules run on their own inputs the same two ways.
    Padding slots keep their input. Needs `is_prenorm_block`.
    """
    flat = x.reshape(-1, x.shape[-1])
    packed = flat.index_select(0, rows).unsqueeze(0)
    if reuses_qkv(block):
        layout = None if attn_mask is None else (rows, attn_mask)
        branch = packed_attention(block.attn, block.norm1(packed), lengths, padded=layout)
        y = packed + block.drop_path1(block.ls1(branch))
    elif attn_mask is None:
        y = torch.cat([attention_part(block, part) for part in packed.split(lengths, dim=1)], dim=1)
    else:
        y = attention_part(block, x, attn_mask).reshape(-1, x.shape[-1]).index_select(0, rows).unsqueeze(0)
    y = mlp_part(block, y)
    return flat.index_copy(0, rows, y[0]).reshape(x.shape)


def packed_attention(a: nn.Module, h: Tensor, lengths: list[int],
                     padded: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """A timm `Attention` over h [1, T, C] holding sequences of `lengths` back to back: one qkv and
    one proj projection over all T tokens; SDPA per sequence (none sees another's keys) or, with
    `padded` = (rows, key mask [B, 1, 1, n]), once over q / k / v scattered into the padded batch.
    timm's own steps with its submodules (q_norm / k_norm, norm, gate), as in `attention_part_scored`."""
    T = h.shape[1]
    heads, d = a.num_heads, a.head_dim
    gate = attention_gate(a, h)
    qkv = a.qkv(h)[0]
    if padded is None:
        q, k, v = qkv.reshape(T, 3, heads, d).permute(1, 2, 0, 3).unbind(0)  # [heads, T, d]
        q, k = a.q_norm(q), a.k_norm(k)
        outs = [F.scaled_dot_product_attention(qs[None], ks[None], vs[None])[0].transpose(0, 1)
                for qs, ks, vs in zip(q.split(lengths, 1), k.split(lengths, 1), v.split(lengths, 1))]
        out = torch.cat(outs, dim=0).reshape(1, T, heads * d)
    else:
        rows, mask = padded
        B, n = mask.shape[0], mask.shape[-1]
        full = qkv.new_zeros(B * n, qkv.shape[-1]).index_copy(0, rows, qkv)
        q, k, v = full.reshape(B, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # [B, heads, n, d]
        q, k = a.q_norm(q), a.k_norm(k)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = o.transpose(1, 2).reshape(B * n, heads * d).index_select(0, rows).unsqueeze(0)
    return attention_output(a, out, gate)


def attention_gate(a: nn.Module, h: Tensor) -> Tensor | None:
    """A timm `Attention`'s output gate sigmoid(gate(h)) of its input h, or None without one."""
    return a.gate(h).sigmoid() if getattr(a, "gate", None) is not None else None


def attention_output(a: nn.Module, out: Tensor, gate: Tensor | None) -> Tensor:
    """A timm `Attention`'s steps after the weighted sum out [B, n, heads * head_dim]: its norm
    (when it has one), the gate, the output projection and its dropout."""
    norm = getattr(a, "norm", None)
    if norm is not None:
        out = norm(out)
    if gate is not None:
        out = out * gate
    return a.proj_drop(a.proj(out))


def attention_weights(q: Tensor, k: Tensor, scale: float, attn_mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T * scale + mask) [B, heads, q, n] in fp32 at least (a bool mask hides keys)."""
    logits = (q * scale) @ k.transpose(-2, -1)
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else logits + attn_mask
    return logits.softmax(-1, dtype=torch.promote_types(logits.dtype, torch.float32))


def reuses_qkv(block: nn.Module) -> bool:
    """True when `attention_part_scored` reproduces the block's attention branch: a timm `Attention`
    (that exact class, so no overridden forward) with fused attention, in eval mode."""
    from timm.layers import Attention

    a = getattr(block, "attn", None)
    return type(a) is Attention and bool(getattr(a, "fused_attn", False)) and not a.training


def mlp_part(block: nn.Module, x: Tensor) -> Tensor:
    """x + drop_path2(ls2(mlp(norm2(x)))): the block's MLP branch."""
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def key_padding_mask(alive: Tensor, num_prefix: int) -> Tensor:
    """Bool key mask [B, 1, 1, P+N] (True = the key takes part) of a keep mask [B, N] (> 0.5 = kept).

    Prefix keys always take part. A sample with no key at all (no prefix and nothing kept; the
    learned policies never produce one) attends to every key instead of giving an all-masked,
    NaN row: its patch updates are discarded by the runner's gate anyway.
    """
    keys = alive.detach() > 0.5
    if num_prefix:
        keys = torch.cat([keys.new_ones(keys.shape[0], num_prefix), keys], dim=1)
    else:
        keys = keys | ~keys.any(dim=1, keepdim=True)
    return keys[:, None, None, :]


def policy_vector(alive: Tensor, num_prefix: int) -> Tensor:
    """[B, P+N] policy of DynamicViT's attention: 1 for prefix tokens, the keep mask for patches."""
    if not num_prefix:
        return alive
    return torch.cat([alive.new_ones(alive.shape[0], num_prefix), alive], dim=1)


def policy_softmax(logits: Tensor, policy: Tensor, eps: float = POLICY_SOFTMAX_EPS) -> Tensor:
    """DynamicViT's softmax_with_policy: logits [B, H, n, n], policy [B, n] (prefix included).

    P_ij = m_j + (1 - m_j) [i == j]; A = (e^{s - max} P + eps / n) / (sum_j e^{s - max} P + eps).
    The max is taken over all keys (pruned ones included), as in the authors' code.
    """
    n = logits.shape[-1]
    m = policy.to(logits.dtype)[:, None, None, :]
    eye = torch.eye(n, dtype=logits.dtype, device=logits.device)
    weight = m + (1.0 - m) * eye
    e = (logits - logits.max(dim=-1, keepdim=True).values).exp() * weight
    return (e + eps / n) / (e.sum(dim=-1, keepdim=True) + eps)


def policy_attention(policy: Tensor, eps: float = POLICY_SOFTMAX_EPS) -> Attend:
    """An `attend` for `attention_part` computing a timm Attention with `policy_softmax` (explicit logits)."""

    def attend(attn: nn.Module, x: Tensor) -> Tensor:
        B, n, _ = x.shape
        gate = attention_gate(attn, x)
        qkv = attn.qkv(x).reshape(B, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        a = policy_softmax((q * attn.scale) @ k.transpose(-2, -1), policy, eps)
        return attention_output(attn, (attn.attn_drop(a) @ v).transpose(1, 2).reshape(B, n, -1), gate)

    return attend


__all__ = ["attention_part", "attention_part_scored", "split_block", "packed_attention", "is_prenorm_block", "attention_weights", "reuses_qkv", "mlp_part", "key_padding_mask", "policy_vector", "policy_softmax",
           "policy_attention", "check_block_parts", "BLOCK_PARTS", "POLICY_SOFTMAX_EPS"]
