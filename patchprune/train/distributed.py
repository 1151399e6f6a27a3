"""torchrun support: the device a command runs on, process-group setup (gloo on the CPU, NCCL on
CUDA), data sharding and gradient averaging.

Gradients are averaged with an all-reduce after `backward()` instead of wrapping the model in
DistributedDataParallel: the pruning modules are used on some frames only (Map-SM skips the
first frame), which DDP would reject without `find_unused_parameters`; an explicit all-reduce
handles missing gradients (as zeros) and any forward signature. Single process: everything is a no-op.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Iterable, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from patchprune.validate import check_device

T = TypeVar("T")



@dataclass(frozen=True)
class DistInfo:
    """This process's rank and the number of processes (the default: a single process)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def run_device(device: str | torch.device | None = None, arg: str = "--device") -> torch.device:
    """The device a train / eval / segment command runs on.

    None or "cpu": the CPU (the default: the project's recorded figures and its exact-resume checks
    are CPU runs, so a GPU is opted into, never picked behind the user's back); "cuda" / "cuda:N";
    "auto": cuda when available, else cpu. Under torchrun a bare "cuda" is this process's GPU
    (LOCAL_RANK), made current, so each rank owns one. ValueError naming `arg` for anything else
    (no CUDA here, an index past the device count, an unknown name)."""
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = check_device(arg, device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = check_device(arg, f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        torch.cuda.set_device(dev)
    return dev


def init_distributed(backend: str | None = None, device: torch.device | None = None) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (idempotent); else a single-process info.

    backend None: NCCL when the command runs on a CUDA `device`, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if device is not None and torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        # Tear the group down before the interpreter does: left to exit, gloo's threads were destroyed
        # while joinable and a rank could abort ("terminate called without an active exception",
        # SIGABRT) after its work was done, failing the whole torchrun job.
        atexit.register(_destroy_group)
    return DistInfo(dist.get_rank(), dist.get_world_size())


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's share of `items` (round robin)."""
    return list(items[info.rank :: info.world_size])


def average_gradients(parameters: Iterable[nn.Parameter], info: DistInfo) -> None:
    """All-reduce and average the gradients of `parameters` over the ranks (missing grads count as 0)."""
    if not info.enabled:
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over the ranks (returns a new tensor)."""
    out = t.clone()
    if info.enabled:
        dist.all_reduce(out)
    return out


def broadcast_parameters(module: nn.Module, info: DistInfo) -> None:
    """Make every rank start from rank 0's weights."""
    if not info.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)
