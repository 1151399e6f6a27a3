"""Elementwise kernels for blocks whose token count changes from call to call.

On a CPU PyTorch runs GELU (fp32 / bf16) through oneDNN, which compiles one kernel per tensor shape
and caches it (1,024 kernels by default, `ONEDNN_PRIMITIVE_CACHE_CAPACITY`). A policy whose kept
count follows the input (`Policy.counts_vary`: VPP's modules, SViT, random-bernoulli) gives every
later block a new shape on almost every call, so each call compiles new kernels and adds cache
entries: a 512 px ViT-S/16 with VPP's Map-SM at batch 8 grew its process by 0.86 GB over 175
forwards, still growing, and not at all with the cache off (docs/benchmarks.md, "oneDNN's per-shape
kernels"). Gather execution therefore runs every step after such a policy's site under
`onednn_off()` (ATen's own kernels: no compile, no cache entry). The choice depends on the schedule
only, never on earlier calls, so a video's result does not depend on which videos a process saw
before it (distributed evaluation gives the one-process results bit for bit). Fixed budgets keep
oneDNN everywhere.

The switch is `torch.backends.mkldnn.enabled`, PyTorch's public process-wide flag: while such a
block runs, other threads of the process see it off too. When the user has switched oneDNN off, it
stays off.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import ContextManager, Iterator

import torch


@contextmanager
def onednn_off() -> Iterator[None]:
    """oneDNN off inside the block (ATen's own CPU kernels), restored afterwards."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def kernels_for(counts_vary: bool, device: torch.device) -> ContextManager[None]:
    """The context for a step whose shape moves from call to call (`counts_vary`) or not: ATen's
    kernels for the former on a CPU, oneDNN as configured otherwise."""
    if counts_vary and device.type == "cpu" and torch.backends.mkldnn.enabled:
        return onednn_off()
    return nullcontext()
