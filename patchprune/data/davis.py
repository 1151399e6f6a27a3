"""DAVIS 2017 folder layout: read sequences as VideoSamples (one track per object id), write it.

    ROOT/JPEGImages/<res>/<sequence>/00000.jpg
    ROOT/Annotations/<res>/<sequence>/00000.png     palette PNG, pixel value = object id (0 background)
    ROOT/ImageSets/2017/<split>.txt                 sequence names, one per line

Semi-supervised test sets annotate only the first frame; then only that frame has masks. Any other
annotation count that differs from the frame count is an error. Value 255 (void) is ignored.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from patchprune.data.images import encode_jpeg, read_image, read_index_png, write_index_png
from patchprune.data.io import atomic_dir, write_bytes
from patchprune.data.types import InstanceTrack, VideoSample

VOID = 255


class DavisDataset(Sequence[VideoSample]):
    """Lazy reader of a DAVIS 2017 root; sequences from ImageSets/2017/<split>.txt or given by name."""

    def __init__(self, root: str | Path, split: str = "val", resolution: str = "480p",
                 sequences: Sequence[str] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"DAVIS root not found: {self.root}")
        self.resolution = resolution
        self.image_dir = self.root / "JPEGImages" / resolution
        self.ann_dir = self.root / "Annotations" / resolution
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"DAVIS frames folder not found: {self.image_dir}")
        if sequences is None:
            listing = self.root / "ImageSets" / "2017" / f"{split}.txt"
            if not listing.is_file():
                raise FileNotFoundError(f"DAVIS split listing not found: {listing}")
            sequences = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
        self.sequences = list(sequences)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> VideoSample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        name = self.sequences[index]
        fdir, adir = self.image_dir / name, self.ann_dir / name
        if not fdir.is_dir():
            raise FileNotFoundError(f"DAVIS sequence frames not found: {fdir}")
        frame_files = sorted(fdir.glob("*.jpg"))
        if not frame_files:
            raise ValueError(f"DAVIS sequence {name} has no frames in {fdir}")
        ann_files = sorted(adir.glob("*.png")) if adir.is_dir() else []
        if ann_files and len(ann_files) not in (1, len(frame_files)):
            raise ValueError(f"DAVIS sequence {name}: {len(frame_files)} frames but {len(ann_files)} annotations "
                             "(mismatched frame counts)")
        frames = np.stack([read_image(p) for p in frame_files])
        T, H, W = frames.shape[:3]
        labels = np.zeros((T, H, W), dtype=np.int32)
        stems = {p.stem: t for t, p in enumerate(frame_files)}
        for p in ann_files:
            if p.stem not in stems:
                raise ValueError(f"DAVIS sequence {name}: annotation {p.name} has no matching frame")
            lab = read_index_png(p)
            if lab.shape != (H, W):
                raise ValueError(f"{p}: annotation is {lab.shape[1]}x{lab.shape[0]}, frames are {W}x{H}")
            labels[stems[p.stem]] = lab
        ids = [int(v) for v in np.unique(labels) if v not in (0, VOID)]
        tracks = [InstanceTrack(track_id=i, category_id=1, masks=labels == i) for i in ids]
        return VideoSample(video_id=index + 1, name=name, frames=frames, tracks=tracks, categories={1: "object"},
                           file_names=[f"{name}/{p.name}" for p in frame_files])


def read_davis(root: str | Path, split: str = "val", resolution: str = "480p",
               sequences: Sequence[str] | None = None) -> DavisDataset:
    """Open a DAVIS 2017 root (frames and masks loaded per sequence)."""
    return DavisDataset(root, split, resolution, sequences)


def write_davis(samples: Iterable[VideoSample], root: str | Path, split: str = "val", resolution: str = "480p",
                overwrite: bool = False) -> Path:
    """Write samples in the DAVIS layout (object ids = track order 1..K); returns the root.

    The whole root is built in a temporary folder and renamed into place when complete.
    """
    root = Path(root)
    names = []
    with atomic_dir(root, overwrite=overwrite) as tmp:
        for s in samples:
            fdir = tmp / "JPEGImages" / resolution / s.name
            adir = tmp / "Annotations" / resolution / s.name
            fdir.mkdir(parents=True)
            adir.mkdir(parents=True)
            labels = s.label_map()
            for t in range(s.num_frames):
                (fdir / f"{t:05d}.jpg").write_bytes(encode_jpeg(s.frames[t]))
                write_index_png(adir / f"{t:05d}.png", labels[t])
            names.append(s.name)
        write_bytes(tmp / "ImageSets" / "2017" / f"{split}.txt", ("\n".join(names) + "\n").encode())
    return root
