"""The fgseg task: synthetic videos -> per-pixel foreground / category labels, dense training of
`FgSegModel` and stage-2 fine-tuning of a learned pruning method (spec: training protocol).

Stage 2 sample: a key frame t and two reference frames at distinct offsets in [-5, 5] \\ {0}
(clamped to the video). The chain runs ref-ref (farther from t, no prior) -> ref (prior =
ref-ref) -> key (prior = ref) through one `VideoStream(keep_graph=True)` (the cache keeps its
graph), so the gradient reaches the earlier passes. Losses: segmentation on the key frame, 0.5 x segmentation on
the reference frame (our stand-in for VPP's tracking loss: there is no tracker here) and the
method's sparsity loss on all three passes.

Devices: the data (`FgSegData`) and every seeded draw (frames, chains: CPU `torch.Generator`s) stay on
the CPU, so a run samples the same batches on any device; the steps move the sampled batch to the
model's device (`module_device`), and the two stages take a `device` (default the CPU, where the
recorded figures were made).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from patchprune.data.synth import generate_video, split_seed
from patchprune.fgseg.config import DENSE_FT, seg_config
from patchprune.fgseg.model import FgSegModel, module_device, normalise
from patchprune.learned.registry import LOSS_KEY, LearnedPruner
from patchprune.video import VideoStream

if TYPE_CHECKING:
    from pathlib import Path

    from patchprune.fgseg.config import FgSegBenchConfig


@dataclass
class FgSegData:
    """Frames, per-pixel category labels and per-frame instance masks of a set of videos."""

    frames: Tensor  # uint8 [V, T, H, W, 3]
    labels: Tensor  # int64 [V, T, H, W], 0 = background, else category id
    instances: list[list[np.ndarray]] = field(default_factory=list)  # [v][t] -> bool [J, H, W]
    num_classes: int = 7

    def class_weights(self, power: float = 0.5) -> Tensor:
        """Cross-entropy class weights freq^-power (normalised to a pixel-weighted mean of 1).

        Background covers ~85 % of the pixels; unweighted training gives a conservative model
        that misses half of the foreground, and then the straight-through gradient of a keep
        mask (positive where the model is wrong) teaches pruning modules to drop foreground.
        """
        freq = torch.bincount(self.labels.flatten(), minlength=self.num_classes).double()
        freq = freq / freq.sum()
        w = torch.where(freq > 0, freq.clamp(min=1e-6) ** -power, torch.zeros_like(freq))
        return (w / (w * freq).sum()).float()

    @property
    def num_videos(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[1])


def make_data(seed: int, split: str, videos: int, frames: int, size: int, progress: bool = True,
              **difficulty: Any) -> FgSegData:
    """Generate `videos` synthetic videos of the split (train / valid seeds never overlap)."""
    all_frames, all_labels, all_inst = [], [], []
    categories: dict[int, str] = {}
    for i in tqdm(range(videos), desc=f"data {split}", leave=False, disable=not progress):
        v = generate_video(split_seed(seed, split, i), frames=frames, size=size, video_id=i + 1, **difficulty)
        categories.update(v.categories)
        label = np.zeros(v.frames.shape[:3], dtype=np.int64)
        for tr in v.tracks:
            label[tr.masks] = tr.category_id
        all_frames.append(torch.from_numpy(v.frames))
        all_labels.append(torch.from_numpy(label))
        per_frame = []
        for t in range(frames):
            masks = [tr.masks[t] for tr in v.tracks if tr.masks[t].any()]
            per_frame.append(np.stack(masks) if masks else np.zeros((0, *v.frames.shape[1:3]), dtype=bool))
        all_inst.append(per_frame)
    return FgSegData(torch.stack(all_frames), torch.stack(all_labels), all_inst, 1 + max(categories, default=0))


def segmentation_loss(logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-pixel cross-entropy, optionally class-weighted (see `FgSegData.class_weights`)."""
    return F.cross_entropy(logits, labels, weight=weight)


def _frames_at(data: FgSegData, v: Tensor, t: Tensor, flip: Tensor) -> tuple[Tensor, Tensor]:
    """Normalised images [B, 3, H, W] and labels [B, H, W] of frames (v[b], t[b]), mirrored
    horizontally where flip[b] (draws nothing from any generator)."""
    images, labels = normalise(data.frames[v, t]), data.labels[v, t]
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
    return images, labels


