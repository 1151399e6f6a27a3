"""A run folder: what `train ivs` writes and `eval ivs` reads.

    RUN/config.json            the model's IVSConfig (rebuilds the exact model)
    RUN/tokenizer.json         the word-level tokenizer (`tokenizer.py`)
    RUN/train.json             training settings
    RUN/checkpoint.safetensors module "model" and the optimiser; resumable
    RUN/snapshots/step_*.safetensors   weights at regular steps (learning curve), optional
"""
from __future__ import annotations

from pathlib import Path

import torch

from patchprune.train.checkpoint import checkpoint_meta
from patchprune.ivs.config import IVSConfig

CHECKPOINT = "checkpoint.safetensors"
SETTINGS = "train.json"


def check_compatible(path: str | Path, config: IVSConfig) -> None:
    """ValueError when the checkpoint holds a model of another shape than `config`."""
    theirs = checkpoint_meta(path).get("ivs_config")
    if theirs is None:
        raise ValueError(f"{path} is not an IVS checkpoint (no ivs_config in its metadata)")
    other = IVSConfig.from_json(theirs)
    if other.fingerprint() != config.fingerprint():
        raise ValueError(f"{path} holds a model of another config ({config.shape_differences(other)}); pass the "
                         "run folder the checkpoint was trained in (its config.json) or a matching checkpoint")


def load_run(run: str | Path, checkpoint: str | Path | None = None, device: str | torch.device | None = None):
    """(model in eval mode, tokenizer, config, step) of a run folder (or a snapshot `checkpoint` of it).

    device: where the model goes (`train.distributed.run_device`: None / "cpu", "cuda", "cuda:N",
    "auto"); it is built and loaded on the CPU first, so the weights are the checkpoint's on any device."""
    from patchprune.ivs.model import IVSModel
    from patchprune.ivs.tokenizer import load_tokenizer
    from patchprune.train.checkpoint import load_checkpoint
    from patchprune.train.distributed import run_device

    dev = run_device(device)
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} not found (train one with `patchprune train ivs`)")
    config = IVSConfig.load(run)
    tok = load_tokenizer(run)
    path = Path(checkpoint) if checkpoint else run / CHECKPOINT
    check_compatible(path, config)
    model = IVSModel(config)
    info = load_checkpoint(path, {"model": model})
    model.to(dev).eval()
    return model, tok, config, int(info["step"])
