"""`patchprune demo`: the main job on a short video: the shipped reference checkpoints (dense,
VPP @ 0.55, VPP @ 0.40) segment and track it, and a page shows what they found, which patches each
block processed, and what that saved.

Steps: generate a few videos with the reference data set's generator settings (fixed seed; or read
the user's `--video`), stream every video through every model (batch 1, MinVIS tracker, pruning
cache across frames: `patchprune.vis.evaluate.stream_video`), score YouTube-VIS AP against the
generated ground truth, count GMACs per frame and time batch-1 streaming FPS of the backbone and
of the whole model, then write `OUT/index.html` with its pictures beside it and print the table.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from patchprune.demo_page.html import Figure, render_page, write_page
from patchprune.demo_page.pictures import (Shown, display_size, hstack, keep_ratio_plot, keep_tile, overlay_panel,
                                           save_gif, save_png, stage_blocks, stage_label, vstack)
from patchprune.demo_page.table import html_table, text_table

DEMO_MODELS = ("dense", "vpp-0.55", "vpp-0.40")


@dataclass
class DemoSource:
    """The videos to segment: clips at model size, ground truth (None for a user's video) and the
    first video's frames at their own size (shown on the page) with its ground-truth instances."""

    clips: list[Any]
    gt: dict[str, Any] | None
    frames: list[np.ndarray]
    gt_shown: list[list[Shown]] | None
    description: str


@dataclass
class ModelRun:
    """One reference model's outputs on the source: results, per-frame keep masks of the first
    video, keep ratio per block over every frame, metrics."""

    name: str
    label: str
    target: float | None
    results: list[dict[str, Any]] = field(default_factory=list)
    keeps: list[dict[int, Any]] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)


def model_label(name: str, method: str, target: float | None) -> str:
    return "dense" if method == "dense" else f"{method.upper()} {target:.2f}"


def generated_source(info: dict[str, Any], out: Path, videos: int, frames: int, seed: int, side: int,
                     categories: list[int]) -> DemoSource:
    """`videos` generated videos with the generator settings the references were trained on, written
    in the YouTube-VIS layout under OUT/data (the same JPEG round trip as the training data)."""
    from patchprune.data.io import read_json
    from patchprune.data.synth_vis import synth_videos
    from patchprune.data.ytvis import write_ytvis_split
    from patchprune.vis.data import load_split

    gen = (info.get("data") or {}).get("generator") or {}
    if "size" not in gen:
        raise ValueError("the reference checkpoints record no generated training data, so the demo cannot "
                         "generate matching videos; pass --video PATH")
    difficulty = {k: v for k, v in (gen.get("difficulty") or {}).items() if v is not None}
    samples = list(synth_videos("valid", videos, frames, int(gen["size"]), seed, **difficulty))
    names = {int(k): v for k, v in (info["data"].get("categories") or {}).items()} or None
    write_ytvis_split(samples, out / "data", "demo", overwrite=True, categories=names,
                      info={"description": "patchprune demo videos", "seed": seed, "frames": frames,
                            "size": gen["size"], "difficulty": difficulty})
    data = load_split(out / "data", "demo", side, categories)
    first = samples[0]
    cat_names = first.categories
    gt_shown = [[(i + 1, cat_names.get(tr.category_id, str(tr.category_id)), None, tr.masks[t])
                 for i, tr in enumerate(first.tracks) if tr.masks[t].any()] for t in range(first.num_frames)]
    desc = (f"{videos} generated videos of {frames} frames at {gen['size']} px (seed {seed}; the generator "
            f"settings of the references' training data, scenes not in it)")
    return DemoSource(data.clips, read_json(data.ann_path), list(first.frames), gt_shown, desc)


def video_source(path: str | Path, frames: int, side: int) -> DemoSource:
    """The first `frames` frames of a video file or a folder of frames (no ground truth)."""
    import torch

    from patchprune.vis.data import VideoClip, resize_frames
    from patchprune.vis.segment import iter_frames

    read = list(iter_frames(path, max_frames=frames))  # one size throughout (iter_frames checks)
    if not read:
        raise ValueError(f"--video {path}: no frame could be read")
    H, W = read[0].shape[:2]
    clip = VideoClip(1, Path(path).stem, resize_frames(np.stack(read), side),
                     torch.zeros(0, len(read), side, side, dtype=torch.bool), torch.zeros(0, dtype=torch.long), H, W)
    return DemoSource([clip], None, read, None, f"{len(read)} frames of {path} ({W}x{H}), no ground truth")


