"""`patchprune train ivs` and `patchprune eval ivs` (torch imported lazily, in the handlers)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from patchprune.ivs.config import MAP_WEIGHT, QUERY_WEIGHT
from patchprune.validate import DEVICE_HELP


def _run_train(args: argparse.Namespace) -> int:
    from patchprune.ivs.data import available_kinds
    from patchprune.ivs.train import TrainSettings, run_training
    from patchprune.train.distributed import init_distributed, run_device

    available_kinds(args.data)  # a missing folder or an unknown layout fails before any work
    device = run_device(args.device)  # one-line ValueError for a device this machine lacks
    s = TrainSettings(data=str(args.data), out=str(args.out), config=args.config, steps=args.steps, batch=args.batch,
                      lr=args.lr, warmup=args.warmup, clip=args.clip, seed=args.seed,
                      checkpoint_every=args.checkpoint_every, snapshot_every=args.snapshot_every, threads=args.threads,
                      video_share=args.video_share, map_weight=args.map_weight, group=args.group, limit=args.limit,
                      mask_init=args.mask_init, instance_weight=args.instance_weight, query_weight=args.query_weight,
                      progress=not args.no_progress, overrides=dict(args.set) or None, device=args.device)
    if not args.resume and (Path(args.out) / "checkpoint.safetensors").is_file():
        raise ValueError(f"{args.out} already holds a checkpoint; pass --resume to continue it or pick a new --out")
    dist_info = init_distributed(device=device)  # NCCL on CUDA, gloo on the CPU
    summary = run_training(s, dist_info)
    if dist_info.is_main:
        print(json.dumps(summary))
    return 0


def _config_field(text: str) -> tuple[str, Any]:
    """`--set FIELD=VALUE` -> (field, value); VALUE is read as JSON (8, 0.5, true, null), else a string."""
    from patchprune.ivs.config import IVSConfig
    from patchprune.validate import check_known_fields

    field, sep, raw = text.partition("=")
    field = field.strip()
    if not sep or not field:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE (e.g. vision_patch=4), got {text!r}")
    try:
        check_known_fields("IVS config field", IVSConfig, {field: None})
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return field, value


def _run_eval(args: argparse.Namespace) -> int:
    from patchprune.ivs.evaluate import evaluate, write_per_sample

    if not Path(args.run).is_dir():
        raise FileNotFoundError(f"--run {args.run}: run folder not found (train one with `patchprune train ivs`)")
    m = evaluate(args.run, args.data, method=args.method, ratio=args.ratio, split=args.split, kind=args.kind,
                 limit=args.limit, swap_instruction=args.swap_instruction, threads=args.threads,
                 progress=not args.no_progress, seed=args.seed, timing=args.timing, checkpoint=args.checkpoint,
                 per_sample=args.per_sample is not None, device=args.device)
    if args.per_sample is not None:
        write_per_sample(args.per_sample, m, args.run, args.data, args.seed)
        del m["per_sample"]
    if args.json:
        print(json.dumps(m))
    else:
        acc = ("giou", "ciou") if m["kind"] == "image" else ("j", "f", "jf")
        print("  ".join(f"{k} {m[k]:.4f}" for k in acc) +
              f"  kept {m['kept_tokens_per_frame']}/{m['tokens_per_frame']}  coverage {m['coverage_radius']:.3f}"
              f"  GMACs {m['gmacs']['total']:.3f}  latency {m['latency_ms']['total']:.1f} ms  samples {m['samples']}")
    return 0


def _ratio(text: str) -> float:
    try:
        r = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratio must be a number in (0, 1], got {text!r}") from None
    if not 0.0 < r <= 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in (0, 1] (share of visual tokens kept), got {text}")
    return r


def _run_refer(args: argparse.Namespace) -> int:
    from patchprune.ivs.refer import refer_segment

    summary = refer_segment(args.input, args.run, args.text, args.out, method=args.method, ratio=args.ratio,
                            max_frames=args.max_frames, batch=args.batch, fps=args.fps, threads=args.threads,
                            progress=not args.no_progress, seed=args.seed, device=args.device)
    print(json.dumps(summary))
    return 0


def register(groups) -> None:
    """Add `train ivs`, `eval ivs` and the top-level `refer`."""
    p = groups.train.add_parser("ivs", help="train the instructed-segmentation MLLM (dense) on referring data")
    p.add_argument("--data", required=True, type=Path,
                   help="`data synth-refer` output, a RefCOCO-style or a Ref-YouTube-VOS folder")
    p.add_argument("--out", required=True, type=Path, help="run folder (config.json, tokenizer.json, checkpoint)")
    p.add_argument("--config", default="tiny", choices=("tiny", "micro"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--clip", type=float, default=1.0, help="max gradient L2 norm (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--snapshot-every", type=int, default=0, help="keep weights every N steps (learning curves)")
    p.add_argument("--video-share", type=float, default=0.25, help="share of video batches when both kinds exist")
    p.add_argument("--map-weight", type=float, default=MAP_WEIGHT,
                   help="weight of the referring-map loss (configs with a referring map, e.g. tiny; docs/ivs.md)")
    p.add_argument("--query-weight", type=float, default=QUERY_WEIGHT,
                   help="weight of the target choice's query BCE (default 2, InstructSeg's; docs/ivs.md)")
    p.add_argument("--group", type=int, default=1,
                   help="expressions per image / video in a batch (must divide --batch): the same scene with "
                        "different instructions, so only the text tells the targets apart (docs/ivs.md)")
    p.add_argument("--mask-init", default=None, metavar="VIS_RUN",
                   help="start the mask branch from a dense `train vis` run (its backbone, pyramid, pixel decoder "
                        "and decoder; docs/ivs.md): an instance-segmentation start, as InstructSeg's")
    p.add_argument("--instance-weight", type=float, default=0.0,
                   help="weight of an auxiliary instance loss on image batches: the <seg> queries also learn every "
                        "annotated object of the image with its category (the VIS set loss), so the choice "
                        "learns on object proposals (0: off; docs/ivs.md)")
    p.add_argument("--set", type=_config_field, action="append", default=[], metavar="FIELD=VALUE",
                   help="change one field of --config (repeatable), e.g. vision_patch=4: the tower's tokens per "
                        "frame (docs/ivs.md); a resumed run needs the same --set")
    p.add_argument("--limit", type=int, default=None, help="use at most this many expressions per kind")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_train)

    p = groups.eval.add_parser("ivs", help="evaluate an IVS run: gIoU / cIoU or J&F, GMACs, latency, coverage")
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--method", default="dense", help="dense or a selection method (evtp, kcenter, divprune, random, "
                                                     "tome, visionzip, vispruner, attention)")
    p.add_argument("--ratio", type=_ratio, default=1.0, help="share of visual tokens kept per frame, in (0, 1]")
    p.add_argument("--kind", default=None, choices=("image", "video"), help="default: images when the data has them")
    p.add_argument("--split", default=None, help="default: val (images) / valid (videos)")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most this many expressions")
    p.add_argument("--swap-instruction", action="store_true",
                   help="control: replace each instruction by another object's expression from the same image / video")
    p.add_argument("--checkpoint", default=None, type=Path, help="a snapshot of the run instead of its last checkpoint")
    p.add_argument("--timing", type=int, default=8, help="samples timed for latency (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print all metrics as one JSON line")
    p.add_argument("--per-sample", type=Path, default=None, metavar="FILE",
                   help="also write each expression's IoU (images) or J&F (videos) to this JSON file, in data order "
                        "(paired comparisons: benchmarks/ivs/paired.py)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_eval)

    p = groups.root.add_parser("refer", help="segment what an instruction refers to in an image or video with a "
                                             "trained IVS run (optionally pruning the visual tokens)")
    p.add_argument("input", type=Path, help="image (jpg / png), video file (mp4 / avi / mkv) or folder of frames")
    p.add_argument("--run", required=True, type=Path, help="a `train ivs` run folder")
    p.add_argument("--text", required=True, help="the instruction, in the words of the run's training data")
    p.add_argument("--out", required=True, type=Path, help="folder for overlay, masks/, kept/, result.json")
    p.add_argument("--method", default="dense", help="dense or a selection method (evtp, kcenter, divprune, ...)")
    p.add_argument("--ratio", type=_ratio, default=1.0, help="share of visual tokens kept per frame, in (0, 1]")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--batch", type=int, default=8, help="key frames per forward")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of the overlay video")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_refer)