def sample_frames(data: FgSegData, batch: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random batch of single frames (with horizontal flips): (images, labels)."""
    v = torch.randint(0, data.num_videos, (batch,), generator=gen)
    t = torch.randint(0, data.num_frames, (batch,), generator=gen)
    flip = torch.rand(batch, generator=gen) < 0.5
    return _frames_at(data, v, t, flip)


def sample_chains(data: FgSegData, batch: int, gen: torch.Generator, max_offset: int = 5
                  ) -> tuple[list[Tensor], list[Tensor]]:
    """Batches of (ref-ref, ref, key) frames: lists of 3 image batches and 3 label batches."""
    T = data.num_frames
    if T < 3:
        raise ValueError("stage-2 chains need videos of at least 3 frames")
    v = torch.randint(0, data.num_videos, (batch,), generator=gen)
    key = torch.randint(0, T, (batch,), generator=gen)
    offsets = torch.tensor([o for o in range(-max_offset, max_offset + 1) if o != 0])
    refs = []
    for b in range(batch):  # two distinct valid offsets per sample (tiny loop over the batch)
        ok = offsets[((key[b] + offsets) >= 0) & ((key[b] + offsets) < T)]
        pick = ok[torch.randperm(len(ok), generator=gen)[:2]]
        pick = pick[pick.abs().argsort(descending=True)]  # farther first: ref-ref, then ref
        refs.append(key[b] + pick)
    refs_t = torch.stack(refs)
    order = [refs_t[:, 0], refs_t[:, 1], key]
    flip = torch.rand(batch, generator=gen) < 0.5
    images, labels = [], []
    for t in order:
        im, lb = _frames_at(data, v, t, flip)
        images.append(im)
        labels.append(lb)
    return images, labels


def dense_step(model: FgSegModel, data: FgSegData, batch: int, gen: torch.Generator,
               weight: Tensor | None = None) -> dict[str, Tensor]:
    """One dense (stage-1) step: segmentation loss of `model` on a random batch of single frames
    (`sample_frames`, drawn from `gen` on the CPU, then moved to the model's device), optionally
    class-weighted (`weight` on that device too); returns {"loss"}."""
    device = module_device(model)
    images, labels = sample_frames(data, batch, gen)
    logits, _ = model(images.to(device))
    loss = segmentation_loss(logits, labels.to(device), None if weight is None else weight.to(device))
    return {"loss": loss}


def sparse_step(model: FgSegModel, pruner: LearnedPruner | None, data: FgSegData, batch: int, gen: torch.Generator,
                ref_weight: float = 0.5, weight: Tensor | None = None) -> dict[str, Tensor]:
    """One stage-2 step on a batch of (ref-ref, ref, key) chains (drawn on the CPU, run on the model's device)."""
    device = module_device(model)
    images, labels = sample_chains(data, batch, gen)
    images, labels = [im.to(device) for im in images], [lb.to(device) for lb in labels]
    weight = None if weight is None else weight.to(device)
    seg_loss, sparsity, pkr = run_chain(model, pruner, images, labels, ref_weight, weight)
    sp_loss = sum(sparsity) if sparsity else seg_loss.new_zeros(())
    return {"loss": seg_loss + sp_loss, "seg": seg_loss.detach(), "sparsity": sp_loss.detach(),
            "pkr": torch.tensor(pkr[-1])}


def run_chain(model: FgSegModel, pruner: LearnedPruner | None, images: list[Tensor], labels: list[Tensor],
              ref_weight: float = 0.5, weight: Tensor | None = None) -> tuple[Tensor, list[Tensor], list[float]]:
    """Run a (ref-ref, ref, key) chain (`sample_chains`) through one fresh `VideoStream` that keeps the
    graph one frame back (`keep_graph=True`: gradients reach the earlier passes); returns (segmentation loss = ref_weight x ref + key, the pruner's sparsity
    losses of the passes that report one, the PKR of each pass)."""
    stream = VideoStream(keep_graph=True)
    seg, sparsity, pkr = [], [], []
    for i, (im, lb) in enumerate(zip(images, labels)):
        stream.start_frame()
        logits, out = model(im, encoder=pruner, stream=stream)
        if i >= 1:
            seg.append((ref_weight if i == 1 else 1.0) * segmentation_loss(logits, lb, weight))
        if LOSS_KEY in out.aux:
            sparsity.append(out.aux[LOSS_KEY])
        pkr.append(out.pkr)
    return sum(seg), sparsity, pkr


# ------------------------------------------------------------------------------------------------
# The study's two training stages (resumable)


def train_dense(cfg: FgSegBenchConfig, seed: int, data, workdir: Path, progress: bool,
                weight: torch.Tensor | None = None, device: torch.device | str | None = None):
    """Dense stage 1 (resumable). weight: CE class weights (default: `data.class_weights(cfg.class_weight_power)`).

    device: where to train (default the CPU). The model is initialised on the CPU (the same weights
    on every device), moved, then given its optimiser; a checkpoint loads into it wherever it is.
    """
    from patchprune.train.loop import LoopConfig, Trainer, param_groups

    dev = torch.device("cpu") if device is None else torch.device(device)
    torch.manual_seed(seed)
    model = FgSegModel(seg_config(cfg, data.num_classes)).to(dev)
    opt = torch.optim.AdamW(param_groups({"model": (model.named_parameters(), 1.0)}), lr=cfg.dense_lr)
    gen = torch.Generator().manual_seed(seed)
    loop = LoopConfig(steps=cfg.dense_steps, lr=cfg.dense_lr, warmup=max(1, cfg.dense_steps // 15), clip=1.0,
                      checkpoint=str(workdir / "dense.safetensors"), desc=f"dense s{seed}",
                      progress=progress)
    trainer = Trainer({"model": model}, opt, loop,
                      meta={"stage": "dense", "model": model.config_dict(), "device": str(dev)})
    start = trainer.maybe_resume()
    if start >= cfg.dense_steps:  # finished earlier: reuse as is (its meta keeps the device that trained it)
        return model.eval(), trainer.history
    for _ in range(start):  # the data stream continues where the checkpoint left it
        sample_frames(data, cfg.dense_batch, gen)
    if weight is None:
        weight = data.class_weights(cfg.class_weight_power)
    weight = weight.to(dev)
    trainer.fit(lambda step: dense_step(model, data, cfg.dense_batch, gen, weight))
    return model.eval(), trainer.history


def finetune(cfg: FgSegBenchConfig, seed: int, dense, data, method: str, target: float, workdir: Path,
             progress: bool, weight: torch.Tensor | None = None, device: torch.device | str | None = None):
    """Stage 2 from the dense checkpoint: new pruning modules x1 lr, backbone and head x0.1.

    Resumable from its checkpoint: a finished one is reused as is, a partial one continues at its
    step. weight: CE class weights (default: `data.class_weights(cfg.class_weight_power)`).
    device: where to fine-tune (default: the dense model's device). The pruning modules are
    initialised on the CPU (the same weights on every device), then moved with the copy of `dense`.
    """
    from patchprune.learned import build
    from patchprune.train.loop import LoopConfig, Trainer, param_groups

    dev = module_device(dense) if device is None else torch.device(device)
    torch.manual_seed(seed * 1000 + int(target * 100))
    model = copy.deepcopy(dense).to(dev)
    if method == DENSE_FT:  # the same stage-2 chain and steps without pruning: a fair reference
        pruner, policies = None, torch.nn.ModuleDict()
    else:
        options = ({"smooth_kernel": cfg.vpp_smooth_kernel, "first_frame_loss": cfg.vpp_first_frame_loss}
                   if method == "vpp" else {})
        pruner = build(method, model.backbone, target, policy_eps=cfg.policy_eps, **options).to(dev)
        policies = pruner.runner.policies
    groups = {"modules": (policies.named_parameters(), 1.0), "model": (model.named_parameters(), 0.1)}
    opt = torch.optim.AdamW(param_groups(groups), lr=cfg.finetune_lr)
    gen = torch.Generator().manual_seed(seed * 7919 + int(target * 100))
    path = workdir / f"{method}_{int(round(target * 100))}.safetensors"
    loop = LoopConfig(steps=cfg.finetune_steps, lr=cfg.finetune_lr, clip=cfg.finetune_clip, checkpoint=str(path),
                      desc=f"{method}@{target:.2f} s{seed}", progress=progress)
    modules = {"model": model, "policies": policies}
    trainer = Trainer(modules, opt, loop,
                      meta={"stage": "finetune", "method": method, "target": target, "device": str(dev)})
    start = trainer.maybe_resume()
    if start >= cfg.finetune_steps:  # finished earlier: reuse (fine-tunes are short: only final checkpoints are kept)
        return model.eval(), pruner.eval() if pruner is not None else None, trainer.history
    for _ in range(start):  # a partial checkpoint: the data stream continues where it left it
        sample_chains(data, cfg.finetune_batch, gen)
    if pruner is not None:
        pruner.train()
    if weight is None:
        weight = data.class_weights(cfg.class_weight_power)
    weight = weight.to(dev)
    history = trainer.fit(lambda step: sparse_step(model, pruner, data, cfg.finetune_batch, gen, weight=weight))
    return model.eval(), pruner.eval() if pruner is not None else None, history
