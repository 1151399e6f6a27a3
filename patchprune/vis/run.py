"""A run folder: what `train vis` writes and `eval vis` / `segment` read.

    RUN/config.json            the model's VISConfig (rebuilds the exact model)
    RUN/train.json             training settings (method, target, vpp_layout, stage, steps, lr, seed, data)
    RUN/checkpoint.safetensors modules "model" (+ "policies" in stage 2) and the optimiser; resumable
    RUN/snapshots/step_*.safetensors   weights at regular steps (learning curves), optional
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from patchprune.data.io import read_json, write_json
from patchprune.train.checkpoint import checkpoint_meta
from patchprune.run_config import CONFIG_FILE
from patchprune.vis.config import VISConfig
from patchprune.vis.model import VISModel

CHECKPOINT = "checkpoint.safetensors"
SETTINGS = "train.json"


def check_compatible(path: str | Path, config: VISConfig) -> None:
    """ValueError when the checkpoint was written for a model of another shape."""
    meta = checkpoint_meta(path)
    theirs = meta.get("vis_config")
    if theirs is None:
        raise ValueError(f"{path} is not a VIS checkpoint (no vis_config in its metadata)")
    other = VISConfig.from_json(theirs)
    if other.fingerprint() != config.fingerprint():
        raise ValueError(f"{path} holds a model of another config ({other.name}; {config.shape_differences(other)}); "
                         f"pass a checkpoint of config {config.name} or rebuild with its config.json")


@dataclass
class LoadedRun:
    """A trained model, the pruner its stage-2 training attached (None when dense) and settings."""

    model: VISModel
    encoder: nn.Module | None
    settings: dict[str, Any]
    step: int


# Training-free policies prune where VPP's modules sit (Map-SM at 1, SM at 3, 6, 9 of 12 blocks),
# keeping VPP's per-stage rates (kappa, then rho of the live tokens), so PKRs match VPP's.
TRAINING_FREE_POSITIONS = (1, 3, 6, 9)


def training_free_schedule(method: str, target: float, depth: int) -> dict[int, tuple[str, float]]:
    """{block position: (policy, keep ratio of the live tokens)} for a training-free `method` at a
    PKR `target` (0.55 or 0.40, VPP's kappa / rho); positions scaled to the depth."""
    from patchprune.learned.mapsm import default_kappa
    from patchprune.learned.vpp import vpp_rho

    positions = [max(1, min(depth - 1, round(p * depth / 12))) for p in TRAINING_FREE_POSITIONS]
    rates = [default_kappa(target)] + [vpp_rho(target)] * (len(positions) - 1)
    return {p: (method, r) for p, r in zip(positions, rates)}


def parse_method_options(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings -> {key: value}; a value is read as JSON (numbers, true / false, lists)
    and falls back to the plain string (e.g. first_frame_loss=live)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"--method-option expects KEY=VALUE with KEY a name, got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def check_layout_method(layout: str | None, method: str) -> None:
    """ValueError unless a module layout comes with --method vpp (the only method it places)."""
    if layout is not None and method != "vpp":
        raise ValueError(f"--vpp-layout places VPP's modules; it needs --method vpp, got {method!r}")


def build_encoder(model: VISModel, method: str, target: float, layout: str | None = None,
                  options: dict[str, Any] | None = None) -> nn.Module | None:
    """The pruner of `method` on `model.backbone`: None for "dense", a `patchprune.learned` method,
    or a training-free policy (`patchprune.policies`, e.g. evtp, tome) at VPP's positions and rates.
    `layout` (vpp only): VPP's module positions, e.g. "map:0;sm:3,6,9" (`patchprune.learned.layout`).
    `options`: keyword overrides of a learned method's builder (`train vis --method-option`)."""
    check_layout_method(layout, method)
    from patchprune.learned import available_methods, build
    from patchprune.policies.base import available_policies

    options = options or {}
    if options and method not in available_methods():
        raise ValueError(f"--method-option needs a learned method, got {method!r}")
    if method == "dense":
        return None

    if layout is not None:
        from patchprune.learned.layout import build_layout

        return build_layout(model.backbone, target, layout, **options)
    if method in available_methods():
        return build(method, model.backbone, target, **options)
    if method in available_policies():
        from patchprune.vit import sparse_vit

        return sparse_vit(model.backbone, training_free_schedule(method, target, len(model.backbone.blocks)),
                          execution="gather")
    raise ValueError(f"method {method!r} is unknown; expected dense, a learned method {available_methods()} "
                     f"or a training-free policy {available_policies()}")


def is_learned(encoder: nn.Module | None) -> bool:
    """True for a learned pruner (its policies are trained and saved as module "policies")."""
    return encoder is not None and hasattr(encoder, "runner")


def load_run(run: str | Path, method: str | None = None, target: float | None = None,
             method_options: dict[str, Any] | None = None, device: str | torch.device | None = None) -> LoadedRun:
    """Rebuild the model (and pruner) of a run folder and load its last checkpoint (eval mode).
    `run` may also name a reference checkpoint shipped in the package (`patchprune.reference_names()`,
    e.g. "vpp-0.40"). `method_options` override the builder keywords the run trained with
    (train.json), key by key: e.g. {"noise": False} evaluates VPP's trained modules without their
    inference Gumbel noise. `device`: where the loaded model and pruner go (default: the CPU)."""
    run = Path(run)
    if not run.is_dir():
        from patchprune.checkpoints import reference_info, reference_names, verified_path

        names = reference_names()
        if str(run) not in names:
            raise FileNotFoundError(f"run folder {run} not found (nor is it a shipped reference: {', '.join(names)})")
        info = reference_info(str(run))
        settings = {**((info.get("training") or {}).get("settings") or {}), "method": info["method"],
                    "reference": str(run)}
        return load_weights(VISConfig.from_json(info["vis_config"]), settings, verified_path(str(run), "weights"),
                            method, target, method_options, device)
    settings = read_json(run / SETTINGS, "training settings") if (run / SETTINGS).is_file() else {}
    return load_weights(VISConfig.load(run), settings, run / CHECKPOINT, method, target, method_options, device)


def load_weights(config: VISConfig, settings: dict[str, Any], ckpt: Path, method: str | None = None,
                 target: float | None = None, method_options: dict[str, Any] | None = None,
                 device: str | torch.device | None = None) -> LoadedRun:
    """The model of `config` with checkpoint `ckpt`'s weights, under `method` (default: the one it
    trained with, `settings["method"]`), its pruner rebuilt with the trained positions and options.
    Built and loaded on the CPU (as every pruner is initialised), then moved to `device` (None: stays)."""
    from patchprune.train.checkpoint import load_checkpoint

    method = method or settings.get("method", "dense")
    target = float(target if target is not None else settings.get("target") or 0.55)
    check_compatible(ckpt, config)
    model = VISModel(config)
    trained = settings.get("method") == method
    layout = settings.get("vpp_layout") if trained else None  # the trained positions
    options = {**((settings.get("method_options") or {}) if trained else {}), **(method_options or {})}
    encoder = build_encoder(model, method, target, layout, options or None)
    modules: dict[str, nn.Module] = {"model": model}
    if is_learned(encoder) and trained:
        modules["policies"] = encoder.runner.policies
    info = load_checkpoint(ckpt, modules)
    to_device(model, encoder, device)
    model.eval()
    if encoder is not None:
        encoder.eval()
    return LoadedRun(model, encoder, {**settings, "method": method, "target": target, "method_options": options},
                     int(info["step"]))


def to_device(model: VISModel, encoder: nn.Module | None, device: str | torch.device | None) -> None:
    """Move the model and its pruner (a separate module: its pruning modules are not the model's) to
    `device`; None leaves them where they are."""
    if device is None:
        return
    model.to(device)
    if encoder is not None:
        encoder.to(device)


def write_settings(run: str | Path, settings: dict[str, Any]) -> Path:
    return write_json(Path(run) / SETTINGS, settings, indent=2)


__all__ = ["CONFIG_FILE", "CHECKPOINT", "LoadedRun", "load_run", "load_weights", "check_compatible", "checkpoint_meta"]
