"""`train vis`: stage 1 (dense, per-frame set loss) and stage 2 (sparse, VPP protocol).

Stage 1: random single frames, set loss on every decoder layer, AdamW; when the backbone is
initialised (`init`), backbone lr x0.1. Stage 2: from a dense VIS checkpoint, new pruning modules
(`patchprune.learned.build`), 3-frame chains ref-ref -> ref -> key through one `VideoStream`;
loss = set loss on the key + 0.5 x set loss on the reference frame (the pair / tracking loss
weight of vpp.md; MinVIS needs no tracking head, so the reference frame's own set loss stands in
for it) + the method's sparsity loss of all three passes; pruning modules lr x1, model x0.1.
Both: gradient clipping, warm-up then a x0.1 drop at 2/3 of the steps, checkpoints through
`Trainer` (atomic safetensors, periodic, exact resume: every batch and every random draw of a
step is seeded by (seed, step)), torchrun ranks split each global batch. `device` (cpu by default,
cuda, cuda:N, auto): the model is built, initialised and resumed as on the CPU, then moved there;
the random draws of the batches stay on the CPU generator (same batches on every device), only
the frames and targets fed to the model and loss move.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from patchprune.run_config import CONFIG_FILE
from patchprune.vis.augment import parse_augment
from patchprune.vis.config import VISConfig, named_config
from patchprune.vis.data import VISData, load_split, rank_share, sample_chains, sample_frames, square_size, step_generator
from patchprune.vis.loss import SetLoss
from patchprune.vis.model import VISModel, normalise
from patchprune.vis.run import (CHECKPOINT, build_encoder, check_compatible, check_layout_method,
                                checkpoint_meta, to_device, write_settings)

PAIR_WEIGHT = 0.5


@dataclass
class TrainSettings:
    """What `train vis` was asked to do (written to RUN/train.json)."""

    data: str
    out: str
    config: str = "tiny"
    method: str = "dense"
    target: float = 0.55
    init: str | None = None
    steps: int = 2000
    batch: int = 8
    lr: float = 6e-4  # the quick recipe (docs/vis.md); stage 2 uses 1e-4 in bench vis
    warmup: int = 150
    clip: float = 0.01
    seed: int = 0
    checkpoint_every: int = 200
    snapshot_every: int = 0
    threads: int | None = None
    max_videos: int | None = None
    timm_model: str | None = None
    weights: str | None = None
    progress: bool = True
    overrides: dict[str, Any] | None = None  # VISConfig fields to change (tests, ablations)
    tracker: str = "minvis"  # "rovis": stage 1 adds the frame-pair track-query losses (rovis_train.py)
    class_weight: float = 5.0  # weight of the classification term of the set loss (Mask2Former: 2; recipe 5)
    semantic_weight: float = 2.0  # weight of the per-pixel category loss (configs with a semantic head)
    augment: str = "crop"  # comma list of vis.augment kinds (colour, crop) or "none"
    vpp_layout: str | None = None  # VPP's module positions, e.g. "map:0;sm:3,6,9" (patchprune.learned.layout)
    method_options: dict[str, Any] | None = None  # builder keywords of the learned method (ablations)
    policy_lr_mult: float = 1.0  # stage 2: lr of the pruning modules = lr x this (the backbone's: lr x 0.1)
    head_lr_mult: float = 1.0  # stage 2: lr of the pyramid + head = lr x this (the spec's x1; before 2026-11-30: 0.1)
    chain_graph: bool = True  # stage 2: the key frame's loss reaches the earlier frames' passes through the
    # temporal cache (the spec's chain); False cuts it (VideoStream(keep_graph=False), docs/vis.md)
    device: str | torch.device | None = None  # cpu (None), cuda, cuda:N or auto (`run_device`); train.json
    # records the device the run resolved to

    @property
    def stage(self) -> int:
        return 1 if self.method == "dense" else 2


def _validate(s: TrainSettings) -> None:
    from patchprune.learned import available_methods

    methods = ["dense"] + available_methods()
    if s.method not in methods:
        raise ValueError(f"--method {s.method!r} is unknown; expected one of {methods} (training-free policies "
                         f"need no training: `eval vis --run DENSE_RUN --method POLICY --target T`)")
    if s.stage == 2 and not s.init:
        raise ValueError(f"--method {s.method} is stage 2: pass --init with a dense VIS run or checkpoint")
    if s.tracker not in ("minvis", "rovis"):
        raise ValueError(f"--tracker must be minvis or rovis, got {s.tracker!r}")
    if s.tracker == "rovis" and s.stage == 2:
        raise ValueError("--tracker rovis trains its pair losses in stage 1 (dense); stage 2 uses minvis training")
    if not 0 < s.target <= 1:
        raise ValueError(f"--target must be in (0, 1], got {s.target}")
    for name in ("steps", "batch"):
        if getattr(s, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(s, name)}")
    if s.lr <= 0:
        raise ValueError(f"--lr must be > 0, got {s.lr}")
    if s.policy_lr_mult <= 0:
        raise ValueError(f"--policy-lr-mult must be > 0, got {s.policy_lr_mult}")
    if s.head_lr_mult <= 0:
        raise ValueError(f"--head-lr-mult must be > 0, got {s.head_lr_mult}")
    if s.class_weight <= 0:
        raise ValueError(f"--class-weight must be > 0, got {s.class_weight}")
    parse_augment(s.augment)
    if s.semantic_weight < 0:
        raise ValueError(f"--semantic-weight must be >= 0, got {s.semantic_weight}")
    check_layout_method(s.vpp_layout, s.method)
    if s.method_options and s.method == "dense":
        raise ValueError("--method-option needs a learned --method (stage 2), got dense")
    if s.vpp_layout is not None:
        from patchprune.learned.layout import parse_layout

        parse_layout(s.vpp_layout)  # syntax and order here; the block range once the model is built


def _init_path(init: str) -> Path:
    """The checkpoint file of `--init`: a run folder's, a .safetensors file, or a shipped reference's
    (by name, e.g. "dense"; hash-checked)."""
    p = Path(init)
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.exists():
        from patchprune.checkpoints import reference_names, verified_path

        if init in reference_names():
            return verified_path(init, "weights")
    if not p.is_file():
        raise FileNotFoundError(f"--init {init}: no checkpoint found (a run folder, a .safetensors file or a "
                                "shipped reference name)")
    return p


def initialise(model: VISModel, init: str) -> str:
    """Load `init` into the model: a VIS checkpoint (whole model) or a checkpoint whose module
    holds a timm ViT under `backbone.` (e.g. the fgseg study's dense model). Returns what was loaded."""
    from safetensors import safe_open

    path = _init_path(init)
    meta = checkpoint_meta(path)
    if "vis_config" in meta:
        check_compatible(path, model.config)
        from patchprune.train.checkpoint import load_checkpoint

        load_checkpoint(path, {"model": model})
        return "model"
    prefix = None
    with safe_open(str(path), framework="pt") as fh:
        keys = list(fh.keys())
        for k in keys:
            if k.startswith("module/") and k.split("/", 2)[2].startswith("backbone."):
                prefix = k[: k.index("backbone.") + len("backbone.")]
                break
        if prefix is None:
            raise ValueError(f"--init {path}: neither a VIS checkpoint nor one with a `backbone.` ViT")
        state = {k[len(prefix):]: fh.get_tensor(k) for k in keys if k.startswith(prefix)}
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"--init {path}: its ViT does not fit config {model.config.name}: {str(err)[:200]}") from err
    return "backbone"


