"""Side-by-side timing: warm-up, interleaved repeats, median, device synchronisation, and a steady
host allocator (page faults counted per call)."""
from __future__ import annotations

import ctypes
import statistics
import time
from typing import Callable

import torch

try:  # minor page faults per call (POSIX)
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
ALLOCATORS = ("steady", "system")
# glibc mallopt parameters: no trimming of the heap's top, a fixed mmap threshold (which stops the
# adaptive one) and no mmap at all, so blocks above the threshold (batch 8's 50 MB activations) come
# from the heap too and are reused once it has settled (a few calls: aligned large blocks leave a
# few copies behind first)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_MMAP_THRESHOLD_MAX, _TRIM_NEVER = 32 * 1024 * 1024, 2**31 - 1
_steady = {"applied": None}


def steady_allocator() -> bool:
    """Keep freed host memory in the process (glibc: every block from a heap never trimmed), so a
    timed call does not pay page faults for memory the allocator gave back to the kernel after the
    previous one. Why: with glibc's adaptive thresholds a dense 512 px ViT-S/16 forward took 24,000-
    36,000 minor page faults on the reference 2-core VM (~110 ms of system time, ~9 % of the forward)
    while a pruned one took 3,000-4,000, and in other processes none: speed-ups measured that way mix
    the compute with the allocator's state (batch 8: 259,000 faults a dense call). Process-wide and
    not undone (the process keeps its peak heap); True when applied (glibc), False where there is no
    mallopt (other C libraries)."""
    if _steady["applied"] is None:
        try:
            mallopt = ctypes.CDLL(None).mallopt
            _steady["applied"] = all(bool(mallopt(param, value)) for param, value in (
                (_M_TRIM_THRESHOLD, _TRIM_NEVER), (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX), (_M_MMAP_MAX, 0)))
        except (OSError, AttributeError):
            _steady["applied"] = False
    return _steady["applied"]


def minor_faults() -> int | None:
    """Minor page faults of this process so far (None where the platform does not count them)."""
    return None if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Timings(dict):
    """Median milliseconds per callable, with `faults` (mean minor page faults per timed call; None
    where not counted), `allocator` ("steady" when applied, else "system") and `samples` (the ms of
    every timed round, in round order)."""

    faults: dict[str, float | None]
    allocator: str
    samples: dict[str, list[float]]


def time_side_by_side(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int = 3,
                      repeats: int = 10, progress: bool = False, clock: str = "wall",
                      allocator: str = "steady") -> Timings:
    """Median milliseconds of each callable, measured interleaved in one run (drift hits all alike).

    clock: "wall" (perf_counter, the default) or "cpu" (CPU time of the calling thread: with one
    torch thread on a CPU it is what the work costs, little disturbed by other processes on a
    busy machine; a development estimate, not a latency). allocator: "steady" (default: see
    `steady_allocator`) or "system" (the process's allocator as it is: still steady when an earlier
    call in this process applied it, and the result says so)."""
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {', '.join(ALLOCATORS)}, got {allocator!r}")
    if allocator == "steady":
        steady_allocator()
    now = CLOCKS[clock]
    samples: dict[str, list[float]] = {name: [] for name in fns}
    faults: dict[str, int] = {name: 0 for name in fns}
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
                f0 = minor_faults()
                t0 = now()
                fn()
                synchronize(device)
                samples[name].append((now() - t0) * 1e3)
                if f0 is not None:
                    faults[name] += minor_faults() - f0
    out = Timings({name: statistics.median(v) for name, v in samples.items()})
    out.faults = {name: (None if resource is None else faults[name] / repeats) for name in fns}
    out.allocator = "steady" if _steady["applied"] else "system"  # process-wide once applied
    out.samples = samples
    return out


def round_ratios(timings: Timings, reference: str, name: str) -> list[float]:
    """reference ms / name ms of every timed round: both were timed back to back in the same round,
    so a slow stretch of the machine that spans the round cancels out of the ratio."""
    return [r / t for r, t in zip(timings.samples[reference], timings.samples[name])]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile); all three equal for one value."""
    if len(values) < 2:
        return (values[0],) * 3
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3
