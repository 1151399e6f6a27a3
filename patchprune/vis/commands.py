"""`patchprune train vis`, `patchprune eval vis` and `patchprune segment` (torch imported lazily)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from patchprune.validate import DEVICE_HELP


def _run_train(args: argparse.Namespace) -> int:
    from patchprune.train.distributed import init_distributed, run_device
    from patchprune.vis.run import parse_method_options
    from patchprune.vis.train import TrainSettings, run_training

    dev = run_device(args.device)  # one-line ValueError naming --device (e.g. no CUDA here)
    s = TrainSettings(data=str(args.data), out=str(args.out), config=args.config, method=args.method,
                      target=args.target, init=args.init, steps=args.steps, batch=args.batch, lr=args.lr,
                      warmup=args.warmup, clip=args.clip, seed=args.seed, checkpoint_every=args.checkpoint_every,
                      snapshot_every=args.snapshot_every, threads=args.threads, max_videos=args.max_videos,
                      timm_model=args.timm_model, weights=args.weights, progress=not args.no_progress,
                      tracker=args.tracker, class_weight=args.class_weight,
                      semantic_weight=args.semantic_weight, augment=args.augment, vpp_layout=args.vpp_layout,
                      policy_lr_mult=args.policy_lr_mult, head_lr_mult=args.head_lr_mult,
                      chain_graph=not args.no_chain_graph,
                      method_options=parse_method_options(args.method_option) or None, device=dev)
    dist_info = init_distributed(device=dev)  # NCCL on CUDA, gloo on the CPU
    summary = run_training(s, dist_info)
    if dist_info.is_main:
        print(json.dumps(summary))
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    import torch

    from patchprune.data.io import write_json
    from patchprune.train.distributed import init_distributed, run_device
    from patchprune.vis.evaluate import evaluate_folder
    from patchprune.validate import check_int
    from patchprune.vis.run import parse_method_options

    check_int("--timing-batch", args.timing_batch, 1)  # before the evaluation, not after it
    dev = run_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dist_info = init_distributed(device=dev)  # NCCL on CUDA, gloo on the CPU
    m = evaluate_folder(args.run, args.data, tracker=args.tracker, split=args.split, max_videos=args.max_videos,
                        timing_frames=args.timing_frames, random_init=args.random_init, method=args.method,
                        target=args.target, dist_info=dist_info,
                        method_options=parse_method_options(args.method_option) or None,
                        timing_batch=args.timing_batch, device=dev)
    if not dist_info.is_main:
        return 0
    results = m.pop("results")
    if args.results:
        write_json(args.results, results)
    elif args.run:
        write_json(Path(args.run) / f"results_{args.split}.json", results)
    if args.json:
        print(json.dumps(m))
    else:
        keys = ("AP", "AP50", "AP75", "AR1", "AR10", "AP_bbox", "AP_segm", "pkr")
        print("  ".join(f"{k} {m[k]:.4f}" for k in keys))
        print(f"PKR after each video's first frame {m['pkr_after_first_frame']:.4f}  GMACs {m['gmacs']}  FPS {m.get('fps')}"
              + (f"  FPS at batch {m['fps_batched']['batch']} {m['fps_batched']}" if "fps_batched" in m else ""))
    return 0


def _run_segment(args: argparse.Namespace) -> int:
    from patchprune.train.distributed import run_device
    from patchprune.vis.segment import segment_video

    dev = run_device(args.device)
    summary = segment_video(args.video, args.run, args.out, tracker=args.tracker, threshold=args.threshold,
                            max_frames=args.max_frames, fps=args.fps, progress=not args.no_progress,
                            threads=args.threads, keep_aspect=args.keep_aspect, device=dev)
    print(json.dumps(summary))
    return 0


def register(groups) -> None:
    """Add `train vis`, `eval vis` and the top-level `segment`."""
    train = getattr(groups, "train", None)
    if train is None:
        train = groups.root.add_parser("train", help="train models").add_subparsers(
            dest="train_command", metavar="TRAIN", required=True)
    p = train.add_parser("vis", help="train a video instance segmentation model (stage 1 dense, stage 2 pruned)")
    p.add_argument("--data", required=True, type=Path, help="YouTube-VIS-layout folder (train.json + train/JPEGImages)")
    p.add_argument("--out", required=True, type=Path, help="run folder (config.json, checkpoint.safetensors)")
    p.add_argument("--config", default="tiny", choices=("tiny", "small", "from-timm"))
    p.add_argument("--timm-model", default=None, help="timm model name for --config from-timm")
    p.add_argument("--weights", default=None, help="local safetensors backbone weights for --config from-timm")
    p.add_argument("--method", default="dense", help="dense (stage 1) or a learned method: vpp, svit, dynamicvit, tps")
    p.add_argument("--target", type=float, default=0.55, help="PKR target of the pruning method (0.55 or 0.40)")
    p.add_argument("--init", default=None, help="stage 1: backbone / model checkpoint; stage 2: dense VIS run")
    p.add_argument("--vpp-layout", default=None, metavar="LAYOUT",
                   help="--method vpp: module positions (index i = input of block i, 0 = before the first), "
                        "'map:1;sm:3,6,9' (default), 'sm:0,3,6,9' (no Map-SM), 'map:1' (no SM); the paper's Table 4")
    p.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                   help="stage 2: a keyword of the learned method's builder (repeatable), e.g. "
                        "noise=false for vpp (no Gumbel noise in training or at inference: the short-schedule "
                        "recipe, docs/vis.md) or smooth_kernel=5; saved in train.json and used again by eval vis")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=6e-4, help="peak learning rate (default: the quick recipe)")
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--clip", type=float, default=0.01, help="max gradient L2 norm (0: none)")
    p.add_argument("--policy-lr-mult", type=float, default=1.0,
                   help="stage 2: the pruning modules' lr multiplier (the spec's x1; the model trains at x0.1)")
    p.add_argument("--head-lr-mult", type=float, default=1.0,
                   help="stage 2: the pyramid + decoder head's lr multiplier (the spec's x1; the backbone trains "
                        "at x0.1; runs before 2026-11-30 used 0.1)")
    p.add_argument("--no-chain-graph", action="store_true",
                   help="stage 2: cut the gradient from each frame's loss into the earlier frames' passes "
                        "(through Map-SM's cache); default: the spec's chain keeps it")
    p.add_argument("--class-weight", type=float, default=5.0,
                   help="weight of the classification term of the set loss (Mask2Former's is 2; default 5, docs/vis.md)")
    p.add_argument("--semantic-weight", type=float, default=2.0,
                   help="weight of the per-pixel category loss (configs with a semantic head, e.g. tiny)")
    p.add_argument("--augment", default="crop",
                   help="comma list of label-preserving augmentations: colour, crop, or none (default crop; "
                        "colour only where categories do not depend on colour, docs/vis.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--snapshot-every", type=int, default=0, help="keep weights every N steps (learning curves)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--max-videos", type=int, default=None)
    p.add_argument("--tracker", default="minvis", choices=("minvis", "rovis"),
                   help="rovis: also train the frame-pair track-query losses (stage 1)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_train)

    p = groups.eval.add_parser("vis", help="evaluate a VIS run: YTVIS AP, COCO AP, PKR, IoI, GMACs, FPS")
    p.add_argument("--run", default=None, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--split", default="valid")
    p.add_argument("--tracker", default="minvis", choices=("minvis", "rovis"))
    p.add_argument("--random-init", default=None, choices=("tiny", "small"),
                   help="evaluate a randomly initialised named config instead of a run (speed checks)")
    p.add_argument("--method", default=None,
                   help="pruning method (default: the run's): a learned one, or a training-free policy "
                        "(evtp, tome, random, ...) applied at VPP's positions and rates")
    p.add_argument("--target", type=float, default=None)
    p.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a keyword of the learned method's builder (repeatable): with --random-init e.g. "
                        "init_keep=true so untrained modules keep their target rates; with --run it overrides "
                        "the run's own (train.json), e.g. noise=false: VPP without inference noise")
    p.add_argument("--max-videos", type=int, default=None)
    p.add_argument("--timing-frames", type=int, default=20, help="frames timed for FPS (0: no timing)")
    p.add_argument("--timing-batch", type=int, default=1,
                   help="also time B videos streamed side by side (fps_batched: the saturated throughput)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--results", default=None, type=Path, help="results JSON path (default RUN/results_<split>.json)")
    p.add_argument("--json", action="store_true", help="print all metrics as one JSON line")
    p.set_defaults(func=_run_eval)

    p = groups.root.add_parser("segment", help="segment and track instances in a video with a trained VIS run")
    p.add_argument("video", type=Path, help="mp4 / avi / mkv file or a folder of frames")
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--tracker", default="minvis", choices=("minvis", "rovis"))
    p.add_argument("--threshold", type=float, default=0.5, help="score above which a track is drawn")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of the overlay video")
    p.add_argument("--keep-aspect", action="store_true",
                   help="feed frames at their own aspect (longer side at the model's size, the shorter rounded to "
                        "a multiple of 32) instead of the square the model trained on")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_segment)


if __name__ == "__main__":  # pragma: no cover
    from patchprune.cli import main

    sys.exit(main())
