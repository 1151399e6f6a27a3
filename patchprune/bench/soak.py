"""`patchprune bench soak`: stream a long generated video through VPP and watch the process memory.

A vit_tiny-like backbone (C = 192, 12 blocks, patch 16, random weights) under VPP (Map-SM + SMs)
streams `frames` frames of a generated video: a 96 px clip with scene cuts (each cut gives the shot a
new video id, so the stream resets that sample) alternating with a 128 px clip (a resolution change:
the stream drops the old prior) every `switch` frames; both clips loop. The resident set size (RSS)
is printed every `every` frames; the summary states the growth from frame `every` to the end.

mode "grad" (default): the pruner in training mode with autograd on, outside any training chain --
the case where every cached x_1 / x_6 used to hold the previous frame's graph (~4 MB per frame).
mode "eval": inference (eval runner, gather execution, no autograd).
"""
from __future__ import annotations

import argparse
import os
import resource
import time
from typing import Any, Callable

import timm
import torch

from patchprune.data.synth import generate_video
from patchprune.learned import build
from patchprune.video import VideoStream

MODES = ("grad", "eval")
SIZES = (96, 128)  # the two resolutions the stream alternates between


def rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux /proc; else the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiny_vpp(seed: int = 0, train: bool = True):
    """VPP at the 55 % target on a vit_tiny-like random-weight backbone taking any multiple of 16 px."""
    torch.manual_seed(seed)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=SIZES[0],
                            class_token=False, global_pool="", dynamic_img_size=True)
    return build("vpp", vit.train(train), 0.55)


def soak_clips(seed: int = 0, frames: int = 24) -> list[tuple[torch.Tensor, list[int]]]:
    """The two looping clips as (normalised frames [T, 3, H, W], shot id of every frame)."""
    clips = []
    for i, size in enumerate(SIZES):
        video = generate_video(seed + i, frames=frames, size=size, cut_prob=0.15)
        x = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        shot = [sum(1 for c in video.cuts if c <= t) + 100 * i for t in range(frames)]
        clips.append((x, shot))
    return clips


def graph_kept(stream: VideoStream) -> bool:
    """True when a cached tensor of the stream still references an autograd graph."""
    return any(t.grad_fn is not None for c in stream.caches.values() for t in (c.keys, c.values))


def run_soak(frames: int = 10000, every: int = 500, switch: int = 250, mode: str = "grad", seed: int = 0,
             log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Stream `frames` frames; returns the RSS rows, the growth from frame `every` to the end, the
    number of stream resets (cuts and resolution changes) and whether any cache kept a graph."""
    if frames < 1 or every < 1 or switch < 1:
        raise ValueError(f"--frames, --every and --switch must be >= 1, got {frames}, {every}, {switch}")
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {list(MODES)}, got {mode!r}")
    pruner = tiny_vpp(seed, train=mode == "grad")
    clips = soak_clips(seed)
    stream = VideoStream()
    rows: list[tuple[int, float]] = []
    kept_graph = False
    start = time.perf_counter()
    with torch.enable_grad() if mode == "grad" else torch.no_grad():
        for t in range(frames):
            x, shot = clips[(t // switch) % len(clips)]
            i = t % x.shape[0]
            stream.start_frame([shot[i]])
            out = pruner(x[i : i + 1], stream=stream)
            del out
            if (t + 1) % every == 0 or t + 1 == frames:
                kept_graph |= graph_kept(stream)
                rows.append((t + 1, rss_mb()))
                if log is not None:
                    log(f"frame {t + 1:>6}  RSS {rows[-1][1]:8.1f} MiB")
    base = rows[0][1]
    growth = 100.0 * (rows[-1][1] - base) / base
    return {"frames": frames, "mode": mode, "rss_mb": rows, "growth_pct": growth, "from_frame": rows[0][0],
            "resets": stream.resets, "graph_kept": kept_graph, "threads": torch.get_num_threads(),
            "seconds": time.perf_counter() - start}


def _run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    res = run_soak(frames=args.frames, every=args.every, switch=args.switch, mode=args.mode, seed=args.seed)
    print(f"RSS growth from frame {res['from_frame']} to {res['frames']}: {res['growth_pct']:+.2f} % "
          f"({res['rss_mb'][0][1]:.1f} -> {res['rss_mb'][-1][1]:.1f} MiB); mode {res['mode']}, "
          f"{res['resets']} stream resets (cuts, resolution changes), graph kept: {res['graph_kept']}, "
          f"{res['threads']} threads, {res['seconds']:.0f} s")
    return 0
