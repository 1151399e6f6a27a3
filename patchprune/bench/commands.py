"""Command-line registration of `patchprune demo`, `bench speed`, `bench select` and `bench soak`.

Registration only (argparse, no torch): each handler is named as "module:function" through
`patchprune.cli.handler` and imported when its command runs, so `patchprune --help` stays fast.
"""
from __future__ import annotations

import os

from patchprune.cli import CommandGroups, handler


def _add_demo(groups: CommandGroups) -> None:
    p = groups.root.add_parser("demo", help="segment a short video with the shipped dense and VPP checkpoints; "
                                            "writes patchprune_demo/index.html")
    p.add_argument("--out", default="patchprune_demo", help="output folder (index.html and its pictures)")
    p.add_argument("--video", default=None,
                   help="your video (mp4 / avi / mkv / mov / webm) or a folder of frames, instead of generated "
                        "videos (no AP then)")
    p.add_argument("--frames", type=int, default=24, help="frames per generated video; with --video, the first N frames")
    p.add_argument("--videos", type=int, default=6, help="generated videos (AP is measured on all of them)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated videos")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--threshold", type=float, default=0.3, help="score a track needs to be drawn (default 0.3)")
    p.add_argument("--timing-frames", type=int, default=20, help="frames timed per model for FPS")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=handler("patchprune.demo:_run"))


def _add_speed(groups: CommandGroups) -> None:
    p = groups.bench.add_parser("speed", help="dense vs pruned latency of a timm ViT, with the FLOP ratio")
    p.add_argument("--model", default="vit_small_patch16_224", help="timm model name (random weights)")
    p.add_argument("--img-size", type=int, default=512)
    p.add_argument("--keep", default="1:0.6,3:0.8,6:0.8,9:0.8",
                   help="POSITION:RATIO list; each ratio keeps that fraction of the live tokens")
    p.add_argument("--policy", default="random",
                   help="registered policy for every position (random, random-bernoulli, topk-norm, evtp, ...)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--methods", default=None,
                   help="'all' or a comma list of in-ViT methods (training-free policies at --keep, learned methods "
                        "untrained at their default target, tome-block r = 40 per block): one table, dense timed "
                        "once per batch and interleaved with every method")
    p.add_argument("--batches", default="1,8", help="with --methods: comma-separated batch sizes (default 1,8)")
    p.add_argument("--dtype", default="fp32", help="with --methods: comma list of fp32, fp16, bf16 (default fp32)")
    p.add_argument("--cpu-time", action="store_true",
                   help="with --methods: time CPU time of one thread (needs --threads 1): a development estimate "
                        "on a busy machine, not a latency")
    p.add_argument("--allocator", choices=("steady", "system"), default="steady",
                   help="host allocator while timing: steady (default: glibc keeps freed memory, so no call pays "
                        "page faults for the previous one's) or system (as the process has it)")
    p.add_argument("--ragged", default="auto",
                   help="how samples keeping different counts run: auto (split on a CPU, pad elsewhere), split "
                        "(no padding run), pack (padding only in one attention call), pad (padded, key-masked), or "
                        "a comma list timed side by side, e.g. split,pack,pad")
    p.add_argument("--spread", type=float, default=0.0,
                   help="with --policy random-bernoulli: spread the samples' keep probability linearly by +-SPREAD "
                        "over the batch (samples keep very different counts, as frames with more or less foreground)")
    p.add_argument("--quick", action="store_true", help="with --methods: 3 repeats instead of 5 (about 10 minutes for --methods all --batches 1,8 on 2 cores)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 3; 1 with --methods)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 15; 5 with --methods)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("PATCHPRUNE_THREADS", 0)) or None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=handler("patchprune.bench.speed:_run"))


def _add_select(groups: CommandGroups) -> None:
    p = groups.bench.add_parser("select", help="speed and coverage radius of the training-free selectors")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--side", type=int, default=27, help="grid side (N = side^2)")
    p.add_argument("--dim", type=int, default=1152)
    p.add_argument("--ratios", default=None, help="comma-separated keep ratios (default 0.05,0.1,0.2)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all registered)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--texture", default="0.03,0.5", help="LOW,HIGH range of the per-region texture level")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (default: the issue's figures), cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=handler("patchprune.bench.select:_run"))


def _add_soak(groups: CommandGroups) -> None:
    p = groups.bench.add_parser("soak", help="stream a long generated video through VPP and print the memory (RSS)")
    p.add_argument("--frames", type=int, default=10000, help="frames to stream (default 10000)")
    p.add_argument("--every", type=int, default=500, help="print RSS every this many frames (default 500)")
    p.add_argument("--switch", type=int, default=250, help="frames between resolution changes (96 <-> 128 px)")
    p.add_argument("--mode", choices=("grad", "eval"), default="grad",
                   help="grad (default): training mode with autograd, outside a training chain (the case that "
                        "used to leak); eval: inference")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=handler("patchprune.bench.soak:_run"))


def register(groups: CommandGroups) -> None:
    """Add the demo and the speed / selection / soak benchmarks."""
    _add_demo(groups)
    _add_speed(groups)
    _add_select(groups)
    _add_soak(groups)
