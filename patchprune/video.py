"""Streaming video state carried from frame to frame (VPP's temporal cache).

A `VideoStream` is handed to the sparse ViT runner as `stream=` on every frame. Temporal pruning
modules (Map-SM) read the previous frame's cache from it and stage this frame's entries, which
become readable once committed (at block position 6, after x_6 is known):

- keys   [B, N, C]: x_1 of the previous frame (a clone, never an alias of a tensor the runner
  keeps modifying),
- values [B, N, C]: x_6 of the previous frame (output of block 5),
- mask   [B, N] bool: the tokens block 5 processed in the previous frame (no gradient).

The cache is per sample: a batch of B videos runs in lock-step and each sample has its own
validity flag. A sample's prior is invalid (Map-SM falls back to a dense mask up to position 3)
on the first frame, after `reset()`, when `start_frame(video_ids=...)` sees a new video id, when
the grid size or batch size changes.

Graph: by default `commit` detaches the cached keys / values, so streaming in a mode that records
gradients keeps no graph from frame to frame (memory stays flat over any number of frames). A
training chain that wants gradients to reach the previous frames' passes asks for it explicitly with
`VideoStream(keep_graph=True)`, and uses a fresh stream per chain (as `patchprune.fgseg.training`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import torch
from torch import Tensor


@dataclass
class TemporalCache:
    """One module's committed cache (see the module docstring for the fields)."""

    keys: Tensor
    values: Tensor
    mask: Tensor
    grid: tuple[int, int]
    valid: Tensor  # [B] bool: the sample's cache belongs to its current video

    @property
    def batch_size(self) -> int:
        """Number of videos the cache holds (its batch dimension)."""
        return int(self.keys.shape[0])


@dataclass
class VideoStream:
    """Per-video streaming state; pass the same object to every frame of a (batch of) video(s)."""

    caches: dict[str, TemporalCache] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    video_ids: list[Hashable] | None = None
    resets: int = 0  # how many (full or partial) resets happened: useful in logs and tests
    keep_graph: bool = False  # True only inside a training chain: cached x_1 / x_6 keep their graph

    # ---- frame bookkeeping -------------------------------------------------------------------
    def start_frame(self, video_ids: Sequence[Hashable] | None = None) -> None:
        """Declare a new frame; samples whose video id differs from the last frame's are reset.

        Without ids, every sample is assumed to continue its video. A change in the number of ids
        resets everything (the batch layout changed).
        """
        self.pending.clear()
        if video_ids is not None:
            ids = list(video_ids)
            if self.video_ids is None or len(ids) != len(self.video_ids):
                if self.video_ids is not None:
                    self.reset()
            else:
                changed = [i for i, (a, b) in enumerate(zip(ids, self.video_ids)) if a != b]
                if changed:
                    self.reset(changed)
            self.video_ids = ids

    def reset(self, samples: Sequence[int] | Tensor | None = None) -> None:
        """Forget the prior of all samples (None) or of the given sample indices (scene cut, new video)."""
        self.resets += 1
        if samples is None:
            self.caches.clear()
            self.pending.clear()
            return
        idx = torch.as_tensor(list(samples) if not isinstance(samples, Tensor) else samples, dtype=torch.long)
        for cache in self.caches.values():
            if idx.numel() and (idx.min() < 0 or idx.max() >= cache.batch_size):
                raise ValueError(f"reset samples {idx.tolist()} out of range for batch size {cache.batch_size}")
            valid = cache.valid.clone()
            valid[idx.to(valid.device)] = False
            cache.valid = valid

    # ---- cache access ------------------------------------------------------------------------
    def read(self, owner: str, grid: tuple[int, int], batch_size: int, width: int | None = None
             ) -> TemporalCache | None:
        """The committed cache of `owner`, or None when there is none usable for this frame
        (never written, reset, different grid size or batch size, or no valid sample).

        Raises ValueError when this frame's video ids (`start_frame`) do not give one id per
        sample, or when the cache holds features of another width than the reader's (`width`):
        one stream shared by two models."""
        self.check_batch(batch_size)
        cache = self.caches.get(owner)
        if cache is None:
            return None
        if width is not None and cache.keys.shape[-1] != width:
            raise ValueError(f"stream: the cache of {owner!r} holds {cache.keys.shape[-1]}-wide features but this "
                             f"model's are {width}-wide; use one VideoStream per model")
        if tuple(cache.grid) != tuple(grid) or cache.batch_size != batch_size:
            del self.caches[owner]  # resolution or batch change: the old prior is meaningless
            self.resets += 1
            return None
        if not bool(cache.valid.any()):
            return None
        return cache

    def check_batch(self, batch_size: int) -> None:
        """ValueError unless the ids given to `start_frame` (if any) are one per sample."""
        if self.video_ids is not None and len(self.video_ids) != batch_size:
            raise ValueError(f"video_ids: start_frame got {len(self.video_ids)} ids but the batch has {batch_size} "
                             "samples; pass one id per sample")

    def stage(self, owner: str, **entries: Any) -> None:
        """Stage entries written during this frame (keys, values, mask, grid); not readable until `commit`."""
        self.pending.setdefault(owner, {}).update(entries)

    def staged(self, owner: str) -> dict[str, Any] | None:
        """The entries staged by `owner` during this frame, or None."""
        return self.pending.get(owner)

    def commit(self, owner: str) -> None:
        """Make the staged keys / values / mask / grid of `owner` the prior of the next frame."""
        staged = self.pending.pop(owner, {})
        missing = {"keys", "values", "mask", "grid"} - set(staged)
        if missing:
            raise ValueError(f"cannot commit the temporal cache of {owner!r}: missing {sorted(missing)}")
        keys, values = staged["keys"], staged["values"]
        if not self.keep_graph:  # outside a training chain the next frame must not hold this frame's graph
            keys, values = keys.detach(), values.detach()
        valid = torch.ones(keys.shape[0], dtype=torch.bool, device=keys.device)
        self.caches[owner] = TemporalCache(
            keys=keys, values=values, mask=staged["mask"].bool().detach(), grid=tuple(staged["grid"]), valid=valid
        )

    def detach_(self) -> "VideoStream":
        """Cut the cached tensors from their graph (truncated back-propagation through time in a
        `keep_graph=True` chain; a default stream detaches at every commit already)."""
        for cache in self.caches.values():
            cache.keys, cache.values = cache.keys.detach(), cache.values.detach()
        return self
