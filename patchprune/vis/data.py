"""Training / evaluation data from any YouTube-VIS-layout folder, held in memory at model size.

Layouts found (first match wins), for split `train` (alike `valid`):
    DIR/train.json + DIR/train/JPEGImages/     (the generated sets, detectron2 naming)
    DIR/train/instances.json + DIR/train/JPEGImages/   (official 2021 naming)
    DIR/annotations/instances_train.json + DIR/train/JPEGImages/   (2019 converted copies)
Frames are resized to the model's square input (`VISConfig.img_size` rounded to a multiple of 32)
and masks with them; predictions are resized back to each video's own size for the results.
Training and evaluation squash every video to that square (one batch, one size). Streaming
inference on a user's video (`segment --keep-aspect`) can keep its aspect instead
(`model_frame_size`): the longer side at the square's side, the shorter rounded to a multiple of 32.

Batches are pure functions of (seed, step): a resumed run draws exactly the batches it would
have drawn, and torchrun ranks split the same global batch (rank r takes items r, r + world, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from patchprune.data.types import VideoSample
from patchprune.vis.loss import FrameTargets


def find_split(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation JSON, JPEGImages folder) of `split` under `root`, or a clear error naming what
    is missing and the layouts looked for."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} not found")
    candidates = [root / f"{split}.json", root / split / "instances.json", root / "annotations" / f"instances_{split}.json"]
    ann = next((c for c in candidates if c.is_file()), None)
    if ann is None:
        raise FileNotFoundError(f"{root}: no {split} annotations; expected one of "
                                f"{', '.join(str(c.relative_to(root)) for c in candidates)} (YouTube-VIS layout)")
    images = root / split / "JPEGImages"
    if not images.is_dir():
        alt = root / "JPEGImages"
        if ann.name == f"{split}.json" and alt.is_dir():
            images = alt
        else:
            raise FileNotFoundError(f"{root}: frames folder {images.relative_to(root)} not found (YouTube-VIS "
                                    f"layout: <split>/JPEGImages/<video>/<frame>.jpg)")
    return ann, images


def square_size(img_size: int) -> int:
    """Model input side: `img_size` rounded to a multiple of 32 (at least 32)."""
    return max(32, int(round(img_size / 32)) * 32)


def model_frame_size(height: int, width: int, img_size: int, keep_aspect: bool = False) -> tuple[int, int]:
    """(h, w) a height x width frame is fed to the model at: the square `square_size(img_size)`, or
    with `keep_aspect` the longer side at that size and the shorter scaled alike, rounded to a
    multiple of 32 (the coarsest pyramid stride; at least 32)."""
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    side = square_size(img_size)
    if not keep_aspect:
        return side, side
    scale = side / max(height, width)
    return (max(32, int(round(height * scale / 32)) * 32), max(32, int(round(width * scale / 32)) * 32))


def resize_frames(frames: np.ndarray, side: int | tuple[int, int]) -> Tensor:
    """uint8 [T, H, W, 3] -> uint8 [T, h, w, 3] (bilinear, antialiased); side: h = w, or (h, w)."""
    size = (side, side) if isinstance(side, int) else (int(side[0]), int(side[1]))
    # decoded frames may be read-only views; np.require copies only then (torch warns on non-writable arrays)
    x = torch.from_numpy(np.require(frames, requirements=["C", "W"])).permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def resize_masks(masks: np.ndarray | Tensor, side: int) -> Tensor:
    """bool [..., H, W] -> bool [..., side, side] (area share >= 0.5)."""
    m = torch.as_tensor(np.asarray(masks)).float()
    lead = m.shape[:-2]
    m = m.reshape(-1, 1, *m.shape[-2:])
    if m.shape[-2:] != (side, side):
        m = F.interpolate(m, size=(side, side), mode="area" if m.shape[-1] >= side else "nearest")
    return (m >= 0.5).reshape(*lead, side, side)


@dataclass
class VideoClip:
    """One video at model size: frames uint8 [T, S, S, 3]; masks bool [J, T, S, S]; labels [J]
    (label index into the config's categories); meta = id, name, original size, cuts."""

    video_id: int
    name: str
    frames: Tensor
    masks: Tensor
    labels: Tensor
    height: int
    width: int
    cuts: list[int] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def targets(self, t: int, flip: bool = False) -> FrameTargets:
        present = self.masks[:, t].flatten(1).any(1)
        m = self.masks[present, t]
        return FrameTargets(masks=m.flip(-1) if flip else m, labels=self.labels[present],
                            ids=torch.nonzero(present).flatten())


def clip_from_sample(sample: VideoSample, side: int, categories: list[int]) -> VideoClip:
    """Resize a `VideoSample` to the model side; tracks of unknown categories raise ValueError."""
    lookup = {c: i for i, c in enumerate(categories)}
    bad = sorted({tr.category_id for tr in sample.tracks} - set(lookup))
    if bad:
        raise ValueError(f"video {sample.name}: categories {bad} are not among the model's {categories}")
    T = sample.num_frames
    if sample.tracks:
        masks = resize_masks(np.stack([tr.masks for tr in sample.tracks]), side)
    else:
        masks = torch.zeros(0, T, side, side, dtype=torch.bool)
    labels = torch.tensor([lookup[tr.category_id] for tr in sample.tracks], dtype=torch.long)
    return VideoClip(sample.video_id, sample.name, resize_frames(sample.frames, side), masks, labels,
                     sample.height, sample.width, list(sample.cuts))


@dataclass
class VISData:
    """A split in memory: clips plus the data set's categories (ids and names) and its files."""

    clips: list[VideoClip]
    categories: dict[int, str]
    ann_path: Path
    side: int

    @property
    def frame_index(self) -> list[tuple[int, int]]:
        return [(v, t) for v, c in enumerate(self.clips) for t in range(c.num_frames)]


def load_split(root: str | Path, split: str, side: int, categories: list[int] | None = None,
               max_videos: int | None = None) -> VISData:
    """Read a split of a YouTube-VIS folder into memory at model side `side`.

    categories: the label order (a trained model's); default = the data set's category ids, sorted.
    """
    from patchprune.data.ytvis import read_ytvis

    ann, images = find_split(root, split)
    ds = read_ytvis(ann, image_root=images)
    cats = list(categories) if categories is not None else sorted(ds.categories)
    n = len(ds) if max_videos is None else min(len(ds), max_videos)
    if n == 0:
        raise ValueError(f"{ann}: the split has no videos")
    clips = [clip_from_sample(ds[i], side, cats) for i in range(n)]
    return VISData(clips, dict(ds.categories), ann, side)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random generator of one training step (so batches do not depend on resumes)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def sample_frames(data: VISData, batch: int, gen: torch.Generator, augment: tuple[str, ...] = ()
                  ) -> tuple[Tensor, list[FrameTargets]]:
    """A global batch of random single frames with random horizontal flips and the `augment`
    draws of `vis.augment` (none by default): (uint8 frames [B, S, S, 3], targets per frame)."""
    from patchprune.vis import augment as aug

    index = data.frame_index
    picks = torch.randint(0, len(index), (batch,), generator=gen).tolist()
    flips = (torch.rand(batch, generator=gen) < 0.5).tolist()
    frames, targets = [], []
    for i, flip in zip(picks, flips):
        v, t = index[i]
        f = data.clips[v].frames[t]
        f, tg = f.flip(1) if flip else f, data.clips[v].targets(t, flip)
        if augment:
            f, tg = aug.apply(aug.draw(augment, data.side, gen), f, tg)
        frames.append(f)
        targets.append(tg)
    return torch.stack(frames), targets


def sample_chains(data: VISData, batch: int, gen: torch.Generator, max_offset: int = 5,
                  augment: tuple[str, ...] = ()) -> list[tuple[Tensor, list[FrameTargets]]]:
    """Stage-2 chains: [(ref-ref frames, targets), (ref ...), (key ...)]: a key frame and two other
    frames of its video within +-max_offset, the farther first (VPP's chain order); one flip and
    one `augment` draw per chain."""
    from patchprune.vis import augment as aug

    vids = [v for v, c in enumerate(data.clips) if c.num_frames >= 3]
    if not vids:
        raise ValueError("stage-2 chains need videos of at least 3 frames")
    out: list[list] = [[[], []] for _ in range(3)]
    for _ in range(batch):
        v = vids[int(torch.randint(0, len(vids), (1,), generator=gen))]
        clip = data.clips[v]
        key = int(torch.randint(0, clip.num_frames, (1,), generator=gen))
        offs = [o for o in range(-max_offset, max_offset + 1) if o and 0 <= key + o < clip.num_frames]
        pick = [offs[i] for i in torch.randperm(len(offs), generator=gen)[:2].tolist()]
        pick.sort(key=lambda o: -abs(o))
        flip = bool(torch.rand(1, generator=gen) < 0.5)
        d = aug.draw(augment, data.side, gen) if augment else None
        for slot, t in enumerate([key + pick[0], key + pick[1], key]):
            f, tg = clip.frames[t].flip(1) if flip else clip.frames[t], clip.targets(t, flip)
            if d is not None:
                f, tg = aug.apply(d, f, tg)
            out[slot][0].append(f)
            out[slot][1].append(tg)
    return [(torch.stack(f), tg) for f, tg in out]


def rank_share(frames: Tensor, targets: list[FrameTargets], rank: int, world: int
               ) -> tuple[Tensor, list[FrameTargets], list[int]]:
    """This rank's items of a global batch (r, r + world, ...) and their global batch indices."""
    if len(targets) < world:
        raise ValueError(f"a global batch of {len(targets)} cannot be split over {world} processes; raise --batch")
    return frames[rank::world], targets[rank::world], list(range(len(targets)))[rank::world]
