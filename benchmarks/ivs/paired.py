"""Is EVTP behind a baseline, or is the gap noise? Paired differences over the same expressions.

The bench's table compares means over seeds (std over 3 seeds). This script compares two methods on
the *same* expressions of the same runs: for every seed's run and every val expression, the IoU
(images) or J&F (videos) of EVTP minus that of a baseline at one keep ratio. It reports the mean
paired difference over all (seed, expression) pairs with a bootstrap 95 % interval (expressions
resampled within each seed), how many expressions each method wins, and how many tie (the model's
answer is a choice among mask proposals, so most expressions tie exactly).

    python benchmarks/ivs/paired.py --runs benchmarks/ivs/p4/seed0,benchmarks/ivs/p4/seed1,benchmarks/ivs/p4/seed2 \
        --data runs/ivs_data_cc --kind image --ratios 0.05,0.1,0.2 --out runs/paired [--methods ...] [--json F]

Per-expression scores are cached in --out (one JSON per kind / method / ratio / seed, the files of
`eval ivs --per-sample`), so parts can run side by side and a later call only reports.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BASELINES = ("random", "kcenter", "divprune", "tome", "visionzip", "vispruner")
BOOTSTRAP = 2000


def cell_file(out: Path, kind: str, method: str, ratio: float, seed: int) -> Path:
    return out / f"{kind}_{method}_{ratio:g}_s{seed}.json"


def scores(run: Path, data: Path, kind: str, method: str, ratio: float, seed: int, out: Path,
           threads: int = 1) -> list[float | None]:
    """Per-expression scores of one cell (cached in `out`; the random method drawn with `seed`)."""
    path = cell_file(out, kind, method, ratio, seed)
    if path.exists():
        cached = json.loads(path.read_text())
        if cached["run"] == str(run) and cached["data"] == str(data):
            return cached["per_sample"]
    from patchprune.ivs.evaluate import evaluate, write_per_sample

    m = evaluate(run, data, method=method, ratio=ratio, kind=kind, progress=False, seed=seed, timing=0,
                 threads=threads, per_sample=True)
    write_per_sample(path, m, run, data, seed)
    return m["per_sample"]


def paired(a: list[list[float | None]], b: list[list[float | None]], rounds: int = BOOTSTRAP,
           seed: int = 0) -> dict[str, float]:
    """a, b: per seed, per expression scores of two methods (None: not scored, dropped in pairs).
    Mean of a - b over all pairs, bootstrap 95 % interval (resampling expressions within each seed),
    wins of a, wins of b, ties (|a - b| < 1e-9) and the number of pairs."""
    diffs = []
    for sa, sb in zip(a, b):
        if len(sa) != len(sb):
            raise ValueError(f"the two methods scored different expressions ({len(sa)} against {len(sb)})")
        diffs.append(np.array([x - y for x, y in zip(sa, sb) if x is not None and y is not None], dtype=np.float64))
    allv = np.concatenate(diffs)
    if not len(allv):
        raise ValueError("no expression scored by both methods")
    gen = np.random.default_rng(seed)
    boot = np.empty(rounds)
    for r in range(rounds):
        boot[r] = np.concatenate([d[gen.integers(0, len(d), len(d))] for d in diffs if len(d)]).mean()
    lo, hi = np.percentile(boot, [2.5, 97.5])
    tie = np.abs(allv) < 1e-9
    return {"mean": float(allv.mean()), "lo": float(lo), "hi": float(hi), "wins_a": int((allv > 0).sum()),
            "wins_b": int((allv < 0).sum()), "ties": int(tie.sum()), "pairs": int(len(allv))}


def report(rows: list[dict], kind: str) -> str:
    unit = "IoU" if kind == "image" else "J&F"
    lines = [f"| ratio | EVTP - baseline ({kind}, {unit}) | mean | 95 % interval | EVTP wins | baseline wins | ties |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['ratio']:g} | {r['baseline']} | {r['mean']:+.4f} | [{r['lo']:+.4f}, {r['hi']:+.4f}] | "
                     f"{r['wins_a']} | {r['wins_b']} | {r['ties']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="one run folder per seed, comma-separated (seed = position)")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--kind", choices=("image", "video"), default="image")
    ap.add_argument("--methods", default=",".join(BASELINES), help="baselines compared with EVTP")
    ap.add_argument("--ratios", default="0.05,0.1,0.2")
    ap.add_argument("--out", type=Path, required=True, help="cache of per-expression scores")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only-evaluate", action="store_true", help="fill the cache, report nothing (parts side by side)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        rows = compare(args)
    except (ValueError, FileNotFoundError) as err:  # one line, as the other bench scripts
        raise SystemExit(f"paired: {err}") from None
    if args.only_evaluate:
        return
    print(report(rows, args.kind))
    if args.json:
        runs = [r for r in args.runs.split(",") if r]
        args.json.write_text(json.dumps({"kind": args.kind, "runs": runs, "rows": rows}, indent=1))


def compare(args: argparse.Namespace) -> list[dict]:
    """Per ratio and baseline, the paired comparison with EVTP (evaluating the cells the cache lacks)."""
    runs = [Path(r) for r in args.runs.split(",") if r]
    baselines = [m for m in args.methods.split(",") if m]
    ratios = [float(r) for r in args.ratios.split(",") if r]
    from patchprune.ivs.evaluate import check_eval_args

    for m in baselines:
        check_eval_args(m, 0.5)
    rows = []
    for ratio in ratios:
        check_eval_args("evtp", ratio)
        evtp = [scores(run, args.data, args.kind, "evtp", ratio, s, args.out, args.threads) for s, run in enumerate(runs)]
        for m in baselines:
            base = [scores(run, args.data, args.kind, m, ratio, s, args.out, args.threads) for s, run in enumerate(runs)]
            if not args.only_evaluate:
                rows.append({"ratio": ratio, "baseline": m, **paired(evtp, base)})
    return rows


if __name__ == "__main__":
    main()
