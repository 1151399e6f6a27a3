"""In-memory sample types shared by the synthetic generators and the real-format readers.

Every reader (YouTube-VIS, COCO, DAVIS, Ref-YouTube-VOS, RefCOCO) and every generator yields these
types, so models, training loops and metrics never see a file format. An image is a video of
one frame (T = 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class InstanceTrack:
    """One object instance over a video.

    masks: bool [T, H, W], all False on frames where the instance is absent (out of the frame,
    fully occluded, or not annotated). `attributes` carries optional generator facts (shape,
    texture, colour, motion) used by the referring-expression generator; readers leave it empty.
    """

    track_id: int
    category_id: int
    masks: np.ndarray
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def present(self) -> np.ndarray:
        """bool [T]: frames where the instance has at least one pixel."""
        return self.masks.reshape(self.masks.shape[0], -1).any(axis=1)

    @property
    def areas(self) -> np.ndarray:
        """int [T]: visible pixel count per frame."""
        return self.masks.reshape(self.masks.shape[0], -1).sum(axis=1)


@dataclass
class VideoSample:
    """A video (or an image, T = 1) with its instance tracks.

    frames: uint8 [T, H, W, 3] RGB. categories: category id -> name for the whole data set.
    `cuts` lists the frame indices where a new shot starts (scene changes; never 0).
    `file_names` keeps the per-frame file names when the sample came from disk.
    `distractors` (synthetic data, on request) are the visible masks of non-instance shapes.
    """

    video_id: int
    name: str
    frames: np.ndarray
    tracks: list[InstanceTrack]
    categories: dict[int, str]
    cuts: list[int] = field(default_factory=list)
    file_names: list[str] = field(default_factory=list)
    seed: int | None = None
    distractors: list[InstanceTrack] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def label_map(self) -> np.ndarray:
        """int32 [T, H, W]: index of the track (1-based, in list order) covering each pixel, 0 = none."""
        out = np.zeros(self.frames.shape[:3], dtype=np.int32)
        for i, tr in enumerate(self.tracks, start=1):
            out[tr.masks] = i
        return out


@dataclass
class ReferSample:
    """One referring expression (or reasoning instruction) with its target mask track.

    frames: uint8 [T, H, W, 3]; masks: bool [T, H, W] of the referred object (all False on frames
    where it is absent; an expression may also refer to nothing, then every frame is empty).
    kind: "referring" (attributes and relations) or "reasoning" (needs inference about the scene).
    """

    ref_id: int
    name: str
    frames: np.ndarray
    expression: str
    masks: np.ndarray
    kind: str = "referring"
    source_id: int = 0
    track_id: int | None = None
    category_id: int | None = None
    split: str = ""
