"""The fgseg task: synthetic videos -> per-pixel foreground / category labels, dense training of
`FgSegModel` and stage-2 fine-tuning of a learned pruning method (spec: training protocol).

Stage 2 sample: a key frame t and two reference frames at distinct offsets in [-5, 5] \\ {0}
(clamped to the video). The chain runs ref-ref (farther from t, no prior) -> ref (prior =
ref-ref) -> key (prior = ref) through one `VideoStream`, without detaching the cache, so the
gradient reaches the earlier passes. Losses: segmentation on the key frame, 0.5 x segmentation on
the reference frame (our stand-in for VPP's tracking loss: there is no tracker here) and the
method's sparsity loss on all three passes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from patchprune.data.synth import generate_video, split_seed
from patchprune.learned.registry import LOSS_KEY, LearnedPruner
from patchprune.models.fgseg import FgSegModel, normalise
from patchprune.video import VideoStream


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
    (`sample_frames`, drawn from `gen`), optionally class-weighted; returns {"loss"}."""
    images, labels = sample_frames(data, batch, gen)
    logits, _ = model(images)
    loss = segmentation_loss(logits, labels, weight)
    return {"loss": loss}


def sparse_step(model: FgSegModel, pruner: LearnedPruner | None, data: FgSegData, batch: int, gen: torch.Generator,
                ref_weight: float = 0.5, weight: Tensor | None = None) -> dict[str, Tensor]:
    """One stage-2 step on a batch of (ref-ref, ref, key) chains."""
    images, labels = sample_chains(data, batch, gen)
    seg_loss, sparsity, pkr = run_chain(model, pruner, images, labels, ref_weight, weight)
    sp_loss = sum(sparsity) if sparsity else torch.zeros(())
    return {"loss": seg_loss + sp_loss, "seg": seg_loss.detach(), "sparsity": sp_loss.detach(),
            "pkr": torch.tensor(pkr[-1])}


def run_chain(model: FgSegModel, pruner: LearnedPruner | None, images: list[Tensor], labels: list[Tensor],
              ref_weight: float = 0.5, weight: Tensor | None = None) -> tuple[Tensor, list[Tensor], list[float]]:
    """Run a (ref-ref, ref, key) chain (`sample_chains`) through one fresh `VideoStream`, without
    detaching the cache; returns (segmentation loss = ref_weight x ref + key, the pruner's sparsity
    losses of the passes that report one, the PKR of each pass)."""
    stream = VideoStream()
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
