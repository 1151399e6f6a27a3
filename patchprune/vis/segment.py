"""`patchprune segment VIDEO --run RUN --out DIR`: stream a user's video through a trained run.

Input: a video file (mp4 / avi / mkv / mov / webm, decoded frame by frame with PyAV) or a folder
of frames (jpg / png, in name order). Output in DIR: `overlay.mp4` (masks and track ids drawn on
the frames), `frames.json` (per frame: tracks with id, category, score, RLE mask, box; keep ratio
per block), `keep/<frame>.png` (the patches each block processed, one tile per block, when the
backbone is pruned) and `results.json` (the whole video's tracks, YouTube-VIS format).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from patchprune.data import rle as rle_utils

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")


def iter_frames(source: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """uint8 [H, W, 3] frames of a video file or a folder of frames, one at a time."""
    from patchprune.data.images import read_image
    from patchprune.data.video import iter_video_frames

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise ValueError(f"{source}: no frames ({', '.join(FRAME_SUFFIXES)}) in the folder")
        for p in files[:max_frames]:
            yield read_image(p)
        return
    if not source.exists():
        raise FileNotFoundError(f"video not found: {source}")
    if source.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{source}: unsupported input; pass a video ({', '.join(VIDEO_SUFFIXES)}) or a folder of frames")
    yield from iter_video_frames(source, max_frames=max_frames)


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, well-spread colour per track id (golden-ratio hue steps)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((track_id * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_overlay(frame: np.ndarray, tracks: list[tuple[int, str, float, np.ndarray]], alpha: float = 0.5) -> np.ndarray:
    """Blend each (id, name, score, bool mask [H, W]) onto the frame and label it with its id."""
    out = frame.astype(np.float32)
    for tid, _, _, mask in tracks:
        out[mask] = (1 - alpha) * out[mask] + alpha * np.array(track_colour(tid), dtype=np.float32)
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for tid, name, score, mask in tracks:
        ys, xs = np.nonzero(mask)
        if len(xs):
            draw.text((int(xs.mean()), int(ys.mean())), f"{tid} {name} {score:.2f}", fill=(255, 255, 255))
    return np.asarray(img)


def keep_picture(keep_masks: dict[int, Any], grid: tuple[int, int], scale: int = 4) -> np.ndarray:
    """One tile per block (white = processed patch), side by side: uint8 [h*scale, blocks*(w*scale+2), 3]."""
    tiles = []
    for _, m in sorted(keep_masks.items()):
        tile = np.asarray(m, dtype=np.uint8).reshape(grid) * 255
        tile = np.kron(tile, np.ones((scale, scale), dtype=np.uint8))
        tiles += [tile, np.full((tile.shape[0], 2), 64, dtype=np.uint8)]
    pic = np.concatenate(tiles, axis=1)
    return np.repeat(pic[:, :, None], 3, axis=2)


def segment_video(video: str | Path, run: str | Path, out: str | Path, tracker: str = "minvis", threshold: float = 0.5,
                  max_frames: int | None = None, fps: float = 10.0, progress: bool = True,
                  threads: int | None = None) -> dict[str, Any]:
    """Segment and track `video` with the run's model; writes the files of the module docstring."""
    import torch

    from patchprune.data.io import write_json
    from patchprune.data.video import write_video
    from patchprune.vis.predict import VideoPredictor, tracks_to_results, upsample_mask
    from patchprune.vis.run import load_run

    if not 0 <= threshold <= 1:
        raise ValueError(f"--threshold must be in [0, 1], got {threshold}")
    if threads:
        torch.set_num_threads(threads)
    frames = iter_frames(video, max_frames)
    first = next(frames)  # fails early (missing / undecodable input) before loading the model
    loaded = load_run(run)
    model, cfg = loaded.model, loaded.model.config
    names = cfg.category_names or [str(c) for c in cfg.categories]
    out = Path(out)
    (out / "keep").mkdir(parents=True, exist_ok=True)
    pred = VideoPredictor(model, loaded.encoder, tracker)
    patch = model.backbone.patch_embed.patch_size[0]
    grid = (pred.side // patch, pred.side // patch)
    overlay, per_frame = [], []
    size = first.shape[:2]
    bar = tqdm(desc="segment", unit="frame", disable=not progress)

    def frames_all() -> Iterator[np.ndarray]:
        yield first
        yield from frames

    for t, frame in enumerate(frames_all()):
        if frame.shape[:2] != size:
            raise ValueError(f"frame {t} is {frame.shape[1]}x{frame.shape[0]}, earlier frames {size[1]}x{size[0]}; "
                             "one video must keep one size")
        r = pred.frame(frame)
        H, W = frame.shape[:2]
        shown, rows = [], []
        for d in r.detections:
            if d.score < threshold:
                continue
            mask = upsample_mask(d.mask, H, W)
            if not mask.any():
                continue
            shown.append((d.track_id, names[d.label], d.score, mask))
            rows.append({"track_id": d.track_id, "category_id": cfg.categories[d.label], "category": names[d.label],
                         "score": d.score, "segmentation": rle_utils.encode(mask), "bbox": rle_utils.bbox(mask)})
        overlay.append(draw_overlay(frame, shown))
        ratios = {int(k): float(v.float().mean()) for k, v in r.keep_masks.items()}
        per_frame.append({"frame": t, "pkr": r.pkr, "keep_ratio_per_block": ratios, "scene_cut": r.cut, "tracks": rows})
        if r.keep_masks and loaded.encoder is not None:
            Image.fromarray(keep_picture({k: v.numpy() for k, v in r.keep_masks.items()}, grid)).save(out / "keep" / f"{t:05d}.png")
        bar.update(1)
    bar.close()
    H, W = size
    even = [f[: H - H % 2, : W - W % 2] for f in overlay]
    write_video(out / "overlay.mp4", np.stack(even), fps=fps)
    write_json(out / "frames.json", per_frame)
    results = tracks_to_results(pred.finish(), 0, H, W, cfg.categories)
    write_json(out / "results.json", results)
    return {"frames": len(per_frame), "tracks": len(results), "out": str(out),
            "pkr": float(np.mean([f["pkr"] for f in per_frame]))}
