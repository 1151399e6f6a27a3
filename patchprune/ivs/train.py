"""`train ivs`: dense training of the instructed-segmentation model (pruning is training-free).

Per step: a global batch of one kind (image, or video key frame with its neighbours as reference
frames), the `ReferLoss` on every decoder layer, AdamW (no decay on norms / biases / embeddings),
linear warm-up then x0.1 at 2/3 of the steps, gradient clipping. Checkpoints through `Trainer`
(atomic safetensors, periodic, exact resume: every batch is a function of (seed, step) and the loss
draws nothing at random); torchrun ranks split each global batch (items r, r + world, ...).
Device (`device`, `train ivs --device`): the CPU by default (the recorded runs and the exact-resume
checks are CPU runs); on CUDA the model, its batches and the loss targets move there, while the
batch draws (`torch.Generator`) stay on the CPU, so a step trains on the same samples on any device.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from patchprune.ivs.config import MAP_WEIGHT, QUERY_WEIGHT, IVSConfig, named_config
from patchprune.ivs.run import CHECKPOINT, SETTINGS
from patchprune.run_config import CONFIG_FILE


@dataclass
class TrainSettings:
    """What `train ivs` was asked to do (written to RUN/train.json)."""

    data: str
    out: str
    config: str = "tiny"
    steps: int = 3000
    batch: int = 8
    lr: float = 6e-4
    warmup: int = 150
    clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    snapshot_every: int = 0
    threads: int | None = None
    video_share: float = 0.25
    map_weight: float = MAP_WEIGHT
    query_weight: float = QUERY_WEIGHT  # weight of the choice's query BCE
    group: int = 1
    mask_init: str | None = None  # a dense VIS run whose parts start the mask branch (`ivs.mask_init`)
    instance_weight: float = 0.0  # weight of the auxiliary instance loss on image batches (`ivs.loss.InstanceLoss`)
    limit: int | None = None
    progress: bool = True
    overrides: dict[str, Any] | None = None
    device: str | torch.device | None = None  # None / "cpu", "cuda", "cuda:N", "auto" (`train.distributed.run_device`)


def _validate(s: TrainSettings) -> None:
    from patchprune.ivs.data import check_group
    from patchprune.validate import check_int, check_number, check_threads

    for name in ("steps", "batch"):
        check_int(f"--{name}", getattr(s, name), 1)
    check_int("--warmup", s.warmup, 0)
    check_int("--checkpoint-every", s.checkpoint_every, 0)
    check_int("--snapshot-every", s.snapshot_every, 0)
    check_number("--lr", s.lr, 0.0)
    if s.lr <= 0:
        raise ValueError(f"--lr must be > 0, got {s.lr}")
    check_number("--video-share", s.video_share, 0.0, 1.0)
    check_number("--map-weight", s.map_weight, 0.0)
    check_number("--query-weight", s.query_weight, 0.0)
    check_number("--instance-weight", s.instance_weight, 0.0)
    check_int("--group", s.group, 1)
    check_group(s.batch, s.group)
    check_threads("--threads", s.threads)
    if s.mask_init is not None and not Path(s.mask_init).is_dir():
        raise FileNotFoundError(f"--mask-init: VIS run folder {s.mask_init} not found")
    if s.config not in ("tiny", "micro"):
        raise ValueError(f"--config must be tiny or micro, got {s.config!r}")


def _settings_json(s: TrainSettings) -> dict[str, Any]:
    """The settings as JSON values (a torch.device given as `device` is written as its name)."""
    return {**asdict(s), "device": None if s.device is None else str(s.device)}


def _seed_of(seed: int, step: int) -> int:
    return (seed * 7919 + step * 104_729) % (2 ** 31)


def run_training(s: TrainSettings, dist_info: Any = None) -> dict[str, Any]:
    """Train as `s` says; returns a summary (run folder, steps, minutes, last loss)."""
    from patchprune.ivs.data import (available_kinds, category_count, instance_targets, load_items, make_batch,
                                     sample_batch, step_generator)
    from patchprune.ivs.loss import InstanceLoss, ReferLoss, target_masks
    from patchprune.ivs.model import IVSModel
    from patchprune.ivs.tokenizer import build_tokenizer, load_tokenizer, save_tokenizer
    from patchprune.train.distributed import DistInfo, broadcast_parameters, run_device
    from patchprune.train.loop import LoopConfig, Trainer, param_groups
    from patchprune.train.run_folder import RunClock, Snapshots, run_summary

    _validate(s)
    if s.threads:
        torch.set_num_threads(s.threads)
    dist_info = dist_info or DistInfo()
    device = run_device(s.device)  # ValueError naming --device (e.g. cuda on a machine without one)
    out = Path(s.out)
    overrides = dict(s.overrides or {})
    probe = named_config(s.config, **overrides)  # image / patch size (the VIS shape leaves them alone)
    if s.mask_init is not None:
        from patchprune.ivs.mask_init import shape_overrides

        overrides = {**shape_overrides(s.mask_init, probe.img_size, probe.patch_size), **overrides}
    pools = {k: load_items(s.data, k, "train", probe.img_size, s.limit) for k in available_kinds(s.data)}
    existing = out / CONFIG_FILE
    if existing.is_file():
        tok = load_tokenizer(out)
    else:
        tok = build_tokenizer([it.text for pool in pools.values() for it in pool])
    if s.instance_weight > 0:
        classes = category_count(pools.get("image", []))
        if classes == 0:
            raise ValueError(f"--instance-weight needs image data with instance annotations; {s.data} has none")
        overrides["instance_classes"] = classes
    config = named_config(s.config, **{**overrides, "vocab_size": tok.get_vocab_size()})
    previous = IVSConfig.load(out) if existing.is_file() else None
    if previous is not None and previous.fingerprint() != config.fingerprint():
        raise ValueError(f"{out} holds a run of another config ({config.shape_differences(previous)}); "
                         "resume with the same --config / --set or pick a new --out")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)
    model = IVSModel(config)
    if s.mask_init is not None:
        from patchprune.ivs.mask_init import init_mask_branch

        init_mask_branch(model.mask_branch, s.mask_init, model.class_head)  # a resume replaces it below
    model.to(device)  # built and initialised on the CPU (the same weights on any device), then moved
    broadcast_parameters(model, dist_info)
    criterion = ReferLoss(map_weight=s.map_weight, query_weight=s.query_weight)
    instance_loss = InstanceLoss(config) if s.instance_weight > 0 else None
    groups = param_groups({"model": (model.named_parameters(), 1.0)})
    optimizer = torch.optim.AdamW(groups, lr=s.lr, weight_decay=0.05)
    if dist_info.is_main:
        config.save(out)
        save_tokenizer(tok, out)
        from patchprune.data.io import write_json

        write_json(out / SETTINGS, {**_settings_json(s), "world_size": dist_info.world_size}, indent=2)
    meta = {"ivs_config": config.to_json(), "settings": _settings_json(s)}
    loop = LoopConfig(steps=s.steps, lr=s.lr, warmup=s.warmup, clip=s.clip, checkpoint=str(out / CHECKPOINT),
                      checkpoint_every=s.checkpoint_every, desc="ivs", progress=s.progress)
    trainer = Trainer({"model": model}, optimizer, loop, dist_info, meta)
    start = trainer.maybe_resume()  # weights and optimiser state into the model's device
    clock = RunClock(trainer.history)
    snapshots = Snapshots(out, {"model": model}, meta, s.snapshot_every, dist_info.is_main)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(_seed_of(s.seed, step))
        kind, idx, keys = sample_batch(pools, s.batch, step_generator(s.seed, step), s.video_share, s.group)
        r, w = dist_info.rank, dist_info.world_size
        if s.batch < w:
            raise ValueError(f"a global batch of {s.batch} cannot be split over {w} processes; raise --batch")
        pool = pools[kind]
        mine = [pool[i] for i in idx[r::w]]
        batch, masks, present = make_batch(mine, keys[r::w], tok, config.ref_frames)
        masks, present = masks.to(device), present.to(device)
        o = model(batch.to(device))
        logs = criterion(o.mask_logits, o.query_logits, target_masks(masks, o.mask_logits[-1].shape[-2:]), present,
                         o.refer_map)
        targets = instance_targets(mine, device) if instance_loss is not None else None
        if targets is not None:
            seeds = [_seed_of(s.seed, step) + 1 + i for i in range(r, s.batch, w)]  # per sample: rank-independent
            inst = instance_loss(o, targets, seeds)
            logs["loss"] = logs["loss"] + s.instance_weight * inst["loss"]
            logs["inst"] = inst["loss"].detach()
        logs["video"] = torch.tensor(float(kind == "video"))
        snapshots.step(step, clock.stamp(logs))
        return logs

    history = trainer.fit(step_fn)
    snapshots.finish(s.steps, history)
    return run_summary(out, s.steps, start, history)


def train(data: str | Path, out: str | Path, config: str = "tiny", steps: int = 3000, seed: int = 0,
          threads: int | None = None, progress: bool = True, **settings: Any) -> Path:
    """Train a dense model into the run folder `out` (resumes when it holds a checkpoint); returns `out`.
    `settings`: any other `TrainSettings` field (batch, lr, warmup, snapshot_every, overrides, device:
    None / "cpu" (default), "cuda", "cuda:N", "auto" or a torch.device, ...)."""
    from patchprune.validate import check_known_fields

    check_known_fields("train setting", TrainSettings, settings)
    run_training(TrainSettings(data=str(data), out=str(out), config=config, steps=steps, seed=seed, threads=threads,
                               progress=progress, **settings))
    return Path(out)
