"""Recount the GMACs of every cell of a `bench ivs` table with the current counter, in place.

Why: until 2026-12-02 (twenty-second session) `ivs.evaluate` counted MACs with a bare
FlopCounterMode, which has no formula for the CPU SDPA kernel: every fused attention (vision tower,
perceiver, language model, mask branch) counted zero, so the tables' GMACs and FLOP ratios left
attention out. The count is a function of the cell's run, data, first sample, method, ratio,
options and instruction only, so it is redone here on that first sample (`limit` 1; swap cells at
their own limit, since the swap draws from every sample) without evaluating accuracy again, and
written over the `gmacs.*` columns of OUT/results.csv; nothing else in the file changes. Then the
table's own command (its NOTES.md) rewrites the report from the file without measuring anything.

    python benchmarks/ivs/recount_gmacs.py --kind image -- <the bench ivs options of the table>
    python benchmarks/ivs/recount_gmacs.py --merge -- <the same options>   # write results.csv

Per kind the counts go to OUT/gmacs_recount_<kind>.json first (two processes can share the work).
"""
from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm


def main(argv: list[str]) -> int:
    from patchprune.bench import ivs as bench
    from patchprune.cli import build_parser
    from patchprune.ivs.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=("image", "video"))
    ap.add_argument("--merge", action="store_true", help="write the recounted GMACs into OUT/results.csv")
    ap.add_argument("bench_args", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    bench_argv = [a for a in args.bench_args if a != "--"]
    cfg = bench.config_from_args(build_parser().parse_args(["bench", "ivs", *bench_argv]))
    store = bench.ResultStore(cfg.out / bench.RESULTS_FILE)
    reps = {r.seed: r for r in bench.prepare_replicates(cfg, log=lambda _: None)}
    cells = [c for c in bench.plan_cells(cfg) if bench._has_run(reps[c.seed], c.kind)]
    if args.merge:
        counts = {}
        for kind in cfg.kinds:
            counts.update(json.loads((cfg.out / f"gmacs_recount_{kind}.json").read_text()))
        missing = [c.key for c in cells if c.key not in counts]
        if missing:
            raise SystemExit(f"recount_gmacs: no recount for {len(missing)} cell(s), e.g. {missing[:3]}")
        for c in cells:
            store.records[c.key]["gmacs"] = counts[c.key]
        store.save()
        print(f"recount_gmacs: {len(cells)} cells' GMACs written to {store.path}")
        return 0
    path = cfg.out / f"gmacs_recount_{args.kind}.json"
    counts = json.loads(path.read_text()) if path.exists() else {}
    todo = [c for c in cells if c.kind == args.kind and c.key not in counts]
    for cell in tqdm(todo, desc=f"recount {args.kind}", unit="cell"):
        origin = bench.cell_origin(cell, reps[cell.seed], cfg)
        limit = origin["limit"] if cell.variant == "swap" else 1
        res = bench.call_evaluate(evaluate, cell.options(), run=origin["run"], data=origin["data"], method=cell.method,
                                  ratio=cell.ratio, kind=cell.kind, limit=limit,
                                  swap_instruction=cell.variant == "swap", threads=1, progress=False, seed=cell.seed,
                                  timing=1)
        counts[cell.key] = {k: float(v) for k, v in res["gmacs"].items()}
        path.write_text(json.dumps(counts, indent=1))
    print(f"recount_gmacs: {len(counts)} {args.kind} cells counted in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