def step_seed(seed: int, step: int) -> int:
    return (seed * 7919 + step * 104_729) % (2 ** 31)


def sample_seeds(seed: int, step: int, indices: list[int]) -> list[int]:
    """Per-sample loss seeds of a step (see `SetLoss`), by global batch index."""
    return [(step_seed(seed, step) * 31 + i) % (2 ** 31) for i in indices]


def run_training(s: TrainSettings, dist_info: Any = None) -> dict[str, Any]:
    """Train as `s` says; returns a summary (steps, minutes, last losses, run folder)."""
    from patchprune.train.distributed import DistInfo, broadcast_parameters, run_device
    from patchprune.train.loop import LoopConfig, Trainer, param_groups
    from patchprune.train.run_folder import RunClock, Snapshots, run_summary

    _validate(s)
    dev = run_device(s.device, "device")
    if s.threads:
        torch.set_num_threads(s.threads)
    dist_info = dist_info or DistInfo()
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)
    if s.stage == 2:
        config = VISConfig.load(Path(s.init)) if Path(s.init).is_dir() else \
            VISConfig.from_json(checkpoint_meta(_init_path(s.init)).get("vis_config") or _no_config(s.init))
    else:
        probe = named_config(s.config, timm_model=s.timm_model, weights=s.weights)
        data_cats = _categories(s.data)
        config = named_config(s.config, categories=sorted(data_cats), category_names=[data_cats[c] for c in sorted(data_cats)],
                              timm_model=s.timm_model, weights=s.weights, **{"img_size": probe.img_size, **(s.overrides or {})})
    existing = out / CONFIG_FILE
    previous = VISConfig.load(out) if existing.is_file() else None
    if previous is not None and previous.fingerprint() != config.fingerprint():
        raise ValueError(f"{out} holds a run of another config ({config.shape_differences(previous)}); "
                         "resume with the same --config and options or pick a new --out")
    data = load_split(s.data, "train", square_size(config.img_size), config.categories, s.max_videos)
    model = VISModel(config)
    loaded = initialise(model, s.init) if s.init else None
    encoder = build_encoder(model, s.method, s.target, s.vpp_layout, s.method_options)
    # initialised on the CPU (the same weights on every device), moved before the optimiser is built
    # (its state then lives with the parameters, also when resumed) and before NCCL broadcasts
    to_device(model, encoder, dev)
    broadcast_parameters(model, dist_info)
    if encoder is not None:
        broadcast_parameters(encoder.runner.policies, dist_info)
    criterion = SetLoss(config, s.class_weight, s.semantic_weight).to(dev)  # its no-object weight is a buffer
    augment = parse_augment(s.augment)

    head = list(model.pyramid.named_parameters()) + list(model.head.named_parameters())
    if s.stage == 1:
        bb_mult = 0.1 if loaded else 1.0
        groups = param_groups({"backbone": (model.backbone.named_parameters(), bb_mult),
                               "head": (head, 1.0)})
        modules: dict[str, nn.Module] = {"model": model}
    else:
        groups = param_groups({"policies": (encoder.runner.policies.named_parameters(), s.policy_lr_mult),
                               "backbone": (model.backbone.named_parameters(), 0.1),
                               "head": (head, s.head_lr_mult)})
        modules = {"model": model, "policies": encoder.runner.policies}
    optimizer = torch.optim.AdamW(groups, lr=s.lr, weight_decay=0.05)
    recorded = {**asdict(s), "device": str(dev)}  # JSON-able whether `device` came as a str or a torch.device
    if dist_info.is_main:
        config.save(out)
        write_settings(out, {**recorded, "stage": s.stage, "world_size": dist_info.world_size})
    meta = {"vis_config": config.to_json(), "settings": recorded}
    loop = LoopConfig(steps=s.steps, lr=s.lr, warmup=s.warmup, clip=s.clip, checkpoint=str(out / CHECKPOINT),
                      checkpoint_every=s.checkpoint_every, desc=f"vis stage {s.stage}", progress=s.progress)
    trainer = Trainer(modules, optimizer, loop, dist_info, meta)
    start = trainer.maybe_resume()
    clock = RunClock(trainer.history)
    snapshots = Snapshots(out, modules, meta, s.snapshot_every, dist_info.is_main)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(step_seed(s.seed, step))
        gen = step_generator(s.seed, step)
        if s.stage == 1 and s.tracker == "rovis":
            logs = _rovis_step(model, criterion, data, s, gen, dist_info, step, augment, dev)
        elif s.stage == 1:
            frames, targets, idx = rank_share(*sample_frames(data, s.batch, gen, augment),
                                              dist_info.rank, dist_info.world_size)
            o = model(normalise(frames.to(dev)))
            logs = criterion(o.head, [t.to(dev) for t in targets], sample_seeds(s.seed, step, idx))
        else:
            logs = _sparse_step(model, encoder, criterion, data, s, gen, dist_info, step, augment, dev)
        snapshots.step(step, clock.stamp(logs))
        return logs

    history = trainer.fit(step_fn)
    snapshots.finish(s.steps, history)
    return run_summary(out, s.steps, start, history, stage=s.stage)


