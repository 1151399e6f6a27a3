"""What every training command keeps in its run folder besides the checkpoint: the minutes clock
carried across resumes, weight snapshots for learning curves (`RUN/snapshots/step_NNNNNN.safetensors`)
and the summary it prints. Shared by `train vis` and `train ivs`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

SNAPSHOTS = "snapshots"


class RunClock:
    """Wall and CPU minutes of a run, continued from the last logged step of a resumed run (CPU
    minutes = this process's CPU time: wall minutes on an idle core at 1 thread)."""

    def __init__(self, history: list[dict[str, Any]]) -> None:
        last = history[-1] if history else {}
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.base, self.cpu_base = float(last.get("minutes", 0.0)), float(last.get("cpu_minutes", 0.0))

    def stamp(self, logs: dict[str, Any]) -> dict[str, Any]:
        """Add "minutes" and "cpu_minutes" to a step's logs (returned)."""
        logs["minutes"] = torch.tensor(self.base + (time.perf_counter() - self.t0) / 60)
        logs["cpu_minutes"] = torch.tensor(self.cpu_base + (time.process_time() - self.c0) / 60)
        return logs


class Snapshots:
    """Weights every `every` steps (0: never) and after the last step, written by the main process."""

    def __init__(self, out: str | Path, modules: Mapping[str, nn.Module], meta: dict[str, Any], every: int,
                 is_main: bool = True) -> None:
        self.folder, self.modules, self.meta = Path(out) / SNAPSHOTS, dict(modules), meta
        self.every, self.is_main = int(every), bool(is_main)

    def step(self, step: int, logs: Mapping[str, Any]) -> None:
        if self.every and self.is_main and step % self.every == 0:
            self.save(step, logs)

    def finish(self, steps: int, history: list[dict[str, Any]]) -> None:
        if self.every and self.is_main:
            self.save(steps, history[-1] if history else {})

    def save(self, step: int, logs: Mapping[str, Any]) -> Path:
        from patchprune.train.checkpoint import save_checkpoint

        path = self.folder / f"step_{step:06d}.safetensors"
        save_checkpoint(path, self.modules, None, step, {**self.meta, "minutes": float(logs.get("minutes", 0.0)),
                                                          "cpu_minutes": float(logs.get("cpu_minutes", 0.0))})
        return path


def run_summary(out: str | Path, steps: int, resumed_from: int, history: list[dict[str, Any]],
                **extra: Any) -> dict[str, Any]:
    """What a training command returns and prints: run folder, steps, where it resumed, minutes, last loss."""
    last = history[-1] if history else {}
    return {"run": str(out), "steps": steps, "resumed_from": resumed_from, **extra,
            "minutes": float(last.get("minutes", 0.0)), "cpu_minutes": float(last.get("cpu_minutes", 0.0)),
            "loss": float(last.get("loss", float("nan")))}