def block_ratios(keeps: list[dict[int, Any]], depth: int) -> list[float]:
    """Mean keep ratio per block over frames (1.0 per block for a dense model, which reports none)."""
    rows = [[float(v.float().mean()) for _, v in sorted(k.items())] for k in keeps if k]
    return np.mean(rows, 0).tolist() if rows else [1.0] * depth


def shown_tracks(results: list[dict[str, Any]], video_id: int, t: int, height: int, width: int,
                 names: list[str], categories: list[int], threshold: float) -> list[Shown]:
    """The instances a model shows on frame t: its tracks of the video scoring >= threshold, numbered
    1, 2, ... by score (a track keeps its number on every frame)."""
    from patchprune.data import rle as rle_utils

    tracks = sorted((r for r in results if r["video_id"] == video_id and r["score"] >= threshold),
                    key=lambda r: -r["score"])
    out = []
    for i, r in enumerate(tracks, start=1):
        seg = r["segmentations"][t]
        if seg is not None:
            out.append((i, names[categories.index(r["category_id"])], r["score"], rle_utils.decode(seg, height, width)))
    return out


def run_models(refs: list[Any], source: DemoSource, timing_frames: int, progress: bool, seed: int = 0) -> list[ModelRun]:
    """Stream every clip through every model (tqdm bar over frames), then count GMACs and time FPS.
    torch's generator is seeded per model: VPP keeps its Gumbel noise at inference (the paper's
    "sparse background activation"), so the kept patches are random draws, made repeatable here."""
    import torch
    from tqdm import tqdm

    from patchprune.metrics.ytvis import ytvis_eval
    from patchprune.vis.evaluate import component_gmacs, stream_video, streaming_fps

    total = len(refs) * sum(c.num_frames for c in source.clips)
    runs = []
    with tqdm(total=total, desc="demo: segment", unit="frame", disable=not progress) as bar:
        for ref in refs:
            run = ModelRun(ref.name, model_label(ref.name, ref.method, ref.target), ref.target)
            torch.manual_seed(seed)
            all_keeps = []
            for i, clip in enumerate(source.clips):
                res, keeps, _ = stream_video(ref.model, ref.encoder, clip, "minvis", ref.model.config.categories)
                run.results += res
                all_keeps += keeps
                if i == 0:
                    run.keeps = keeps
                bar.update(clip.num_frames)
            run.ratios = block_ratios(all_keeps, len(ref.model.backbone.blocks))
            ap = ytvis_eval(source.gt, run.results) if source.gt is not None else {}
            run.row = {"model": run.label, "AP": ap.get("AP"), "AP50": ap.get("AP50"),
                       "pkr": float(np.mean(run.ratios)), "gmacs": component_gmacs(ref.model, ref.encoder, source.clips[0])}
            runs.append(run)
    best: dict[str, dict[str, float]] = {}
    for _ in range(2):  # two interleaved rounds, best of each: less sensitive to a busy moment
        for ref, run in tqdm(list(zip(refs, runs)), desc="demo: time", unit="model", disable=not progress):
            fps = streaming_fps(ref.model, ref.encoder, source.clips[0], frames=timing_frames)
            prev = best.get(run.name, {})
            best[run.name] = {k: max(v, prev.get(k, 0.0)) for k, v in fps.items()}
    for run in runs:
        run.row["fps"] = best[run.name]
    return runs


