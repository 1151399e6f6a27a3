"""Contact sheets: frames next to their instance masks, to look at generated or loaded data."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from patchprune.data.io import atomic_path
from patchprune.data.types import VideoSample

_TRACK_COLOURS = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
], dtype=np.uint8)


def overlay_masks(frame: np.ndarray, masks: Sequence[np.ndarray], alpha: float = 0.55) -> np.ndarray:
    """uint8 [H, W, 3]: the frame darkened, each mask tinted in its track colour with a white outline."""
    out = (frame.astype(np.float32) * 0.45)
    for i, m in enumerate(masks):
        if not m.any():
            continue
        col = _TRACK_COLOURS[i % len(_TRACK_COLOURS)].astype(np.float32)
        out[m] = (1 - alpha) * frame[m].astype(np.float32) + alpha * col
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        out[m & ~inner] = 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def contact_sheet(videos: Sequence[VideoSample], path: str | Path, frames_per_video: int = 6,
                  tile: int = 128, colours: int | None = 256) -> Path:
    """Write a PNG: per video, one row of frames and one row of mask overlays (track colours).

    Each row is labelled with the video name and its tracks' category names in track colour order.
    colours: quantise to this many palette colours (keeps the file small), None for full RGB.
    """
    if not videos:
        raise ValueError("contact_sheet needs at least one video")
    label_h = 14
    rows = []
    for v in videos:
        T = v.num_frames
        idx = np.unique(np.linspace(0, T - 1, min(frames_per_video, T)).round().astype(int))
        th = max(1, round(tile * v.height / v.width))
        top, bottom = [], []
        for t in idx:
            f = Image.fromarray(v.frames[t]).resize((tile, th), Image.NEAREST)
            o = overlay_masks(v.frames[t], [tr.masks[t] for tr in v.tracks])
            top.append(np.asarray(f))
            bottom.append(np.asarray(Image.fromarray(o).resize((tile, th), Image.NEAREST)))
        pad = [np.zeros((th, tile, 3), np.uint8)] * (frames_per_video - len(idx))
        block = np.concatenate([np.concatenate(top + pad, 1), np.concatenate(bottom + pad, 1)], 0)
        head = Image.new("RGB", (block.shape[1], label_h), (20, 20, 20))
        draw = ImageDraw.Draw(head)
        x = 2
        draw.text((x, 1), f"{v.name}" + (f" cuts={v.cuts}" if v.cuts else ""), fill=(255, 255, 255))
        x += 8 * (len(v.name) + 2) + (8 * 12 if v.cuts else 0)
        for i, tr in enumerate(v.tracks):
            name = v.categories.get(tr.category_id, str(tr.category_id))
            draw.text((x, 1), name, fill=tuple(int(c) for c in _TRACK_COLOURS[i % len(_TRACK_COLOURS)]))
            x += 6 * len(name) + 10
        rows.append(np.concatenate([np.asarray(head), block], 0))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
    sheet = np.concatenate(rows, 0)
    path = Path(path)
    image = Image.fromarray(sheet)
    if colours is not None:
        image = image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)
    return path
