"""Streaming inference: one frame at a time through the (pruned) model and a tracker.

`VideoPredictor.frame(frame uint8 [H, W, 3]) -> FrameResult` runs batch 1 with a
`TrackingStream` (pruning cache + tracker state, reset on a cut or a new resolution);
`finish()` returns the video's tracks; `tracks_to_results` turns them into YouTube-VIS results.
Frames run on the model's device; keep masks and track histories come back on the CPU (NumPy,
metrics, JSON), so a long video holds no growing state on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchprune.data import rle as rle_utils
from patchprune.vis.data import model_frame_size, resize_frames
from patchprune.vis.model import VISModel, VISOutput, normalise
from patchprune.vis.trackers import Detection, FrameOutput, TrackingStream, VideoTrack, is_scene_cut, make_tracker


@dataclass
class FrameResult:
    """One frame's detections (mask logits at model resolution, on the model's device) and the
    backbone's keep masks (on the CPU)."""

    detections: list[Detection]
    keep_masks: dict[int, Tensor]
    pkr: float
    cut: bool


def frame_output(out: VISOutput, b: int = 0) -> FrameOutput:
    """Sample b's last-layer outputs."""
    h = out.head
    return FrameOutput(h.class_logits[-1][b], h.mask_logits[-1][b], h.queries[b], h.hidden[b])


class VideoPredictor:
    """Streams one video through `model` (optionally under `encoder`) with tracker `tracker`.

    keep_aspect: feed frames at their own aspect (`model_frame_size`) instead of the square the
    model trained on; a new size resets the stream like a new resolution does."""

    def __init__(self, model: VISModel, encoder: nn.Module | None = None, tracker: str = "minvis",
                 detect_cuts: bool = True, keep_aspect: bool = False) -> None:
        self.model, self.encoder = model, encoder
        self.keep_aspect = bool(keep_aspect)
        self.stream = TrackingStream(tracker=make_tracker(tracker, model.config.num_queries))
        self.detect_cuts = detect_cuts
        self.t = 0
        self.prev: Tensor | None = None

    @torch.inference_mode()
    def frame(self, frame: np.ndarray | Tensor, cut: bool = False) -> FrameResult:
        f = torch.tensor(np.asarray(frame)) if not isinstance(frame, Tensor) else frame
        if f.dim() != 3 or f.shape[-1] != 3 or f.dtype != torch.uint8:
            raise ValueError(f"a frame must be uint8 [H, W, 3], got {tuple(f.shape)} {f.dtype}")
        cut = cut or (self.detect_cuts and is_scene_cut(self.prev, f))
        self.stream.observe_frame(tuple(f.shape[:2]), cut)
        self.prev = f
        x = resize_frames(f[None].numpy(), self.input_size(int(f.shape[0]), int(f.shape[1])))
        x = normalise(x.to(self.model.device))  # uint8 crosses to the device: a quarter of the float bytes
        tracker = self.stream.tracker
        tq = tracker.track_queries()
        out = self.model(x, encoder=self.encoder, stream=self.stream,
                         track_queries=None if tq is None else tq[None])
        dets = tracker.update(self.t, frame_output(out))
        self.t += 1
        keep = {k: v[0].cpu() for k, v in out.backbone.keep_masks.items()}
        return FrameResult(dets, keep, float(out.backbone.pkr), cut)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) a height x width frame is fed to the model at."""
        return model_frame_size(height, width, self.model.config.img_size, self.keep_aspect)

    def finish(self) -> list[VideoTrack]:
        return self.stream.tracker.finish(self.t)


def upsample_mask(logits: Tensor, height: int, width: int) -> np.ndarray:
    """Mask logits [h, w] (any device) -> bool [height, width] (> 0 after bilinear upsampling)."""
    m = F.interpolate(logits.float()[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return (m[0, 0] > 0).cpu().numpy()


def tracks_to_results(tracks: list[VideoTrack], video_id: int, height: int, width: int,
                      categories: list[int]) -> list[dict[str, Any]]:
    """YouTube-VIS results entries (official format: RLE per frame or null, score, category id)."""
    out = []
    for tr in tracks:
        segs = []
        for m in tr.masks:
            if m is None:
                segs.append(None)
                continue
            mask = upsample_mask(m, height, width)
            segs.append(rle_utils.encode(mask) if mask.any() else None)
        if all(s is None for s in segs):
            continue
        out.append({"video_id": int(video_id), "category_id": int(categories[tr.label]), "score": float(tr.score),
                    "segmentations": segs})
    return out
