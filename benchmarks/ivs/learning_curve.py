"""Learning curve of a `train ivs` run: evaluate every snapshot (RUN/snapshots/step_*.safetensors) on
the image val split (dense gIoU / cIoU, and gIoU with the instruction swapped) and plot them against
training CPU minutes; the last snapshot is also evaluated on the video valid split (J, F, J&F).

    python benchmarks/ivs/learning_curve.py --run runs/ivs_tiny --data runs/ivs_data \
        --out docs/img/ivs_learning_curve.png [--limit 200] [--threads 1] [--every 1]

Minutes are the CPU minutes of the 1-thread training process (= wall minutes on an idle core; the
machine was shared while it trained). Results are cached in RUN/curve.json (rerun while training goes on).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from patchprune.train.run_folder import SNAPSHOTS


def main() -> None:
    from patchprune.ivs.evaluate import evaluate
    from patchprune.ivs.run import checkpoint_meta

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None, help="PNG plot")
    ap.add_argument("--limit", type=int, default=None, help="image val expressions per snapshot (default all)")
    ap.add_argument("--video-limit", type=int, default=None, help="video valid expressions for the last snapshot")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--every", type=int, default=1, help="evaluate every n-th snapshot (the last one always)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache_path = args.run / "curve.json"
    cache = {int(k): v for k, v in json.loads(cache_path.read_text()).items()} if cache_path.is_file() else {}
    snaps = sorted((args.run / SNAPSHOTS).glob("step_*.safetensors"))
    picked = snaps[:: args.every] + ([snaps[-1]] if snaps and snaps[-1] not in snaps[:: args.every] else [])
    common = dict(limit=args.limit, progress=False, timing=0, kind="image")
    for snap in picked:
        step = int(snap.stem.split("_")[1])
        if step not in cache or cache[step].get("limit") != args.limit:
            meta = checkpoint_meta(snap)
            dense = evaluate(args.run, args.data, checkpoint=snap, **common)
            swap = evaluate(args.run, args.data, checkpoint=snap, swap_instruction=True, **common)
            cache[step] = {"step": step, "cpu_minutes": meta.get("cpu_minutes"), "minutes": meta.get("minutes"),
                           "giou": dense["giou"], "ciou": dense["ciou"], "giou_swap": swap["giou"],
                           "samples": dense["samples"], "limit": args.limit}
            cache_path.write_text(json.dumps(cache, indent=1))
        r = cache[step]
        print(f"step {step:5d}  cpu-min {r['cpu_minutes']:.1f}  wall-min {r['minutes']:.1f}  gIoU {r['giou']:.3f}  "
              f"cIoU {r['ciou']:.3f}  gIoU swapped {r['giou_swap']:.3f}  ({r['samples']} expressions)", flush=True)
    if snaps:
        last = snaps[-1]
        v = evaluate(args.run, args.data, checkpoint=last, kind="video", limit=args.video_limit, progress=False,
                     timing=0)
        vs = evaluate(args.run, args.data, checkpoint=last, kind="video", limit=args.video_limit, progress=False,
                      timing=0, swap_instruction=True)
        video = {"step": int(last.stem.split("_")[1]), "j": v["j"], "f": v["f"], "jf": v["jf"], "jf_swap": vs["jf"],
                 "samples": v["samples"]}
        (args.run / "curve_video.json").write_text(json.dumps(video, indent=1))
        print(f"video, step {video['step']}: J {v['j']:.3f}  F {v['f']:.3f}  J&F {v['jf']:.3f}  "
              f"J&F swapped {vs['jf']:.3f}  ({v['samples']} expressions)")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = sorted(cache.values(), key=lambda r: r["step"])
        x = [r["cpu_minutes"] for r in rows]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(x, [r["giou"] for r in rows], "o-", label="gIoU")
        ax.plot(x, [r["ciou"] for r in rows], "s--", label="cIoU")
        ax.plot(x, [r["giou_swap"] for r in rows], "^:", label="gIoU, instruction swapped")
        ax.axhline(0.6, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("training minutes (CPU minutes, 1 thread)")
        ax.set_ylabel("generated image val set")
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(f"ivs tiny, dense ({args.run.name})", fontsize=9)
        from patchprune.bench.figures import save_figure

        save_figure(fig, args.out)


if __name__ == "__main__":
    main()
