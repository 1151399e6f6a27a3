"""Learning curves of several recipes, mean +- std over seeds, from the runs' `curve.json` caches.

`learning_curve.py` evaluates every snapshot of one run and caches the figures in RUN/curve.json;
this script only reads those caches and draws one line per recipe (mean over its seeds, a band of
one std) against training steps, dense gIoU solid and instruction-swapped gIoU dotted:

    python benchmarks/ivs/seed_curves.py --group "mask-init=runs/ivs_maskinit,runs/ivs_maskinit_s1" \
        --group "from scratch=runs/ivs_map10,runs/ivs_map10_s1" --out docs/img/ivs_seed_curves.png

It also prints the table (step, then per recipe gIoU mean +- std and the swapped gIoU).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def parse_group(text: str) -> tuple[str, list[Path]]:
    """`NAME=RUN,RUN,...` -> (name, run folders); a clear error for a malformed item."""
    name, sep, runs = text.partition("=")
    if not sep or not name.strip() or not runs.strip():
        raise argparse.ArgumentTypeError(f"--group expects NAME=RUN[,RUN...], got {text!r}")
    return name.strip(), [Path(r.strip()) for r in runs.split(",") if r.strip()]


def read_curve(run: Path) -> dict[int, dict]:
    """{step: cached figures} of one run; an error naming the run when its cache is missing."""
    path = run / "curve.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run benchmarks/ivs/learning_curve.py --run {run} first")
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


def seed_stats(curves: list[dict[int, dict]], key: str) -> dict[int, tuple[float, float, int]]:
    """Per step present in every run: (mean, std, number of runs) of `key`."""
    steps = set.intersection(*(set(c) for c in curves))
    out = {}
    for step in sorted(steps):
        values = [c[step][key] for c in curves]
        out[step] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", type=parse_group, action="append", required=True, help="NAME=RUN,RUN,... (repeatable)")
    ap.add_argument("--out", type=Path, default=None, help="PNG plot")
    ap.add_argument("--title", default="ivs tiny, dense: gIoU on the first 160 val expressions")
    args = ap.parse_args()
    groups = {name: [read_curve(r) for r in runs] for name, runs in args.group}
    stats = {name: (seed_stats(c, "giou"), seed_stats(c, "giou_swap")) for name, c in groups.items()}
    for name, (dense, swap) in stats.items():
        print(f"## {name} ({len(groups[name])} seeds)")
        for step, (m, s, _) in dense.items():
            print(f"step {step:5d}  gIoU {m:.3f} +- {s:.3f}  swapped {swap[step][0]:.3f} +- {swap[step][1]:.3f}")
    if args.out is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from patchprune.bench.figures import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, (dense, swap)) in enumerate(stats.items()):
        colour = f"C{i}"
        steps = list(dense)
        mean = [dense[s][0] for s in steps]
        std = [dense[s][1] for s in steps]
        ax.plot(steps, mean, "o-", color=colour, label=f"{name} ({len(groups[name])} seeds)")
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=colour, alpha=0.2)
        ax.plot(steps, [swap[s][0] for s in steps], ":", color=colour, label=f"{name}, instruction swapped")
    ax.axhline(0.6, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training step (batch as in the run's train.json)")
    ax.set_ylabel("gIoU (mean +- std over seeds)")
    ax.set_ylim(0, 0.8)
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title(args.title, fontsize=9)
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
