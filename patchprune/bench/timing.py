"""Side-by-side timing: warm-up, interleaved repeats, median, device synchronisation."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def time_side_by_side(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int = 3,
                      repeats: int = 10, progress: bool = False, clock: str = "wall") -> dict[str, float]:
    """Median milliseconds of each callable, measured interleaved in one run (drift hits all alike).

    clock: "wall" (perf_counter, the default) or "cpu" (CPU time of the calling thread: with one
    torch thread on a CPU it is what the work costs, little disturbed by other processes on a
    busy machine; a development estimate, not a latency)."""
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    samples: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        synchronize(device)
        rounds = range(repeats)
        if progress:
            from tqdm import tqdm

            rounds = tqdm(rounds, desc="timing", leave=False)
        for _ in rounds:
            for name, fn in fns.items():
                synchronize(device)
                t0 = now()
                fn()
                synchronize(device)
                samples[name].append((now() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}
