"""`patchprune bench fgseg`: train + fine-tune + evaluate learned pruning on synthetic videos.

A small 12-block ViT with a per-pixel foreground / category head is trained densely, every pruning
method is fine-tuned from it at the 55 % and 40 % PKR targets with the three-frame chain, and held-out
videos are streamed frame by frame: mIoU, PKR, IoI (S / M / L), MACs, speed-up, FGS per layer.
Writes results.json, README.md and PNG plots to --out (see patchprune/fgseg/study.py).

Every option is checked (`config_from_args`; `--device`, which needs torch, first thing in `run`) before
any data is generated or any model trained, so a bad value costs one line and exit 2, not a dense
stage. Heavy modules are imported inside `run`.

--quick: one seed, sized for <= 30 minutes on a 2-core CPU. Default (full): 3 seeds, longer
training, more videos; mean and std over seeds (hours on a 2-core CPU, minutes on a GPU).

--device cuda: training, fine-tuning, evaluation and timing run on the GPU (data and seeded draws stay
on the CPU). The device is not part of the work folder's hash: checkpoints trained on one device are
reused on another (see patchprune/fgseg/study.py).
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import replace
from pathlib import Path

from patchprune.fgseg.config import (APPEARANCE_DIFFICULTY, CUE_DIFFICULTY, METHODS, TARGETS, FgSegBenchConfig,
                                     training_fingerprint)
from patchprune.validate import DEVICE_HELP

# Methods whose default knobs exist only for the study's targets (VPP's kappa / rho, DynamicViT / TPS's rho).
TABLED_METHODS = ("vpp", "dynamicvit", "tps")


def _at_least(value: int | None, low: int, option: str) -> None:
    if value is not None and value < low:
        raise ValueError(f"{option} must be >= {low}, got {value}")


def _folder(path: str, option: str) -> None:
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{option} {path} is an existing file; pass a folder")


def config_from_args(args: argparse.Namespace) -> FgSegBenchConfig:
    """The run's configuration from the command line; a ValueError naming the option for any bad value."""
    cfg = FgSegBenchConfig.quick() if args.quick else FgSegBenchConfig()
    if args.seeds:
        if min(args.seeds) < 0:
            raise ValueError(f"--seeds must be >= 0, got {args.seeds}")
        cfg = replace(cfg, seeds=tuple(dict.fromkeys(args.seeds)))
    if args.methods:
        unknown = sorted(set(args.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
        cfg = replace(cfg, methods=tuple(dict.fromkeys(args.methods)))
    if args.targets:
        bad = [t for t in args.targets if not (0.0 < t < 1.0)]
        if bad:
            raise ValueError(f"--targets must lie in (0, 1), got {bad}")
        tabled = [m for m in cfg.methods if m in TABLED_METHODS]
        off = [t for t in args.targets if not any(math.isclose(t, s, abs_tol=1e-6) for s in TARGETS)]
        if tabled and off:
            raise ValueError(f"--targets {off}: {tabled} have defaults only for {list(TARGETS)}; "
                             "choose among those (or --methods svit for other targets)")
        cfg = replace(cfg, targets=tuple(dict.fromkeys(args.targets)))
    if args.foreground is not None:
        cfg = replace(cfg, difficulty=dict(APPEARANCE_DIFFICULTY if args.foreground == "appearance" else CUE_DIFFICULTY))
    for name, low in (("dense_steps", 1), ("finetune_steps", 1), ("train_videos", 1), ("valid_videos", 1),
                      ("threads", 0)):
        _at_least(getattr(args, name), low, "--" + name.replace("_", "-"))
    if args.policy_eps is not None and not (0.0 < args.policy_eps < 1.0):
        raise ValueError(f"--policy-eps must lie in (0, 1), got {args.policy_eps}")
    for name in ("dense_steps", "finetune_steps", "train_videos", "valid_videos", "threads", "policy_eps",
                 "vpp_first_frame_loss"):
        if getattr(args, name) is not None:
            cfg = replace(cfg, **{name: getattr(args, name)})
    _folder(args.out, "--out")
    _folder(args.workdir, "--workdir")
    return cfg


def run(args: argparse.Namespace) -> int:
    """Validate, then run every seed, aggregate, write the report and print it (or a JSON summary)."""
    cfg = config_from_args(args)
    import json
    import time

    import torch

    from patchprune.fgseg.study import aggregate, checks, run_seed, write_report
    from patchprune.train.distributed import run_device

    device = run_device(args.device)  # a ValueError naming --device (no CUDA here, bad name) before any work
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    mode = "quick" if args.quick else "full"
    workdir = Path(args.workdir) / f"{mode}-{training_fingerprint(cfg)}"
    out_dir = Path(args.out)
    progress = not args.no_progress
    start = time.perf_counter()
    per_seed = []
    for seed in cfg.seeds:
        per_seed.append(run_seed(cfg, seed, workdir / f"seed{seed}", progress, quiet=args.json, device=device))
    wall = time.perf_counter() - start
    summary = aggregate(per_seed)
    found = checks(summary)
    readme = write_report(out_dir, cfg, summary, per_seed, wall, mode, found, device=device)
    if args.json:
        keep = ("method", "target", "miou", "miou_std", "fg_iou", "pkr", "pkr_std", "ioi", "ioi_std", "ioi_S", "ioi_M",
                "ioi_L", "gmacs", "macs_ratio", "speedup", "speedup_std", "speedup_batch")
        slim = [{k: (round(r[k], 4) if isinstance(r.get(k), float) else r.get(k)) for k in keep if k in r}
                for r in summary["results"]]
        print(json.dumps({"results": slim, "fgs": [round(v, 4) for v in summary["fgs"]],
                          "seeds": list(cfg.seeds), "wall_s": round(wall, 1), "checks": found}))
    else:
        print(readme)
    return 0


def register(groups) -> None:
    """Add `bench fgseg` (the handler imports torch only when the command runs)."""
    p = groups.bench.add_parser("fgseg", help="train + fine-tune + evaluate learned pruning on synthetic videos",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one seed, sized for <= 30 min on a 2-core CPU")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--out", default="benchmarks/fgseg", help="results folder (default: benchmarks/fgseg)")
    p.add_argument("--workdir", default="runs/fgseg",
                   help="checkpoints (resumable; default: runs/fgseg; one sub-folder per mode and configuration hash)")
    p.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    p.add_argument("--methods", nargs="+", help=f"subset of {list(METHODS)}")
    p.add_argument("--targets", type=float, nargs="+", help="PKR targets (default 0.55 0.40)")
    p.add_argument("--foreground", choices=("cue", "appearance"),
                   help="scene rule: cue (default; foreground needs context) or appearance (the original scenes)")
    p.add_argument("--dense-steps", dest="dense_steps", type=int)
    p.add_argument("--finetune-steps", dest="finetune_steps", type=int)
    p.add_argument("--train-videos", dest="train_videos", type=int)
    p.add_argument("--valid-videos", dest="valid_videos", type=int)
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--policy-eps", dest="policy_eps", type=float,
                   help="eps of DynamicViT's policy softmax in fine-tuning (DynamicViT / TPS; default the authors' 1e-6, "
                        "patchprune.vit.POLICY_ATTENTION_EPS; VPP / SViT train under a hard key mask)")
    p.add_argument("--vpp-first-frame-loss", dest="vpp_first_frame_loss", choices=("spec", "none", "live"),
                   help="VPP's sparsity loss on passes without the Map-SM prior (default spec; see docs/learned/vpp.md)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)
