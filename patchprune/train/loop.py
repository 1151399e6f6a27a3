"""A small training loop with VPP's stage-2 recipe, resumable from safetensors checkpoints.

Recipe (spec: training protocol): AdamW, weight decay 0.05, backbone lr x0.1 and pruning modules
x1, no weight decay on norms / biases / position and query embeddings, gradient clipping (L2),
lr x0.1 for the last third of the steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn
from tqdm import tqdm

from patchprune.train.checkpoint import load_checkpoint, remove_stale_temps, save_checkpoint
from patchprune.train.distributed import DistInfo, average_gradients

NO_DECAY_KEYS = ("norm", "bias", "pos_embed", "cls_token", "reg_token", "query_embed", "query_feat")


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Norm weights, biases, 1-D parameters and embeddings get no weight decay."""
    return param.ndim <= 1 or any(k in name for k in NO_DECAY_KEYS)


def param_groups(groups: Mapping[str, tuple[Iterable[tuple[str, nn.Parameter]], float]], weight_decay: float = 0.05
                 ) -> list[dict[str, Any]]:
    """AdamW groups from {group name: (named parameters, lr multiplier)}, split by weight decay.

    Each group dict carries "lr_mult" so `step_lr` can rescale the base lr per group.
    """
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for gname, (named, mult) in groups.items():
        decay, no_decay = [], []
        for name, p in named:
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if no_weight_decay(name, p) else decay).append(p)
        for params, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, "/no_decay")):
            if params:
                out.append({"params": params, "weight_decay": wd, "lr_mult": float(mult), "name": gname + suffix})
    if not out:
        raise ValueError("no trainable parameters in the given groups")
    return out


def step_lr(step: int, total: int, base_lr: float, warmup: int = 0, drop_at: float = 2 / 3, factor: float = 0.1) -> float:
    """Base lr at `step`: linear warm-up, then constant, x`factor` from `drop_at` of the steps on."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * (factor if step >= math.floor(drop_at * total) else 1.0)


@dataclass
class LoopConfig:
    """Settings of one `Trainer.fit` run.

    steps: total optimiser steps; lr: base lr (scaled per group by "lr_mult", see `step_lr` for
    warm-up and the drop at `drop_at` of the steps by x0.1); clip: max L2 gradient norm (None / 0:
    no clipping); checkpoint: safetensors path written every `checkpoint_every` steps (0: only at
    the end; default 100, for every stage, so a killed run loses at most that many steps) and at
    the end; resume: continue from `checkpoint` when it exists; desc / progress: the tqdm bar.
    """

    steps: int
    lr: float
    warmup: int = 0
    clip: float | None = 0.01
    drop_at: float = 2 / 3
    checkpoint: str | None = None  # path; written every `checkpoint_every` steps and at the end
    checkpoint_every: int = 100
    resume: bool = True
    desc: str = "train"
    progress: bool = True


class Trainer:
    """Runs `step_fn(step) -> {"loss": Tensor, ...}` with the optimiser, lr schedule, clipping,
    gradient averaging (torchrun) and checkpoints. Modules named in `modules` are checkpointed."""

    def __init__(self, modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer, config: LoopConfig,
                 dist_info: DistInfo | None = None, meta: Mapping[str, Any] | None = None) -> None:
        self.modules, self.optimizer, self.config = dict(modules), optimizer, config
        self.dist = dist_info or DistInfo()
        self.meta = dict(meta or {})
        self.start_step = 0
        self.history: list[dict[str, float]] = []
        self._resume_checked = False

    def parameters(self) -> list[nn.Parameter]:
        """Every parameter the optimiser updates."""
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def maybe_resume(self) -> int:
        """Load modules, optimiser state and history from `config.checkpoint` when `config.resume` is
        set and the file exists; returns the step to continue from (0 for a fresh run).

        Idempotent: only the first call looks at the checkpoint; later calls (`fit` makes one) return
        the same step without reloading, so a caller may resume early (e.g. to replay its data
        stream, or to skip a finished run) and then call `fit`, which continues from that step.
        """
        if self._resume_checked:
            return self.start_step
        self._resume_checked = True
        c = self.config
        if c.checkpoint and self.dist.is_main:
            remove_stale_temps(c.checkpoint)  # half-written files of a killed run
        if c.resume and c.checkpoint and Path(c.checkpoint).is_file():
            info = load_checkpoint(c.checkpoint, self.modules, self.optimizer)
            self.start_step = int(info["step"])
            self.history = list(info["meta"].get("history", []))
        return self.start_step

    def save(self, step: int) -> None:
        """Write the checkpoint (modules, optimiser, meta + history) as of `step`; main rank only,
        and only when `config.checkpoint` is set."""
        if self.config.checkpoint and self.dist.is_main:
            save_checkpoint(self.config.checkpoint, self.modules, self.optimizer, step,
                            {**self.meta, "history": self.history})

    def fit(self, step_fn: Callable[[int], Mapping[str, Tensor]]) -> list[dict[str, float]]:
        """Train from the resumed step (see `maybe_resume`) to `config.steps`: per step set the lr,
        call `step_fn(step)`, back-propagate its "loss", average gradients over ranks, clip, step
        the optimiser and log every returned value; checkpoint as configured and at the end.

        Returns the history (one dict per step, resumed steps included). Raises FloatingPointError
        on a non-finite loss.
        """
        c = self.config
        start = self.maybe_resume()
        bar = tqdm(range(start, c.steps), desc=c.desc, initial=start, total=c.steps, leave=False,
                   disable=not (c.progress and self.dist.is_main), dynamic_ncols=True)
        for m in self.modules.values():
            m.train()
        for step in bar:
            base = step_lr(step, c.steps, c.lr, c.warmup, c.drop_at)
            for g in self.optimizer.param_groups:
                g["lr"] = base * g.get("lr_mult", 1.0)
            logs = step_fn(step)
            loss = logs["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{c.desc}: non-finite loss at step {step}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(self.parameters(), self.dist)
            if c.clip:
                torch.nn.utils.clip_grad_norm_(self.parameters(), c.clip)
            self.optimizer.step()
            row = {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in logs.items()}
            row["step"] = step
            self.history.append(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "step"}, refresh=False)
            if c.checkpoint_every and (step + 1) % c.checkpoint_every == 0 and step + 1 < c.steps:
                self.save(step + 1)
        self.save(c.steps)
        return self.history
