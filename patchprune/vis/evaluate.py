"""`eval vis`: stream every valid video, then YouTube-VIS AP / AR, per-frame COCO AP, PKR, IoI,
GMACs per component and batch-1 streaming FPS (backbone alone and the whole model; with
`timing_batch` B > 1 also the throughput of B videos streamed side by side, `fps_batched`).

Under torchrun each rank streams its share of the videos (round robin); results, keep ratios and
IoI sums are gathered on rank 0, so the numbers equal a single process's. Timing and GMACs run
on rank 0 only. Everything runs on the model's device (`evaluate_folder(device=...)`; CPU by
default); CUDA timings synchronise before each clock reading.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from patchprune.data import rle as rle_utils
from patchprune.validate import check_int
from patchprune.vis.data import VideoClip, VISData, load_split
from patchprune.vis.model import VISModel, normalise
from patchprune.vis.predict import VideoPredictor, tracks_to_results


def stream_video(model: VISModel, encoder: nn.Module | None, clip: VideoClip, tracker: str,
                 categories: list[int]) -> tuple[list[dict[str, Any]], list[dict[int, Tensor]], list[dict[str, Any]]]:
    """(YTVIS results, per-frame keep masks {block: bool [N]}, per-frame COCO results) of one clip."""
    pred = VideoPredictor(model, encoder, tracker)
    keeps = []
    for t in range(clip.num_frames):
        r = pred.frame(clip.frames[t], cut=t in clip.cuts)
        keeps.append(r.keep_masks)
    results = tracks_to_results(pred.finish(), clip.video_id, clip.height, clip.width, categories)
    frame_results = []
    for r in results:
        for t, seg in enumerate(r["segmentations"]):
            if seg is not None:
                frame_results.append({"image_id": image_id(clip.video_id, t), "category_id": r["category_id"],
                                      "score": r["score"], "segmentation": seg,
                                      "bbox": rle_utils.bbox(rle_utils.decode(seg, clip.height, clip.width))})
    return results, keeps, frame_results


def image_id(video_id: int, t: int) -> int:
    """Per-frame COCO image id of frame t of a video."""
    return int(video_id) * 100_000 + t


def frame_coco_gt(gt: dict[str, Any]) -> dict[str, Any]:
    """A YouTube-VIS ground truth dict -> per-frame COCO instances (one image per frame)."""
    images, anns = [], []
    for v in gt["videos"]:
        for t, name in enumerate(v["file_names"]):
            images.append({"id": image_id(v["id"], t), "file_name": name, "height": v["height"], "width": v["width"]})
    for a in gt.get("annotations", []):
        v = next(x for x in gt["videos"] if x["id"] == a["video_id"])
        for t, seg in enumerate(a["segmentations"]):
            if seg is None:
                continue
            mask = rle_utils.decode(seg, v["height"], v["width"])
            if not mask.any():
                continue
            anns.append({"id": len(anns) + 1, "image_id": image_id(v["id"], t), "category_id": a["category_id"],
                         "segmentation": rle_utils.encode(mask), "area": float(mask.sum()),
                         "bbox": rle_utils.bbox(mask), "iscrowd": int(a.get("iscrowd", 0))})
    return {"images": images, "annotations": anns, "categories": gt["categories"]}


def component_gmacs(model: VISModel, encoder: nn.Module | None, clip: VideoClip) -> dict[str, float]:
    """GMACs per component at batch 1 on the clip's second frame (the first one fills the pruning
    cache): backbone, pyramid + pixel decoder, transformer decoder (+ class head)."""
    from patchprune.metrics.flops import flops
    from patchprune.video import VideoStream

    stream = VideoStream()
    frames = [normalise(clip.frames[t][None].to(model.device)) for t in range(min(2, clip.num_frames))]
    with torch.no_grad():
        for x in frames[:-1]:
            stream.start_frame()
            model(x, encoder=encoder, stream=stream)
    stream.start_frame()
    count = flops(model, (frames[-1],), encoder=encoder, stream=stream)
    part = {k.split(".", 1)[1]: v / 2e9 for k, v in count.by_module.items() if k.startswith(type(model).__name__ + ".")}
    pyramid, head, pixel = part.get("pyramid", 0.0), part.get("head", 0.0), part.get("head.pixel_decoder", 0.0)
    return {"backbone": count.macs / 1e9 - pyramid - head, "pyramid_pixel_decoder": pyramid + pixel,
            "transformer_decoder": head - pixel, "total": count.macs / 1e9}


def streaming_fps(model: VISModel, encoder: nn.Module | None, clip: VideoClip, frames: int = 20, warmup: int = 3,
                  batch: int = 1) -> dict[str, float]:
    """Frames per second of streaming: backbone alone and the whole model (tracker excluded).

    batch B > 1 streams B videos side by side (the clip's frames, each slot starting `b` frames later,
    so the slots differ and a learned pruner keeps a different count in each), B frames a step: the
    saturated throughput next to batch-1 latency. FPS counts every frame of every slot. Runs on the
    model's device; on CUDA the clock is read after a synchronise (kernels run asynchronously)."""
    from patchprune.metrics.timing import steady_allocator, synchronize
    from patchprune.video import VideoStream

    check_int("batch", batch, 1)
    steady_allocator()  # as every timed figure of the project: no frame pays the previous one's page faults
    enc = encoder if encoder is not None else model.dense
    n = clip.num_frames
    dev = model.device
    xs = [normalise(clip.frames[[(t + b) % n for b in range(batch)]].to(dev)) for t in range(frames + warmup)]
    out: dict[str, float] = {}
    with torch.inference_mode():
        for name in ("backbone", "model"):
            stream = VideoStream()
            for i, x in enumerate(xs):
                if i == warmup:
                    synchronize(dev)  # the warm-up frames' kernels finish outside the timed span
                    t0 = time.perf_counter()
                stream.start_frame()
                enc(x, stream=stream) if name == "backbone" else model(x, encoder=encoder, stream=stream)
            synchronize(dev)
            out[name] = frames * batch / (time.perf_counter() - t0)
    return out