def _no_config(init: str) -> dict:
    raise ValueError(f"--init {init}: stage 2 needs a dense VIS checkpoint (with its config)")


def _categories(root: str, split: str = "train") -> dict[int, str]:
    """Category id -> name of a split of a YouTube-VIS folder (annotations only)."""
    from patchprune.data.ytvis import read_ytvis
    from patchprune.vis.data import find_split

    ann, images = find_split(root, split)
    ds = read_ytvis(ann, image_root=images, load_frames=False)
    if not ds.categories:
        raise ValueError(f"{ann}: no categories")
    return ds.categories


def _sparse_step(model: VISModel, encoder: nn.Module, criterion: SetLoss, data: VISData, s: TrainSettings,
                 gen: torch.Generator, dist_info: Any, step: int, augment: tuple[str, ...],
                 dev: torch.device) -> dict[str, torch.Tensor]:
    from patchprune.learned.registry import LOSS_KEY
    from patchprune.video import VideoStream

    chain = sample_chains(data, s.batch, gen, augment=augment)
    chain = [rank_share(f, t, dist_info.rank, dist_info.world_size) for f, t in chain]
    stream = VideoStream(keep_graph=s.chain_graph)  # a training chain: gradients reach the earlier frames
    sparsity = torch.zeros((), device=dev)
    losses, pkrs = [], []
    for i, (frames, targets, idx) in enumerate(chain):
        stream.start_frame()
        targets = [t.to(dev) for t in targets]
        o = model(normalise(frames.to(dev)), encoder=encoder, stream=stream)
        if LOSS_KEY in o.backbone.aux:
            sparsity = sparsity + o.backbone.aux[LOSS_KEY]
        pkrs.append(float(o.backbone.pkr))
        if i >= 1:
            losses.append(criterion(o.head, targets, sample_seeds(s.seed, step * 3 + i, idx)))
    key, ref = losses[-1], losses[0]
    total = key["loss"] + PAIR_WEIGHT * ref["loss"] + sparsity
    return {"loss": total, "set": key["loss"].detach(), "sparsity": sparsity.detach(),
            "pkr": torch.tensor(sum(pkrs) / len(pkrs))}


def _rovis_step(model: VISModel, criterion: SetLoss, data: VISData, s: TrainSettings, gen: torch.Generator,
                dist_info: Any, step: int, augment: tuple[str, ...], dev: torch.device
                ) -> dict[str, torch.Tensor]:
    """Stage 1 with ROVIS: set loss on the key frame + the frame-pair losses (x0.5)."""
    from patchprune.vis.rovis_train import pair_loss

    chains = sample_chains(data, s.batch, gen, augment=augment)
    _, ref, key = [rank_share(f, t, dist_info.rank, dist_info.world_size) for f, t in chains]
    key_images, ref_images = normalise(key[0].to(dev)), normalise(ref[0].to(dev))
    key_targets, ref_targets = [t.to(dev) for t in key[1]], [t.to(dev) for t in ref[1]]
    out = model(key_images)
    logs = criterion(out.head, key_targets, sample_seeds(s.seed, step, key[2]))
    pair = pair_loss(lambda x, tq: model(x, track_queries=tq).head, criterion, out.head, (key_images, key_targets),
                     (ref_images, ref_targets), model.config.num_queries, gen)
    logs["pair"] = pair.detach()
    logs["loss"] = logs["loss"] + pair
    return logs
