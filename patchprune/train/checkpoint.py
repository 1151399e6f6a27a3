"""Checkpoints as safetensors files (never pickle), written atomically, with optimiser state for resuming.

Layout of one file: tensors "module/<name>/<key>" for each named module's state dict and
"optim/<group-param-index>/<key>" for the optimiser's per-parameter state; the safetensors
metadata holds JSON: {"step", "meta" (anything JSON-able), "optim" (param_groups and the
non-tensor state)}. The file is written to a temporary name in the same directory, fsync'ed and
renamed over the target, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from patchprune.data.io import atomic_path


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(path: str | Path, modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer | None = None,
                    step: int = 0, meta: Mapping[str, Any] | None = None) -> Path:
    """Atomically write modules (and optimiser state) to `path` (.safetensors)."""
    path = Path(path)
    remove_stale_temps(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        if "/" in name:
            raise ValueError(f"module name {name!r} must not contain '/'")
        for key, value in module.state_dict().items():
            tensors[f"module/{name}/{key}"] = value.detach().cpu().contiguous().clone()
    optim_meta: dict[str, Any] | None = None
    if optimizer is not None:
        opt_tensors, optim_meta = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
    metadata = {"step": json.dumps(int(step)), "meta": json.dumps(dict(meta or {})),
                "optim": json.dumps(optim_meta)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    return path


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temporary files a killed run left next to checkpoint `path` (`atomic_path` names
    them `.<name>.<random>.tmp`); returns what was removed. Called before every save and on resume."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    return removed


def _not_safetensors(path: Path, err: Exception) -> ValueError:
    """The error for a file safetensors cannot read: say what it is and that pickles are refused."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        what = "is a pickle (torch.save / .pt) file"
    else:
        what = "is not a safetensors file (truncated or corrupt)"
    return ValueError(f"checkpoint {path} {what}; checkpoints are read as safetensors only and pickles are "
                      f"refused (they can run code): convert it with safetensors.torch.save_file ({err})")


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The `meta` JSON of a checkpoint written by `save_checkpoint`, without reading any tensor
    (run folders check a checkpoint's config against theirs with it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = (fh.metadata() or {}).get("meta", "{}")
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise _not_safetensors(path, err) from err
    return json.loads(meta)


def load_checkpoint(path: str | Path, modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer | None = None,
                    strict: bool = True) -> dict[str, Any]:
    """Load modules (and optimiser state) from `path`; returns {"step", "meta"}.

    strict: every module with state must be in the file, with exactly its keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    per_module: dict[str, dict[str, torch.Tensor]] = {}
    optim_tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            for key in list(fh.keys()):
                if key.startswith("module/"):
                    _, name, sub = key.split("/", 2)
                    per_module.setdefault(name, {})[sub] = fh.get_tensor(key)
                elif key.startswith("optim/"):
                    optim_tensors[key] = fh.get_tensor(key)
        meta = {k: json.loads(metadata.get(k, d)) for k, d in (("step", "0"), ("meta", "{}"), ("optim", "null"))}
    except (SafetensorError, json.JSONDecodeError, ValueError) as err:
        raise _not_safetensors(path, err) from None
    for name, module in modules.items():
        # a module without state (e.g. an empty ModuleDict of pruning modules) writes no tensors
        if name not in per_module and strict and module.state_dict():
            raise ValueError(f"checkpoint {path} has no module {name!r} (has {sorted(per_module)})")
        if name in per_module:
            try:
                module.load_state_dict(per_module[name], strict=strict)
            except RuntimeError as err:  # other keys or shapes: a checkpoint of another model
                detail = " ".join(str(err).split())
                raise ValueError(f"checkpoint {path} does not fit module {name!r} (a checkpoint of another "
                                 f"model or configuration?): {detail}") from None
    if optimizer is not None:
        optim_meta = meta["optim"]
        if optim_meta is None:
            raise ValueError(f"checkpoint {path} has no optimiser state")
        state: dict[int, dict[str, Any]] = {}
        for key, value in optim_tensors.items():
            _, pid, sub = key.split("/", 2)
            state.setdefault(int(pid), {})[sub] = value
        for pid, extra in optim_meta["scalars"].items():
            state.setdefault(int(pid), {}).update(extra)
        optimizer.load_state_dict({"state": state, "param_groups": optim_meta["param_groups"]})
    return {"step": meta["step"], "meta": meta["meta"]}
