"""Online trackers (one frame in, masks with track ids out): MinVIS (default) and ROVIS.

Both keep their state in a `TrackingStream`, the same object that carries the pruning cache, and
start over on a scene cut or a new resolution (`TrackingStream.reset`). Per frame they take the
model's last-layer outputs of one video (batch 1): class logits [Q, K+1], mask logits [Q, h, w],
normalised query embeddings [Q, D] and raw outputs [Q, D], on the model's device. `finish(T)` returns
`VideoTrack`s; the per-frame mask history is kept on the CPU (a long video's masks would otherwise
grow without bound in GPU memory).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from patchprune.registry import Registry
from patchprune.video import VideoStream

TOP_K = 10
ROVIS_TRACK_THRESHOLD = 0.25
ROVIS_NEW_THRESHOLD = 0.3
ROVIS_NMS_TRACKS = 0.7
ROVIS_NMS_ALL = 0.4
ROVIS_MEMORY = 10


@dataclass
class FrameOutput:
    """Last-layer outputs of one frame of one video (see the module docstring)."""

    class_logits: Tensor
    mask_logits: Tensor
    queries: Tensor
    hidden: Tensor


@dataclass
class VideoTrack:
    """A finished track: label index, score, per-frame mask logits at model resolution (None where absent)."""

    track_id: int
    label: int
    score: float
    masks: list[Tensor | None]


@dataclass
class Detection:
    """What a tracker shows for the current frame: id, label index, score, mask logits [h, w]."""

    track_id: int
    label: int
    score: float
    mask: Tensor


TRACKERS: Registry[type] = Registry("tracker")


class Tracker:
    """Base class: `reset()` on a cut, `update(frame_index, FrameOutput) -> [Detection]`,
    `track_queries()` ([E, D] or None, for ROVIS), `finish(num_frames) -> [VideoTrack]`."""

    uses_track_queries = False

    def reset(self) -> None:
        raise NotImplementedError

    def track_queries(self) -> Tensor | None:
        return None

    def update(self, t: int, out: FrameOutput) -> list[Detection]:
        raise NotImplementedError

    def finish(self, num_frames: int) -> list[VideoTrack]:
        raise NotImplementedError


def align(prev: Tensor, cur: Tensor) -> Tensor:
    """Permutation p [Q] so that cur[p] matches prev slot by slot (Hungarian on 1 - cosine)."""
    cost = 1 - F.normalize(prev.float(), dim=-1) @ F.normalize(cur.float(), dim=-1).T
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    perm = torch.empty(len(rows), dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm


@TRACKERS.register("minvis")
class MinVISTracker(Tracker):
    """Training-free: align frame t's queries to the aligned frame t-1 (no memory bank); a track is
    an aligned query slot, its class = mean of the aligned logits; top-k (slot, class) pairs."""

    def __init__(self, top_k: int = TOP_K) -> None:
        self.top_k = top_k
        self.segments: list[dict[str, Any]] = []
        self.prev: Tensor | None = None

    def reset(self) -> None:
        self.prev = None

    def update(self, t: int, out: FrameOutput) -> list[Detection]:
        logits, masks, emb = out.class_logits, out.mask_logits, out.queries
        if self.prev is None or self.prev.shape[0] != emb.shape[0]:
            self.segments.append({"start": t, "logits": [], "masks": []})
        else:
            perm = align(self.prev, emb).to(emb.device)
            logits, masks, emb = logits[perm], masks[perm], emb[perm]
        self.prev = emb
        seg = self.segments[-1]
        seg["logits"].append(logits.float())
        seg["masks"].append(masks.to("cpu", torch.float16))
        base = (len(self.segments) - 1) * logits.shape[0]
        probs = torch.stack(seg["logits"]).mean(0).softmax(-1)[:, :-1]
        score, label = probs.max(-1)
        return [Detection(base + q, int(label[q]), float(score[q]), masks[q]) for q in range(logits.shape[0])]

    def finish(self, num_frames: int) -> list[VideoTrack]:
        tracks: list[VideoTrack] = []
        for s, seg in enumerate(self.segments):
            probs = torch.stack(seg["logits"]).mean(0).softmax(-1)[:, :-1]  # [Q, K]
            Q, K = probs.shape
            top = probs.flatten().topk(min(self.top_k, probs.numel()))
            for score, idx in zip(top.values.tolist(), top.indices.tolist()):
                q, k = divmod(idx, K)
                masks: list[Tensor | None] = [None] * num_frames
                for i, m in enumerate(seg["masks"]):
                    masks[seg["start"] + i] = m[q]
                tracks.append(VideoTrack(s * Q + q, k, score, masks))
        return tracks


def mask_scores(class_logits: Tensor, mask_logits: Tensor) -> tuple[Tensor, Tensor]:
    """ROVIS score = class probability x mean mask probability inside the mask; (score, label)."""
    prob, label = class_logits.softmax(-1)[:, :-1].max(-1)
    p = mask_logits.float().sigmoid()
    inside = (p > 0.5).float()
    mean_in = (p * inside).flatten(1).sum(1) / inside.flatten(1).sum(1).clamp_min(1)
    return prob * mean_in, label


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU [A, B] of bool masks [A, h, w] and [B, h, w]."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1) - inter
    return inter / union.clamp_min(1)


@TRACKERS.register("rovis")
class ROVISTracker(Tracker):
    """Track queries: live tracks' last outputs are appended to the learned queries; outputs of
    track queries keep their id, learned ones start new tracks (thresholds, NMS, memory per vis.md)."""

    uses_track_queries = True

    def __init__(self, num_queries: int, track_threshold: float = ROVIS_TRACK_THRESHOLD,
                 new_threshold: float = ROVIS_NEW_THRESHOLD, memory: int = ROVIS_MEMORY) -> None:
        self.num_queries = num_queries
        self.track_threshold, self.new_threshold, self.memory = track_threshold, new_threshold, memory
        self.live: dict[int, dict[str, Any]] = {}   # id -> {"query", "last_seen"}
        self.history: dict[int, dict[str, Any]] = {}  # id -> {"scores", "labels", "masks" {t: logits}}
        self.next_id = 0
        self.order: list[int] = []  # ids of the track queries of the last frame, in order

    def reset(self) -> None:
        self.live.clear()
        self.order = []

    def track_queries(self) -> Tensor | None:
        self.order = list(self.live)
        if not self.order:
            return None
        return torch.stack([self.live[i]["query"] for i in self.order])

    def expire(self, t: int) -> None:
        """After frame t: drop tracks whose last `memory` frames (t included) did not show them, so a
        track last seen on frame s is still queried on frames s+1 .. s+memory."""
        for i in [i for i, s in self.live.items() if t - s["last_seen"] >= self.memory]:
            del self.live[i]

    def update(self, t: int, out: FrameOutput) -> list[Detection]:
        score, label = mask_scores(out.class_logits, out.mask_logits)
        binary = out.mask_logits > 0
        Q, ids = self.num_queries, self.order
        kept: list[int] = []  # output rows kept this frame
        track_rows = sorted(range(Q, Q + len(ids)), key=lambda r: -float(score[r]))
        for r in track_rows:  # among tracks: NMS 0.7
            if score[r] <= self.track_threshold:
                continue
            if kept and float(mask_iou(binary[r:r + 1], binary[kept]).max()) > ROVIS_NMS_TRACKS:
                continue
            kept.append(r)
        new_rows = sorted(range(Q), key=lambda r: -float(score[r]))
        for r in new_rows:  # new tracks: NMS 0.4 against everything kept, never suppressing a track
            if score[r] <= self.new_threshold:
                continue
            if kept and float(mask_iou(binary[r:r + 1], binary[kept]).max()) > ROVIS_NMS_ALL:
                continue
            kept.append(r)
        dets = []
        for r in kept:
            if r >= Q:
                tid = ids[r - Q]
            else:
                tid, self.next_id = self.next_id, self.next_id + 1
                self.live[tid] = {"query": out.hidden[r].detach(), "last_seen": t}
                self.history[tid] = {"scores": [], "labels": [], "masks": {}}
            s = float(score[r])
            if s >= self.new_threshold:  # a track below 0.3 keeps its old query
                self.live[tid]["query"] = out.hidden[r].detach()
            self.live[tid]["last_seen"] = t
            h = self.history[tid]
            h["scores"].append(s)
            h["labels"].append(int(label[r]))
            h["masks"][t] = out.mask_logits[r].to("cpu", torch.float16)
            dets.append(Detection(tid, int(label[r]), s, out.mask_logits[r]))
        self.expire(t)
        return dets

    def finish(self, num_frames: int) -> list[VideoTrack]:
        tracks = []
        for tid, h in self.history.items():
            label = Counter(h["labels"]).most_common(1)[0][0]
            masks = [h["masks"].get(t) for t in range(num_frames)]
            tracks.append(VideoTrack(tid, label, sum(h["scores"]) / len(h["scores"]), masks))
        return tracks


def make_tracker(name: str, num_queries: int) -> Tracker:
    """A fresh tracker by name ("minvis" or "rovis")."""
    cls = TRACKERS.get(name)
    return cls(num_queries) if cls is ROVISTracker else cls()


@dataclass
class TrackingStream(VideoStream):
    """A `VideoStream` (the pruning cache) that also carries the tracker; `reset()` clears both.
    `observe_frame(size, cut)` resets on a new resolution or a scene cut before the frame runs."""

    tracker: Tracker | None = None
    frame_size: tuple[int, int] | None = None
    cuts: int = 0

    def reset(self, samples: Any = None) -> None:
        super().reset(samples)
        if self.tracker is not None:
            self.tracker.reset()

    def observe_frame(self, size: tuple[int, int], cut: bool = False) -> None:
        if self.frame_size is not None and (tuple(size) != tuple(self.frame_size) or cut):
            self.cuts += 1
            self.reset()
        self.frame_size = tuple(size)
        self.start_frame()


def is_scene_cut(prev: Tensor | None, cur: Tensor, threshold: float = 0.3) -> bool:
    """A cut when the mean absolute difference of the two frames' 16x16 grey thumbnails exceeds
    `threshold` of the value range (uint8 [H, W, 3] frames)."""
    if prev is None or prev.shape != cur.shape:
        return False

    def thumb(f: Tensor) -> Tensor:
        g = f.float().mean(-1)[None, None] / 255.0
        return F.adaptive_avg_pool2d(g, 16)

    return float((thumb(prev) - thumb(cur)).abs().mean()) > threshold
