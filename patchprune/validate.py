"""One validation helper per kind of input, so every entry point refuses bad input the same way.

Rule (issue 13): a bad argument raises `ValueError` (a missing file `FileNotFoundError`) whose
message names the argument and says how to fix it, before any work starts; the command line turns
it into one line `patchprune: error: ...` and exit status 2 (`patchprune.cli.main`). Callers pass
the name the user knows: `--frames` on the command line, `frames` in Python.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a check needs it: data commands stay torch-free
    import torch
    from torch import Tensor


def comma_list(name: str, text: str | None, cast: Any = str, *, unique: bool = False, allowed: Any = None) -> list:
    """`"1,8"` -> `[1, 8]` for a comma-separated option `name` (e.g. "--batches"); None -> [].

    ValueError naming the option for an item `cast` refuses, an empty list, a repeated value (with
    `unique`) or an item outside `allowed`."""
    if text is None:
        return []
    try:
        values = [cast(t.strip()) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{name} must be a comma-separated list, got {text!r}") from None
    if not values:
        raise ValueError(f"{name} must not be empty")
    if unique and len(set(values)) != len(values):
        raise ValueError(f"{name} repeats a value: {text!r}")
    if allowed is not None and any(v not in allowed for v in values):
        raise ValueError(f"{name}: {text!r} has an item outside {', '.join(map(str, allowed))}")
    return values


def check_known_fields(what: str, cls: type, data: dict[str, Any]) -> None:
    """ValueError naming the keys of `data` that are not fields of the dataclass `cls`."""
    from dataclasses import fields

    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; expected some of {sorted(names)}")


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """`value` as an int >= `minimum`, or a ValueError naming `name`."""
    integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(value)}")
    return int(value)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a finite float inside the given bounds, or a ValueError naming `name`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    lo_bad = low is not None and (v <= low if low_open else v < low)
    hi_bad = high is not None and (v >= high if high_open else v > high)
    if not math.isfinite(v) or lo_bad or hi_bad:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        rule = " and ".join(x for x in (lo, hi) if x) or "finite"
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return v


def check_finite(name: str, x: Tensor) -> Tensor:
    """Refuse NaN / Inf in a floating tensor (one reduction, no copy)."""
    import torch

    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN / Inf values; clean or clamp them before the call")
    return x


# The help of every train / eval / segment / refer command's --device (`train.distributed.run_device`
# reads it); here, not there, because building the CLI parser must not import torch.
DEVICE_HELP = ("cpu (default), cuda, cuda:N or auto (cuda when available); under torchrun a bare cuda is "
               "each process's own GPU (LOCAL_RANK)")


def check_device(name: str, device: str | torch.device | None) -> torch.device:
    """A usable torch device ("cpu", "cuda", "cuda:1", "mps"); None -> cuda when available, else cpu."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} {device!r} is not a torch device; use cpu or cuda (cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {device!r}: CUDA is not available on this machine; use {name} cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"{name} {device!r}: MPS is not available on this machine; use {name} cpu")
    elif dev.type != "cpu":
        raise ValueError(f"{name} {device!r} is not supported; use cpu or cuda (cuda:N)")
    return dev


def check_threads(name: str, threads: int | None) -> int | None:
    """None (torch's default) or a thread count >= 1."""
    return None if threads is None else check_int(name, threads, 1)


def check_output_folder(name: str, path: str | Path) -> Path:
    """An output folder (created when missing): neither it nor a parent may be an existing file."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"{name} {path}: {p} is an existing file; give a folder path")
            break
    return path


def check_output_file(name: str, path: str | Path) -> Path:
    """An output file path: not an existing folder, and no parent folder is an existing file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} {path} is an existing folder; give a file path")
    for p in path.parents:
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"{name} {path}: {p} is an existing file, not a folder")
            break
    return path


def check_timm_model(name: str, model_name: str) -> str:
    """A model name timm can create (checked before anything is built)."""
    import timm

    if not timm.is_model(model_name):
        hint = timm.list_models(f"*{model_name.split('_')[0]}*")[:3] if model_name else []
        extra = f" (close: {', '.join(hint)})" if hint else " (e.g. vit_small_patch16_224)"
        raise ValueError(f"{name} {model_name!r} is not a timm model{extra}")
    return model_name


__all__ = ["check_int", "check_number", "check_finite", "check_device", "check_threads", "check_output_folder", "check_output_file",
           "check_timm_model"]
