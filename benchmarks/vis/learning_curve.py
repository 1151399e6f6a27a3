"""Learning curve of a `train vis` run: evaluate every snapshot (RUN/snapshots/step_*.safetensors)
on the valid split and plot YouTube-VIS AP against training minutes.

    python benchmarks/vis/learning_curve.py --run runs/vis_q30 --data runs/vis_quick \
        --out docs/img/vis_learning_curve.png [--threads 1] [--every 1] [--compare OTHER_RUN]

Minutes are the CPU minutes of the 1-thread training process (equal to wall minutes on an idle
core; the machine was shared while the curve in docs/vis.md was trained) and its wall minutes.
Evaluated snapshots are cached in RUN/curve.json, so the script can be rerun while training goes on.
`--compare` draws the AP of other runs' cached curves (their curve.json) in grey for reference (up to four,
one line style each).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from patchprune.train.run_folder import SNAPSHOTS


def evaluate_snapshot(run: Path, snap: Path, data) -> dict:
    from patchprune.train.checkpoint import load_checkpoint
    from patchprune.vis.config import VISConfig
    from patchprune.vis.evaluate import evaluate
    from patchprune.vis.model import VISModel
    from patchprune.vis.run import checkpoint_meta

    model = VISModel(VISConfig.load(run))
    load_checkpoint(snap, {"model": model})
    meta = checkpoint_meta(snap)
    m = evaluate(model, None, data, timing_frames=0)
    return {"step": int(snap.stem.split("_")[1]), "cpu_minutes": meta.get("cpu_minutes"), "minutes": meta.get("minutes"),
            **{k: m[k] for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AP_bbox", "AP_segm")}}


def main() -> None:
    from patchprune.vis.config import VISConfig
    from patchprune.vis.data import load_split, square_size

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None, help="PNG plot")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--every", type=int, default=1, help="evaluate every n-th snapshot (the last one always)")
    ap.add_argument("--compare", type=Path, action="append", default=[], help="another run with a curve.json (drawn in grey)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = VISConfig.load(args.run)
    data = load_split(args.data, "valid", square_size(cfg.img_size), cfg.categories)
    cache_path = args.run / "curve.json"
    cache = {r["step"]: r for r in json.loads(cache_path.read_text())} if cache_path.is_file() else {}
    snaps = sorted((args.run / SNAPSHOTS).glob("step_*.safetensors"))
    picked = snaps[:: args.every] + ([snaps[-1]] if snaps and snaps[-1] not in snaps[:: args.every] else [])
    for snap in picked:
        step = int(snap.stem.split("_")[1])
        if step not in cache:
            cache[step] = evaluate_snapshot(args.run, snap, data)
            cache_path.write_text(json.dumps(sorted(cache.values(), key=lambda r: r["step"]), indent=1))
        r = cache[step]
        print(f"step {step:6d}  cpu-min {r['cpu_minutes']:.1f}  wall-min {r['minutes']:.1f}  "
              f"AP {100 * r['AP']:.1f}  AP50 {100 * r['AP50']:.1f}  AP75 {100 * r['AP75']:.1f}  AR10 {100 * r['AR10']:.1f}")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = sorted(cache.values(), key=lambda r: r["step"])
        x = [r["cpu_minutes"] for r in rows]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for key, style in (("AP", "o-"), ("AP50", "s--"), ("AP75", "^:")):
            ax.plot(x, [100 * r[key] for r in rows], style, label=key)
        for other, style in zip(args.compare, (".-", "x--", "+:", "d-.")):  # grey, one line style each
            prev = sorted(json.loads((other / "curve.json").read_text()), key=lambda r: r["step"])
            ax.plot([r["cpu_minutes"] for r in prev], [100 * r["AP"] for r in prev], style, color="0.55",
                    label=f"AP, {other.name}")
        ax.axhline(25, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("training minutes (CPU minutes, 1 thread)")
        ax.set_ylabel("YouTube-VIS (%)")
        ax.set_title(f"dense VIS model, config {cfg.name}: {args.run.name}")
        ax.legend()
        ax.grid(alpha=0.3)
        from patchprune.bench.figures import save_figure

        save_figure(fig, args.out)


if __name__ == "__main__":
    main()