EVAL_SEED = 0


def evaluate(model: VISModel, encoder: nn.Module | None, data: VISData, tracker: str = "minvis",
             timing_frames: int = 20, dist_info: Any = None, seed: int = EVAL_SEED, timing_batch: int = 1
             ) -> dict[str, Any]:
    """All metrics of `eval vis` (see the module docstring); results under "results".

    Pruners that draw at inference (VPP's Gumbel noise, "sparse background activation") see the
    global RNG seeded per video by (seed, video id): a rerun gives the same numbers, and so does any
    split of the videos over torchrun ranks."""
    from patchprune.data.io import read_json
    from patchprune.metrics.coco import coco_instance_eval
    from patchprune.metrics.ioi import IoIMeter
    from patchprune.metrics.ytvis import ytvis_eval
    from patchprune.train.distributed import DistInfo, shard

    dist_info = dist_info or DistInfo()
    model.eval()
    if encoder is not None:
        encoder.eval()
    cats = model.config.categories
    grid = (data.side // model.backbone.patch_embed.patch_size[0],) * 2
    results, frame_results = [], []
    kept = torch.zeros(0)
    later = []  # whether each row of `kept` is a frame after its video's first (a Map-SM prior exists)
    ioi = IoIMeter()
    for clip in shard(data.clips, dist_info):
        torch.manual_seed(seed * 1_000_003 + int(clip.video_id))
        res, keeps, fres = stream_video(model, encoder, clip, tracker, cats)
        results += res
        frame_results += fres
        for t, km in enumerate(keeps):
            if km:
                ioi.update({k: v[None] for k, v in km.items()}, [clip.masks[:, t]], grid)
                row = torch.stack([v.float().mean() for _, v in sorted(km.items())])
                kept = row[None] if kept.numel() == 0 else torch.cat([kept, row[None]])
                later.append(t > 0)
    kept_sum = kept.sum(0) if kept.numel() else torch.zeros(0)
    n_frames = kept.shape[0] if kept.numel() else 0
    is_later = torch.tensor(later, dtype=torch.bool)
    later_sum = kept[is_later].sum(0) if kept.numel() else torch.zeros(0)
    n_later = int(is_later.sum())
    if dist_info.enabled:
        import torch.distributed as dist

        gathered: list[Any] = [None] * dist_info.world_size
        dist.all_gather_object(gathered, (results, frame_results, kept_sum, n_frames, ioi.sums, ioi.counts,
                                          later_sum, n_later))
        results = [r for g in gathered for r in g[0]]
        frame_results = [r for g in gathered for r in g[1]]
        kept_sum = sum(g[2] for g in gathered)
        n_frames = sum(g[3] for g in gathered)
        ioi.sums = sum(g[4] for g in gathered)
        ioi.counts = sum(g[5] for g in gathered)
        later_sum = sum(g[6] for g in gathered)
        n_later = sum(g[7] for g in gathered)
    if not dist_info.is_main:
        return {}
    results.sort(key=lambda r: (r["video_id"], -r["score"], r["category_id"]))
    gt = read_json(data.ann_path, "YouTube-VIS annotation file")
    metrics: dict[str, Any] = {"videos": len(data.clips), "frames": int(n_frames)}
    metrics.update(ytvis_eval(gt, results))
    per_frame = coco_instance_eval(frame_coco_gt(gt), frame_results, ("bbox", "segm")) if frame_results else {}
    metrics["AP_bbox"] = float(per_frame.get("AP_bbox", 0.0))
    metrics["AP_segm"] = float(per_frame.get("AP_segm", 0.0))
    per_block = (kept_sum / max(n_frames, 1)).tolist()
    metrics["pkr"] = float(np.mean(per_block)) if per_block else 1.0
    metrics["keep_ratio_per_block"] = per_block
    # The frames after each video's first: what streaming FPS times (its warm-up frames include the
    # first) and what a long video converges to; the first frame has no Map-SM prior.
    per_block_later = (later_sum / max(n_later, 1)).tolist()
    metrics["pkr_after_first_frame"] = float(np.mean(per_block_later)) if per_block_later and n_later else metrics["pkr"]
    metrics["ioi"] = ioi.compute()
    metrics["gmacs"] = component_gmacs(model, encoder, data.clips[0])
    if timing_frames:
        metrics["fps"] = streaming_fps(model, encoder, data.clips[0], timing_frames)
        if timing_batch > 1:
            metrics["fps_batched"] = {"batch": timing_batch,
                                      **streaming_fps(model, encoder, data.clips[0], timing_frames, batch=timing_batch)}
        metrics["threads"] = torch.get_num_threads()
    metrics["results"] = results
    return metrics


def evaluate_folder(run: str | Path | None, data_dir: str | Path, tracker: str = "minvis", split: str = "valid",
                    max_videos: int | None = None, timing_frames: int = 20, random_init: str | None = None,
                    method: str | None = None, target: float | None = None, dist_info: Any = None,
                    method_options: dict[str, Any] | None = None, timing_batch: int = 1,
                    device: str | torch.device | None = None) -> dict[str, Any]:
    """Load a run (or build `random_init`'s named config with random weights) and evaluate on DIR/split.
    `method_options`: keywords of the learned method's builder, e.g. {"init_keep": True} so untrained
    modules keep their target rates (`random_init`), or {"noise": False} over a run's own options
    (train.json) to evaluate VPP's trained modules without their inference noise. `device`: cpu
    (default), cuda, cuda:N or auto (`train.distributed.run_device`); the model is built and loaded
    on the CPU, then moved. Results match the CPU's up to float rounding (and, for pruners that
    draw noise at inference, the device's own random stream)."""
    from patchprune.train.distributed import run_device
    from patchprune.vis.config import named_config
    from patchprune.vis.data import square_size
    from patchprune.vis.run import build_encoder, load_run, to_device
    from patchprune.vis.train import _categories

    dev = run_device(device, "device")
    if random_init:
        cats = _categories(str(data_dir), split)
        cfg = named_config(random_init, categories=sorted(cats))
        torch.manual_seed(0)
        model = VISModel(cfg).eval()
        encoder = build_encoder(model, method or "dense", target or 0.55, options=method_options)
        to_device(model, encoder, dev)
        settings: dict[str, Any] = {"method": method or "dense", "target": target, "random_init": random_init,
                                    "method_options": method_options or {}}
    else:
        if run is None:
            raise ValueError("pass --run RUN (a folder written by `train vis`) or --random-init CONFIG")
        loaded = load_run(run, method, target, method_options, device=dev)
        model, encoder, settings = loaded.model, loaded.encoder, loaded.settings
    data = load_split(data_dir, split, square_size(model.config.img_size), model.config.categories, max_videos)
    metrics = evaluate(model, encoder, data, tracker, timing_frames, dist_info, timing_batch=timing_batch)
    if metrics:
        metrics = {"config": model.config.name, "method": settings.get("method"), "target": settings.get("target"),
                   "method_options": settings.get("method_options", {}), "tracker": tracker, "device": str(dev),
                   **metrics}
    return metrics
