"""Gumbel-softmax utilities with both temperature conventions.

VPP convention (the spec's, used by SM and Map-SM): softmax(z + g / tau), g ~ Gumbel(0, 1), so a
large tau (10) scales the noise DOWN. The standard convention (torch's gumbel_softmax, used by
SViT and DynamicViT with tau = 1) is softmax((z + g) / tau). With tau = 1 they coincide.

"Hard" means the one-hot of the argmax with a straight-through gradient: onehot + soft - soft.detach().
Class 0 of a two-class selector is "keep" everywhere in this package.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Convention = Literal["vpp", "standard"]
KEEP = 0  # class index of "keep" in every two-class selector


def gumbel_noise(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel(0, 1) samples with the shape, dtype and device of `like`."""
    u = torch.rand(like.shape, device=like.device, dtype=torch.float32, generator=generator)
    tiny = torch.finfo(torch.float32).tiny
    return (-torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - 1e-7)))).to(like.dtype)


def perturb(
    logits: Tensor,
    tau: float,
    noise: bool = True,
    convention: Convention = "vpp",
    generator: torch.Generator | None = None,
) -> Tensor:
    """The perturbed, temperature-scaled logits whose softmax is the Gumbel-softmax."""
    if tau <= 0:
        raise ValueError(f"Gumbel temperature must be positive, got {tau}")
    if convention not in ("vpp", "standard"):
        raise ValueError(f"convention must be 'vpp' or 'standard', got {convention!r}")
    g = gumbel_noise(logits, generator) if noise else torch.zeros_like(logits)
    if convention == "vpp":
        return logits + g / tau
    return (logits + g) / tau


def straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    """Forward value `hard`, gradient of `soft`."""
    return hard + soft - soft.detach()


def one_hot_argmax(y: Tensor, dim: int = -1) -> Tensor:
    """One-hot of the argmax along `dim` (first index on ties), same dtype as y."""
    index = y.argmax(dim=dim, keepdim=True)
    return torch.zeros_like(y).scatter_(dim, index, 1.0)


def gumbel_softmax(
    logits: Tensor,
    tau: float = 10.0,
    hard: bool = True,
    noise: bool = True,
    dim: int = -1,
    convention: Convention = "vpp",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Gumbel-softmax of `logits` along `dim`; hard = straight-through one-hot of the argmax.

    `-inf` logits stay impossible. Rows that are entirely -inf are the caller's error (NaN);
    callers guarantee at least one finite logit per row.
    """
    y = perturb(logits, tau, noise, convention, generator)
    soft = F.softmax(y, dim=dim)
    if not hard:
        return soft
    return straight_through(one_hot_argmax(y, dim), soft)


def keep_decision(
    logits: Tensor,
    tau: float,
    noise: bool = True,
    convention: Convention = "vpp",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Hard keep/drop mask [...] of two-class logits [..., 2] (class 0 = keep): 1.0 where kept, with
    the straight-through gradient of the soft keep probability. Keep iff the perturbed keep logit
    beats the drop logit (ties go to keep, as argmax takes the first index)."""
    if logits.shape[-1] != 2:
        raise ValueError(f"keep decisions need two-class logits [..., 2], got shape {tuple(logits.shape)}")
    return gumbel_softmax(logits, tau, True, noise, -1, convention, generator)[..., KEEP]


def keeps(y: Tensor) -> Tensor:
    """Bool [...] of perturbed two-class logits y [..., 2]: the keep logit wins (ties keep), the hard
    part of `keep_decision` without its gradient branch (inference)."""
    return y[..., KEEP] >= y[..., 1 - KEEP]
