"""Ship `train vis` run folders as the package's reference checkpoints (fp16 safetensors + config
JSON + SHA-256 manifest under patchprune/weights/, model cards under docs/models/).

    python scripts/export_reference_checkpoints.py dense=runs/ref_dense vpp-0.55=runs/ref_vpp055 \
        vpp-0.40=runs/ref_vpp040 [--eval NAME=EVAL.json ...] [--command NAME='...' ...]

Each run's metrics come from its `eval vis --json` output (--eval, or RUN/eval.json, or
RUN/../<run>_eval.json); the fp16 file is evaluated again on the run's valid split (--no-check to skip).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"export: {what} must be NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER (e.g. vpp-0.40=runs/ref_vpp040)")
    p.add_argument("--eval", action="append", default=[], help="NAME=EVAL_JSON (an `eval vis --json` output)")
    p.add_argument("--command", action="append", default=[],
                   help="NAME=COMMAND line for the card (repeat for several lines; default: rebuilt from the run)")
    p.add_argument("--out", default=str(ROOT / "patchprune" / "weights"))
    p.add_argument("--cards", default=str(ROOT / "docs" / "models"))
    p.add_argument("--machine", default=None, help="machine the runs trained on (default: this one)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the fp16 check")
    p.add_argument("--no-check", action="store_true", help="do not evaluate the fp16 files")
    args = p.parse_args(argv)
    import torch

    from patchprune.checkpoints_export import export_reference

    torch.set_num_threads(args.threads)
    runs, evals = _pairs(args.runs, "a run"), _pairs(args.eval, "--eval")
    commands: dict[str, list[str]] = {}
    for item in args.command:
        name, _, cmd = item.partition("=")
        commands.setdefault(name, []).append(cmd)
    for name, run in runs.items():
        info = export_reference(run, name, out=args.out, eval_json=evals.get(name), card_dir=args.cards,
                                machine=args.machine, check=not args.no_check, commands=commands.get(name))
        shipped = info.get("metrics_shipped") or {}
        ran = info.get("metrics") or {}
        print(f"{name}: {run} -> {args.out} | AP fp32 {ran.get('AP', float('nan')):.4f} fp16 "
              f"{shipped.get('AP', float('nan')):.4f} | PKR {shipped.get('pkr', float('nan')):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
