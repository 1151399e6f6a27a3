"""Ship `train vis` / `train ivs` run folders as weights-only fp16 run folders that can be committed
(`patchprune.checkpoints_export.export_run_folder`), e.g. the dense runs the pruning table starts from:

    python scripts/ship_run_folders.py runs/full1200=benchmarks/vis/dense1200/seed0 \
        runs/full1200_s1=benchmarks/vis/dense1200/seed1

Each output folder keeps config.json, train.json and the run's eval JSONs (--extra); its checkpoint holds
the model's tensors in fp16 (--fp32: as trained) with the run's step and loss history, no optimiser state.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pairs", nargs="+", help="RUN=OUT (a run folder and the folder to write)")
    p.add_argument("--extra", action="append", default=None,
                   help="file of the run to copy as well (repeatable; default eval.json)")
    p.add_argument("--fp32", action="store_true",
                   help="keep the weights in fp32 (twice the size; the run's eval figures stay exact)")
    args = p.parse_args(argv)
    from patchprune.checkpoints_export import export_run_folder

    for pair in args.pairs:
        run, sep, out = pair.partition("=")
        if not sep or not run or not out:
            raise SystemExit(f"ship_run_folders: expected RUN=OUT, got {pair!r}")
        written = export_run_folder(run, out, tuple(args.extra or ("eval.json",)), half=not args.fp32)
        size = sum(f.stat().st_size for f in written.iterdir()) / 2**20
        print(f"{run} -> {written} ({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