def write_pictures(out: Path, source: DemoSource, runs: list[ModelRun], refs: list[Any], threshold: float,
                   side: int = 240, tile: int = 200) -> list[Figure]:
    """Animated overlays and kept patches, still strips, the keep-ratio plot; their page entries."""
    cfg = refs[0].model.config
    names = cfg.category_names or [str(c) for c in cfg.categories]
    clip = source.clips[0]
    H, W = clip.height, clip.width
    T = len(source.frames)
    hw = display_size(H, W, side)
    first = "ground truth" if source.gt_shown is not None else "input"

    def overlay_row(t: int, hw_: tuple[int, int]) -> list[np.ndarray]:
        panels = [overlay_panel(source.frames[t], source.gt_shown[t] if source.gt_shown else [], hw_,
                                f"{first} . frame {t + 1}/{T}")]
        for run in runs:
            shown = shown_tracks(run.results, clip.video_id, t, H, W, names, cfg.categories, threshold)
            panels.append(overlay_panel(source.frames[t], shown, hw_, f"{run.label} . PKR {run.row['pkr']:.2f}"))
        return panels

    save_gif([hstack(overlay_row(t, hw)) for t in range(T)], out / "overlay.gif")
    pruned = [(run, ref) for run, ref in zip(runs, refs) if ref.encoder is not None]
    figures = [Figure("overlay.gif", "Masks and track ids",
                      f"Left: {first}; then each model's tracks scoring >= {threshold:.2f}, numbered by score "
                      "(a number stays with its track across frames; colours follow the numbers). Batch-1 "
                      "streaming with the MinVIS tracker.")]
    grid_side = (clip.frames.shape[1] // refs[0].model.backbone.patch_embed.patch_size[0],) * 2
    picks = sorted({int(round(x)) for x in np.linspace(min(1, T - 1), T - 1, min(6, T))})
    if pruned:
        def stage_row(run: ModelRun, t: int, thw: tuple[int, int], named: bool) -> list[np.ndarray]:
            starts = stage_blocks(run.ratios)
            keep = run.keeps[t]
            return [keep_tile(source.frames[t], keep[b].numpy(), grid_side, thw,
                              (f"{run.label} | " if named else "") + f"{stage_label(b, starts, len(run.ratios))}: "
                              f"{float(keep[b].float().mean()):.0%}") for b in starts if run.ratios[b] < 0.999]

        thw = display_size(H, W, tile)
        save_gif([vstack([hstack(stage_row(run, t, thw, True)) for run, _ in pruned]) for t in range(T)],
                 out / "kept.gif")
        figures.append(Figure("kept.gif", "Patches each block processed, over the video",
                              "One tile per pruning stage (blocks between two pruning modules see the same "
                              "patches); dimmed patches were skipped by that block and keep their last feature. "
                              "The first frame has no previous frame to map, so Map-SM starts on the second."))
    figures.append(Figure("keep_ratio.png", "Keep ratio per layer",
                          "Share of patches each block processed, averaged over every frame of every video; "
                          "dashed: the method's PKR target."))
    keep_ratio_plot({r.label: r.ratios for r in runs}, {r.label: r.target for r in runs}, out / "keep_ratio.png",
                    f"mean over the {sum(c.num_frames for c in source.clips)} frames of the demo")
    small = display_size(H, W, 150)
    columns = [vstack(overlay_row(t, small)) for t in picks]
    save_png(hstack(columns), out / "overlay_strip.png")
    figures.append(Figure("overlay_strip.png", "Frames side by side (still)",
                          f"Frames {', '.join(str(t + 1) for t in picks)}; rows as in the animation."))
    if pruned:
        run = pruned[-1][0]
        save_png(hstack([vstack(stage_row(run, t, small, False)) for t in picks]), out / "kept_strip.png")
        figures.append(Figure("kept_strip.png", f"Kept patches of {run.label} (still)",
                              "Columns: the frames above; rows: pruning stages, deeper down."))
    return figures


def page_notes(refs: list[Any], source: DemoSource, threads: int, timing_frames: int, seconds: float) -> list[str]:
    from patchprune.checkpoints_export import machine_description

    notes = [f"Input: {source.description}.",
             f"Machine: {machine_description()}; {threads} torch thread(s); the whole demo took {seconds:.0f} s."]
    for ref in refs:
        tr = ref.info.get("training", {})
        notes.append(f"{ref.name}: shipped reference checkpoint (fp16, SHA-256 checked), config "
                     f"{ref.model.config.name}, {tr.get('steps_done', '?')} training steps, {tr.get('cpu_minutes', '?')} "
                     f"CPU minutes; card docs/models/{ref.name}.md.")
    notes += ["AP: YouTube-VIS AP (spatio-temporal mask IoU, 10 thresholds) of the tracks against the generated "
              "ground truth, on these few videos only (noisy; the cards give AP on the 30-video valid split).",
              "PKR: patch keep ratio, the mean over blocks of the share of patches each block processed.",
              "GMACs: multiply-accumulates per frame at batch 1 on the second frame of the first video (the "
              "first fills the pruning cache): backbone, and the whole model (pyramid, pixel decoder, decoder).",
              f"FPS: batch-1 streaming through the first video, {timing_frames} frames after 3 warm-up frames, best "
              "of 2 rounds interleaved across models, in this process; speed-up = FPS / the dense model's FPS."]
    return notes


def run_demo(out: str | Path = "patchprune_demo", video: str | Path | None = None, frames: int = 24, videos: int = 6,
             seed: int = 1, threads: int | None = None, threshold: float = 0.3, timing_frames: int = 20,
             models: tuple[str, ...] | None = None, weights: str | Path | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Run the demo (module docstring); returns {"rows", "page", "threads", "seconds"}. weights: a
    folder with a reference manifest (default: the package's)."""
    import torch

    from patchprune.validate import check_int, check_number, check_output_folder, check_threads

    out = check_output_folder("--out", out)
    check_int("--frames", frames, 2)
    check_int("--videos", videos, 1)
    check_int("--timing-frames", timing_frames, 1)
    check_number("--threshold", threshold, 0.0, 1.0)
    check_threads("--threads", threads)
    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        return _demo(out, video, frames, videos, seed, threshold, timing_frames, models, weights, progress)
    finally:
        torch.set_num_threads(before)


def _demo(out: Path, video: str | Path | None, frames: int, videos: int, seed: int, threshold: float,
          timing_frames: int, models: tuple[str, ...] | None, weights: str | Path | None,
          progress: bool) -> dict[str, Any]:
    import torch

    from patchprune.checkpoints import load_reference, reference_info, reference_names
    from patchprune.data.io import write_json
    from patchprune.vis.data import square_size

    if video is not None and not Path(video).exists():
        raise FileNotFoundError(f"--video {video} not found: pass a video file (mp4 / avi / mkv) or a folder of frames")
    t0 = time.perf_counter()
    available = reference_names(weights)
    names = list(models) if models else [n for n in DEMO_MODELS if n in available] or available
    info = reference_info(names[0], weights)
    side = square_size(info["vis_config"]["img_size"])
    out.mkdir(parents=True, exist_ok=True)
    if video is not None:  # read the user's frames first: a bad file fails before any model is built
        source = video_source(video, frames, side)
    else:
        source = generated_source(info, out, videos, frames, seed, side, info["vis_config"]["categories"])
    refs = [load_reference(n, weights) for n in names]
    runs = run_models(refs, source, timing_frames, progress, seed)
    figures = write_pictures(out, source, runs, refs, threshold)
    n_threads = torch.get_num_threads()
    seconds = time.perf_counter() - t0
    rows = [r.row for r in runs]
    intro = ["A video instance segmentation model (ViT backbone, feature pyramid, Mask2Former head, MinVIS "
             "tracker) run dense and with Video Patch Pruning (VPP), which skips background patches from the "
             "second block on by mapping the previous frame's deep features onto the current frame.",
             f"Input: {source.description}. Models: the reference checkpoints shipped with patchprune "
             f"({', '.join(names)}), trained here from scratch on generated videos."]
    note = (f"FPS at batch 1 streaming, {n_threads} torch thread(s); AP in %"
            + ("" if source.gt is not None else " (no ground truth for a user's video: AP not measured)") + ".")
    page = render_page("patchprune demo: video instance segmentation, dense vs. pruned", intro, html_table(rows), note,
                       figures, page_notes(refs, source, n_threads, timing_frames, seconds))
    index = write_page(out / "index.html", page)
    write_json(out / "demo.json", {"rows": rows, "models": names, "threads": n_threads, "seconds": seconds,
                                   "input": source.description,
                                   "keep_ratio_per_block": {r.name: r.ratios for r in runs}}, indent=2)
    return {"rows": rows, "page": str(index), "threads": n_threads, "seconds": seconds}


def _run(args) -> int:
    result = run_demo(out=args.out, video=args.video, frames=args.frames, videos=args.videos, seed=args.seed,
                      threads=args.threads, threshold=args.threshold, timing_frames=args.timing_frames,
                      progress=not args.no_progress)
    print(text_table(result["rows"]))
    print(f"FPS at batch 1 streaming, {result['threads']} torch thread(s); AP in %; {result['seconds']:.0f} s in all")
    print(f"page: {result['page']}")
    return 0
