"""`patchprune segment VIDEO --run RUN --out DIR`: stream a user's video through a trained run.

Input: a video file (mp4 / avi / mkv / mov / webm, decoded frame by frame with PyAV) or a folder
of frames (jpg / png, in name order). Output in DIR: `index.html` (the page: tracks over the video,
the patches each pruning stage processed, keep ratio per block and per frame, a table of the tracks;
`segment_page`), `overlay.mp4` (masks and track ids drawn on the frames), `frames.json` (per frame:
tracks with id, category, score, RLE mask, box; keep ratio per block), `keep/<frame>.png` (the
patches each block processed, one tile per block, when the backbone is pruned) and `results.json`
(the whole video's tracks, YouTube-VIS format). Track ids start at 1 in every output.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from patchprune.data import rle as rle_utils
from patchprune.demo_page.pictures import draw_tracks

if TYPE_CHECKING:
    import torch

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")


def count_frames(source: str | Path, max_frames: int | None = None) -> int | None:
    """Frames `iter_frames` will yield, when the folder or the container says (None: unknown)."""
    from patchprune.data.video import probe_video

    source = Path(source)
    if source.is_dir():
        n = sum(1 for p in source.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    else:
        n = probe_video(source).frames
    if not n:
        return None
    return min(n, max_frames) if max_frames else n


def iter_frames(source: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """uint8 [H, W, 3] frames of a video file or a folder of frames, one at a time; a folder whose
    frames differ in size is a ValueError naming the frame (a decoded video keeps one size)."""
    from patchprune.data.images import read_image
    from patchprune.data.video import iter_video_frames

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise ValueError(f"{source}: no frames ({', '.join(FRAME_SUFFIXES)}) in the folder")
        size = None
        for t, p in enumerate(files[:max_frames]):
            frame = read_image(p)
            size = size or frame.shape[:2]
            if frame.shape[:2] != size:
                raise ValueError(f"{source}: frame {t} ({p.name}) is {frame.shape[1]}x{frame.shape[0]}, earlier "
                                 f"frames {size[1]}x{size[0]}; one video must keep one size")
            yield frame
        return
    if not source.exists():
        raise FileNotFoundError(f"video not found: {source}")
    if source.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{source}: unsupported input; pass a video ({', '.join(VIDEO_SUFFIXES)}) or a folder of frames")
    yield from iter_video_frames(source, max_frames=max_frames)


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
                  threads: int | None = None, keep_aspect: bool = False,
                  device: str | torch.device | None = None) -> dict[str, Any]:
    """Segment and track `video` with the run's model; writes the files of the module docstring.

    keep_aspect: feed the frames at their own aspect (longer side at the model's size) instead of
    squashing them to the square the model trained on (`vis.data.model_frame_size`).
    device: where the model runs: cpu (default), cuda, cuda:N or auto (`train.distributed.run_device`);
    frames are decoded on the CPU and each goes to the device as it is fed."""
    import torch

    from patchprune.data.io import write_json
    from patchprune.train.distributed import run_device
    from patchprune.data.video import VideoWriter
    from patchprune.vis.predict import VideoPredictor, tracks_to_results, upsample_mask
    from patchprune.vis.run import load_run
    from patchprune.vis.segment_page import SegmentPage

    if not 0 <= threshold <= 1:
        raise ValueError(f"--threshold must be in [0, 1], got {threshold}")
    dev = run_device(device, "device")
    if threads:
        torch.set_num_threads(threads)
    frames = iter_frames(video, max_frames)
    first = next(frames)  # fails early (missing / undecodable input) before loading the model
    loaded = load_run(run, device=dev)
    model, cfg = loaded.model, loaded.model.config
    names = cfg.category_names or [str(c) for c in cfg.categories]
    out = Path(out)
    (out / "keep").mkdir(parents=True, exist_ok=True)
    pred = VideoPredictor(model, loaded.encoder, tracker, keep_aspect=keep_aspect)
    patch = model.backbone.patch_embed.patch_size[0]
    H, W = first.shape[:2]
    fed = pred.input_size(H, W)  # one size for the whole video (iter_frames checks)
    grid = (fed[0] // patch, fed[1] // patch)
    per_frame = []
    page = SegmentPage(f"patchprune segment: {Path(video).name}", count_frames(video, max_frames), grid,
                       len(model.backbone.blocks))
    bar = tqdm(desc="segment", unit="frame", disable=not progress)

    def frames_all() -> Iterator[np.ndarray]:
        yield first
        yield from frames

    with VideoWriter(out / "overlay.mp4", fps=fps) as overlay:
        for t, frame in enumerate(frames_all()):  # one size throughout (iter_frames checks)
            r = pred.frame(frame)
            shown, rows = [], []
            for d in r.detections:
                if d.score < threshold:
                    continue
                mask = upsample_mask(d.mask, H, W)
                if not mask.any():
                    continue
                tid = d.track_id + 1  # ids from 1 in every output (the tracker counts from 0)
                shown.append((tid, names[d.label], d.score, mask))
                rows.append({"track_id": tid, "category_id": cfg.categories[d.label], "category": names[d.label],
                             "score": d.score, "segmentation": rle_utils.encode(mask), "bbox": rle_utils.bbox(mask)})
            overlay.write(draw_tracks(frame, shown)[: H - H % 2, : W - W % 2])
            keep = {int(k): v.numpy() for k, v in r.keep_masks.items()} if loaded.encoder is not None else {}
            ratios = {k: float(v.mean()) for k, v in keep.items()}
            per_frame.append({"frame": t, "pkr": r.pkr, "keep_ratio_per_block": ratios, "scene_cut": r.cut,
                              "tracks": rows})
            if keep:
                Image.fromarray(keep_picture(keep, grid)).save(out / "keep" / f"{t:05d}.png")
            page.add(t, frame, shown, keep, r.pkr, r.cut)
            bar.update(1)
    bar.close()
    write_json(out / "frames.json", per_frame)
    results = tracks_to_results(pred.finish(), 0, H, W, cfg.categories)
    write_json(out / "results.json", results)
    method = loaded.settings.get("method", "dense")
    target = "" if method == "dense" else f" at target {loaded.settings.get('target')}"
    pkr = float(np.mean([f["pkr"] for f in per_frame]))
    intro = [f"{len(per_frame)} frames of {video} ({W}x{H}, resized to {fed[1]}x{fed[0]} for the model), "
             f"segmented and tracked by run {run} ({cfg.name} config, {method}{target}; mean PKR {pkr:.3f}).",
             f"Tracks scoring >= {threshold:.2f} are drawn; {tracker} tracker, batch-1 streaming."]
    notes = ["frames.json: per frame, every drawn track (id, category, score, RLE mask, box) and the keep "
             "ratio per block; results.json: the video's tracks in the YouTube-VIS results format; "
             "overlay.mp4: every frame with its tracks; keep/: the patches each block processed, per frame."]
    page.write(out, intro, notes, fps)
    return {"frames": len(per_frame), "tracks": len(results), "out": str(out), "page": str(out / "index.html"),
            "pkr": pkr, "model_size": [fed[1], fed[0]]}
