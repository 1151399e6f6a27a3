"""`patchprune bench vis`: the VPP paper's VIS tables and figures at this project's scale.

Cells: a dense stage-1 run per seed, then stage 2 of every (method, target) from that seed's dense
run (the VPP protocol of `train vis`). Each cell is a `train vis` run folder under `--runs`
(resumable: a finished cell is skipped, an interrupted one resumes) or an existing run given with
`--use CELL=RUN` (never retrained); its `eval vis` metrics are cached in RUN/bench_eval.json.
Then `patchprune.vis.report` writes Markdown + CSV + PNG under `--out`. `--table4` adds the paper's
Table 4 (VPP's module positions, `TABLE4`): one stage-2 VPP cell per layout at 55 %, same recipe.
`--device` runs the cells' training, evaluation and the analyses there (default the CPU); a cached
evaluation counts only for the device it ran on (its FPS are that device's).

Only the standard library is imported at the top (the CLI imports this module to build its parser).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METHODS = ("vpp", "svit", "dynamicvit", "tps")
TARGETS = (0.55, 0.40)
EVAL_FILE = "bench_eval.json"
TABLE4_TARGET = 0.55


@dataclass(frozen=True)
class Table4Setting:
    """One row of the VPP paper's Table 4 (module positions; index i = input of block i) and its values."""

    number: int
    layout: str  # `patchprune.learned.layout` spelling
    note: str
    paper_pkr: float  # %
    paper_ap: float  # %, YouTube-VIS 2019, ViT-Adapter tiny


# The extracted table has five rows (the "settings 1-6" counts one more; there is none).
TABLE4 = (
    Table4Setting(1, "sm:0,3,6,9", "no video context", 55.9, 40.1),
    Table4Setting(2, "sm:1,3,6,9", "no video context", 52.4, 40.3),
    Table4Setting(3, "map:0;sm:3,6,9", "", 51.6, 41.5),
    Table4Setting(4, "map:1", "constant keep ratio after the Map-SM", 54.2, 40.6),
    Table4Setting(5, "map:1;sm:3,6,9", "default", 52.7, 42.3),
)


@dataclass(frozen=True)
class Cell:
    """One run of the benchmark: method "dense" (target None) or a stage-2 method at a target."""

    method: str
    target: float | None
    seed: int
    layout: str | None = None  # VPP's module positions (Table 4); None = the method's own

    @property
    def slug(self) -> str:
        """"" or "_" + the layout's file-name form (map0_sm3-6-9)."""
        from patchprune.learned.layout import parse_layout

        return "" if self.layout is None else "_" + parse_layout(self.layout).slug

    @property
    def name(self) -> str:
        if self.method == "dense":
            return f"dense_s{self.seed}"
        return f"{self.method}{round(100 * self.target):03d}{self.slug}_s{self.seed}"

    @property
    def key(self) -> str:
        """The `--use` spelling: dense:SEED, METHOD:TARGET:SEED or, with a layout, vpp@SLUG:TARGET:SEED."""
        if self.method == "dense":
            return f"dense:{self.seed}"
        method = self.method if self.layout is None else f"{self.method}@{self.slug[1:]}"
        return f"{method}:{self.target:g}:{self.seed}"


def table4_cells(seeds: list[int]) -> list[Cell]:
    """Table 4's cells: VPP at 55 % in each layout but the default (that one is the plain VPP cell)."""
    from patchprune.learned.layout import DEFAULT_LAYOUT, parse_layout

    return [Cell("vpp", TABLE4_TARGET, s, t.layout) for s in seeds for t in TABLE4
            if parse_layout(t.layout) != DEFAULT_LAYOUT]


def plan(seeds: list[int], methods: list[str], targets: list[float], table4: bool = False) -> list[Cell]:
    """Dense cells first (stage 2 needs them), then every method x target per seed; with `table4`,
    VPP @ 55 % (Table 4's default row) when not planned already and the other layouts."""
    cells = [Cell("dense", None, s) for s in seeds]
    cells += [Cell(m, t, s) for s in seeds for t in targets for m in methods]
    if table4:
        cells += [Cell("vpp", TABLE4_TARGET, s) for s in seeds if Cell("vpp", TABLE4_TARGET, s) not in cells]
        cells += table4_cells(seeds)
    return cells


def parse_use(items: list[str], cells: list[Cell], options: dict[str, dict[str, Any]] | None = None
              ) -> dict[str, Path]:
    """`--use CELL=RUN` items -> {cell key: run folder}; unknown cells, missing folders or a VPP run
    trained with other module positions than its cell's raise."""
    keys = {c.key: c for c in cells}
    out = {}
    for item in items:
        key, sep, run = item.partition("=")
        if not sep or not run:
            raise ValueError(f"--use {item!r}: expected CELL=RUN, e.g. dense:0=runs/ref_dense or vpp:0.55:0=runs/ref_vpp055")
        parts = key.split(":")
        if len(parts) == 3:
            try:
                key = f"{parts[0]}:{float(parts[1]):g}:{int(parts[2])}"
            except ValueError:
                raise ValueError(f"--use {item!r}: METHOD:TARGET:SEED needs a number target and an integer seed") from None
        if key not in keys:
            raise ValueError(f"--use {item!r}: cell {key} is not in this benchmark (cells: {', '.join(sorted(keys))})")
        if not (Path(run) / "checkpoint.safetensors").is_file():
            raise ValueError(f"--use {item!r}: {run} holds no checkpoint.safetensors (a `train vis` run folder)")
        _check_layout(item, keys[key], Path(run))
        if options is not None:
            _check_options(item, keys[key], Path(run), options.get(keys[key].method, {}))
        out[key] = Path(run)
    return out


def _check_options(item: str, cell: Cell, run: Path, wanted: dict[str, Any]) -> None:
    """ValueError when a learned cell's run was trained with other method options (train.json)."""
    if cell.method == "dense" or not (run / "train.json").is_file():
        return
    settings = json.loads((run / "train.json").read_text())
    theirs = settings.get("method_options") or {}
    if settings.get("method") == cell.method and theirs != wanted:
        raise ValueError(f"--use {item!r}: {run} was trained with method options {theirs}, the bench asks for {wanted}")


def _check_layout(item: str, cell: Cell, run: Path) -> None:
    """ValueError when a VPP cell's run was trained with other module positions (train.json)."""
    if cell.method != "vpp" or not (run / "train.json").is_file():
        return
    from patchprune.learned.layout import DEFAULT_LAYOUT, parse_layout

    settings = json.loads((run / "train.json").read_text())
    if settings.get("method") != "vpp":
        return  # not a VPP run: nothing to compare
    ours = DEFAULT_LAYOUT if cell.layout is None else parse_layout(cell.layout)
    theirs = DEFAULT_LAYOUT if settings.get("vpp_layout") is None else parse_layout(settings["vpp_layout"])
    if ours != theirs:
        raise ValueError(f"--use {item!r}: {run} was trained with --vpp-layout '{theirs}', the cell needs '{ours}'")


def train_command(cell: Cell, run: Path, dense_run: Path | None, args: argparse.Namespace) -> list[str]:
    """The `patchprune train vis` command line of a cell (recorded, and run in-process)."""
    cmd = ["patchprune", "train", "vis", "--data", str(args.data), "--out", str(run), "--seed", str(cell.seed),
           "--threads", str(args.threads), "--no-progress"]
    if cell.method == "dense":
        cmd += ["--config", args.config, "--steps", str(args.dense_steps), "--batch", str(args.dense_batch),
                "--lr", f"{args.dense_lr:g}", "--warmup", str(args.dense_warmup)]
    else:
        cmd += ["--method", cell.method, "--target", f"{cell.target:g}", "--init", str(dense_run),
                "--steps", str(args.stage2_steps), "--batch", str(args.stage2_batch), "--lr", f"{args.stage2_lr:g}",
                "--warmup", str(args.stage2_warmup)]
        if args.stage2_policy_lr_mult != 1.0:
            cmd += ["--policy-lr-mult", f"{args.stage2_policy_lr_mult:g}"]
        if args.stage2_head_lr_mult != 1.0:
            cmd += ["--head-lr-mult", f"{args.stage2_head_lr_mult:g}"]
        if cell.layout is not None:
            cmd += ["--vpp-layout", cell.layout]
        for key, value in stage2_options(args).get(cell.method, {}).items():
            cmd += ["--method-option", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    device = getattr(args, "device", None)  # callers may pass a namespace of their own, without --device
    if device is not None:
        cmd += ["--device", device]
    return cmd


def stage2_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """`--stage2-method-option METHOD:KEY=VALUE` items -> {method: {key: value}} (values as
    `train vis --method-option` reads them)."""
    from patchprune.vis.run import parse_method_options

    out: dict[str, dict[str, Any]] = {}
    for item in args.stage2_method_option:
        method, sep, option = item.partition(":")
        if not sep or not method:
            raise ValueError(f"--stage2-method-option {item!r}: expected METHOD:KEY=VALUE, e.g. vpp:smooth_kernel=5")
        out.setdefault(method, {}).update(parse_method_options([option]))
    return out


def eval_data(args: argparse.Namespace) -> Path:
    """The folder whose valid split every cell is evaluated on (`--eval-data`, default `--data`)."""
    return Path(args.eval_data or args.data)


def _train(cmd: list[str]) -> None:
    import contextlib

    from patchprune.cli import main

    with contextlib.redirect_stdout(sys.stderr):  # train vis prints its summary; stdout is the bench's JSON
        rc = main(cmd[1:])
    if rc not in (0, None):
        raise RuntimeError(f"{' '.join(cmd)} exited with {rc}")


def _finished(run: Path) -> bool:
    """True when the run's checkpoint reached the steps its settings ask for."""
    from patchprune.vis.run import checkpoint_meta

    ckpt, settings = run / "checkpoint.safetensors", run / "train.json"
    if not ckpt.is_file() or not settings.is_file():
        return False
    steps = json.loads(settings.read_text()).get("steps")
    from safetensors import safe_open

    with safe_open(str(ckpt), framework="pt") as fh:
        step = int(json.loads((fh.metadata() or {}).get("step", "0")))
    checkpoint_meta(ckpt)  # readable
    return steps is not None and step >= int(steps)


def evaluate_cell(run: Path, args: argparse.Namespace, policy: str | None = None, target: float | None = None
                  ) -> dict[str, Any]:
    """`eval vis` metrics of a run, cached in RUN/bench_eval.json (recomputed when the checkpoint is
    newer); with `policy`, the run (a dense one) under that training-free policy at `target`,
    cached in RUN/bench_eval_POLICY_TARGET.json."""
    from patchprune.data.io import write_json
    from patchprune.vis.evaluate import evaluate_folder

    suffix = "" if policy is None else f"_{policy}_{target:g}"
    cache = run / EVAL_FILE.replace(".json", f"{suffix}.json")
    ckpt = run / "checkpoint.safetensors"
    data = eval_data(args)
    if cache.is_file() and cache.stat().st_mtime >= ckpt.stat().st_mtime:
        cached = json.loads(cache.read_text())
        if cached.get("eval_data", str(args.data)) == str(data) and cached.get("device", "cpu") == _device(args):
            return cached
    t0 = time.perf_counter()
    m = evaluate_folder(run, data, timing_frames=args.timing_frames, method=policy, target=target, device=_device(args))
    write_json(run / f"results_valid{suffix}.json", m.pop("results"))
    m["eval_seconds"] = time.perf_counter() - t0
    m["eval_data"] = str(data)
    write_json(cache, m, indent=1)
    return m


def _device(args: argparse.Namespace) -> str:
    """The device the cells run on, as evaluations record it ("cpu", "cuda:0")."""
    from patchprune.train.distributed import run_device

    return str(run_device(getattr(args, "device", None)))


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Train / evaluate every cell (skipping finished ones), then the analyses and the report."""
    import torch

    from patchprune.vis import report

    torch.set_num_threads(args.threads)
    cells = plan(args.seeds, args.methods, args.targets, args.table4)
    use = parse_use(args.use, cells, stage2_options(args))
    runs_root = Path(args.runs)
    rows, commands = [], []
    t_start = time.perf_counter()
    for cell in cells:
        run = use.get(cell.key, runs_root / cell.name)
        dense = use.get(f"dense:{cell.seed}", runs_root / f"dense_s{cell.seed}")
        cmd = train_command(cell, run, dense, args)
        if cell.key in use:
            commands.append(f"# {cell.key}: existing run {run}")
        else:
            if not _finished(run):
                if args.no_train:
                    commands.append(f"# not run (--no-train): {shlex.join(cmd)}")
                    continue
                print(f"bench vis: training {cell.name} -> {run}", file=sys.stderr)
                _train(cmd)
            commands.append(shlex.join(cmd))
        print(f"bench vis: evaluating {cell.name} ({run})", file=sys.stderr)
        m = evaluate_cell(run, args)
        settings = json.loads((run / "train.json").read_text()) if (run / "train.json").is_file() else {}
        row = {"cell": cell.name, "method": cell.method, "target": cell.target, "seed": cell.seed,
               "run": str(run), "train": settings, "metrics": m}
        if cell.layout is not None:
            row["layout"] = cell.layout
        rows.append(row)
    for seed in args.seeds:  # training-free policies on each seed's dense run: evaluation only
        dense = use.get(f"dense:{seed}", runs_root / f"dense_s{seed}")
        if f"dense:{seed}" not in use and not _finished(dense):
            continue
        for target in args.targets:
            for policy in args.policies:
                print(f"bench vis: evaluating {policy} @ {target:g} on {dense}", file=sys.stderr)
                m = evaluate_cell(dense, args, policy, target)
                commands.append(f"patchprune eval vis --run {dense} --data {eval_data(args)} --method {policy} "
                                f"--target {target:g} --json")
                rows.append({"cell": f"{policy}{round(100 * target):03d}_s{seed}", "method": policy, "target": target,
                             "seed": seed, "run": str(dense), "train": {}, "metrics": m, "training_free": True})
    analyses = run_analyses(args, cells, use, runs_root)
    if args.table4:
        analyses["table4"] = table4_results(rows)
    out = report.write_report(Path(args.out), [r for r in rows if "layout" not in r], analyses, {
        "data": str(args.data), "eval_data": str(eval_data(args)), "method_options": stage2_options(args),
        "seeds": args.seeds, "methods": args.methods, "targets": args.targets,
        "threads": args.threads, "device": _device(args), "commands": commands, "argv": sys.argv[1:],
        "minutes": (time.perf_counter() - t_start) / 60})
    return {"out": str(out), "cells": len(rows)}


def table4_results(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table 4's settings with their cell rows (VPP @ 55 %; the default row = the plain VPP cells)."""
    from patchprune.learned.layout import DEFAULT_LAYOUT, parse_layout

    out = []
    for t in TABLE4:
        layout = parse_layout(t.layout)
        own = None if layout == DEFAULT_LAYOUT else t.layout
        cells = [r for r in rows if r["method"] == "vpp" and r["target"] == TABLE4_TARGET and r.get("layout") == own]
        out.append({"setting": t.number, "map": "-" if layout.map_position is None else str(layout.map_position),
                    "sm": ",".join(map(str, layout.sm_positions)) or "-", "layout": str(layout), "note": t.note,
                    "paper_pkr": t.paper_pkr, "paper_ap": t.paper_ap, "rows": cells})
    return out


def run_analyses(args: argparse.Namespace, cells: list[Cell], use: dict[str, Path], runs_root: Path) -> dict[str, Any]:
    """FGS per layer of each seed's dense model (cached in RUN/bench_fgs.json) and the keep-mask
    recovery of the first seed's VPP runs."""
    from patchprune.data.io import write_json
    from patchprune.vis.analysis import fgs_per_layer, keep_recovery
    from patchprune.vis.data import load_split, square_size
    from patchprune.vis.run import load_run

    out: dict[str, Any] = {"fgs": {}, "recovery": {}}
    if args.fgs_frames <= 0:
        return out
    data: dict[str, Any] = {}
    for cell in cells:
        run = use.get(cell.key, runs_root / cell.name)
        if cell.key not in use and not _finished(run):
            continue  # not trained (--no-train)
        if cell.method == "dense":
            cache = run / "bench_fgs.json"
            if not (cache.is_file() and cache.stat().st_mtime >= (run / "checkpoint.safetensors").stat().st_mtime):
                loaded = load_run(run, device=_device(args))
                side = square_size(loaded.model.config.img_size)
                if "train" not in data:
                    cats = loaded.model.config.categories
                    data["train"] = load_split(args.data, "train", side, cats)
                    data["valid"] = load_split(args.data, "valid", side, cats)
                write_json(cache, fgs_per_layer(loaded.model, data["train"], data["valid"], args.fgs_frames,
                                                seed=cell.seed), indent=1)
            out["fgs"][cell.seed] = json.loads(cache.read_text())
        elif cell.method == "vpp" and cell.layout is None and cell.seed == args.seeds[0]:
            loaded = load_run(run, device=_device(args))
            if "valid" not in data:
                data["valid"] = load_split(args.data, "valid", square_size(loaded.model.config.img_size),
                                           loaded.model.config.categories)
            out["recovery"][f"{cell.target:g}"] = keep_recovery(loaded.model, loaded.encoder, data["valid"])
    return out


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _run(args: argparse.Namespace) -> int:
    from patchprune.learned import available_methods

    if args.quick:
        args.seeds = args.seeds[:1]
    if not args.seeds:
        raise ValueError("--seeds: give at least one seed, e.g. --seeds 0,1,2")
    bad = [m for m in args.methods if m not in available_methods()]
    if bad:
        raise ValueError(f"--methods: {bad} are not learned methods; expected some of {available_methods()}")
    from patchprune.policies.base import available_policies

    bad = [p for p in args.policies if p not in available_policies()]
    if bad:
        raise ValueError(f"--policies: {bad} are not training-free policies; expected some of {available_policies()}")
    if any(not 0 < t <= 1 for t in args.targets):
        raise ValueError(f"--targets must be in (0, 1], got {args.targets}")
    for name in ("dense_steps", "stage2_steps", "dense_batch", "stage2_batch", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    stage2_options(args)  # syntax of --stage2-method-option, before any training
    _device(args)  # one-line error naming --device (e.g. cuda on a machine without one), before any training
    for folder in {Path(args.data), eval_data(args)}:
        if not (folder / "valid.json").is_file() and not (folder / "valid").is_dir():
            from patchprune.vis.data import find_split

            find_split(folder, "valid")  # one-line error naming what is missing
    print(json.dumps(run_bench(args)))
    return 0


def register(groups) -> None:
    """Add `bench vis`."""
    p = groups.bench.add_parser("vis", help="VIS tables of the VPP paper (AP / PKR / IoI / GMACs / FPS, FGS, "
                                            "keep ratio per layer, keep-mask recovery) at this project's scale")
    p.add_argument("--data", required=True, type=Path, help="YouTube-VIS-layout folder (train + valid)")
    p.add_argument("--out", default=Path("benchmarks/vis"), type=Path, help="Markdown + CSV + PNG folder")
    p.add_argument("--runs", default=Path("runs/bench_vis"), type=Path, help="where cells are trained")
    p.add_argument("--quick", action="store_true", help="one seed (the first of --seeds)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--methods", type=_names, default=list(METHODS), help="stage-2 methods (default vpp,svit,dynamicvit,tps)")
    p.add_argument("--targets", type=_floats, default=list(TARGETS), help="PKR targets (default 0.55,0.40)")
    p.add_argument("--policies", type=_names, default=[],
                   help="training-free policies evaluated on each dense run at VPP's positions and rates (e.g. evtp,tome)")
    p.add_argument("--use", action="append", default=[], metavar="CELL=RUN",
                   help="reuse a finished run for a cell: dense:SEED=RUN or METHOD:TARGET:SEED=RUN (repeatable)")
    p.add_argument("--table4", action="store_true",
                   help="also the paper's Table 4: VPP @ 55 %% with its modules at the 5 positions of the paper "
                        "(4 more stage-2 cells per seed; plus VPP @ 55 %% itself when not planned)")
    p.add_argument("--no-train", action="store_true",
                   help="report only the cells already trained (others are listed as not run)")
    p.add_argument("--config", default="tiny", choices=("tiny", "small"))
    p.add_argument("--dense-steps", type=int, default=2800)
    p.add_argument("--dense-batch", type=int, default=8)
    p.add_argument("--dense-lr", type=float, default=6e-4)
    p.add_argument("--dense-warmup", type=int, default=150)
    p.add_argument("--stage2-steps", type=int, default=300)
    p.add_argument("--stage2-batch", type=int, default=4)
    p.add_argument("--stage2-lr", type=float, default=1e-4)
    p.add_argument("--stage2-warmup", type=int, default=10)
    p.add_argument("--stage2-policy-lr-mult", type=float, default=1.0,
                   help="the pruning modules' lr multiplier in stage 2 (every learned method alike)")
    p.add_argument("--stage2-head-lr-mult", type=float, default=1.0,
                   help="train vis --head-lr-mult of every stage-2 cell (default the spec's x1)")
    p.add_argument("--stage2-method-option", action="append", default=[], metavar="METHOD:KEY=VALUE",
                   help="a builder keyword for every stage-2 cell of METHOD (repeatable), e.g. vpp:smooth_kernel=5 "
                        "(train vis --method-option)")
    p.add_argument("--eval-data", default=None, type=Path,
                   help="evaluate every cell on this folder's valid split (default --data), e.g. a larger valid "
                        "split generated with the same flags")
    p.add_argument("--timing-frames", type=int, default=20, help="frames timed for FPS per cell (0: no timing)")
    p.add_argument("--fgs-frames", type=int, default=64, help="train frames for the FGS probes (0: skip the figures)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training and evaluation")
    p.add_argument("--device", default=None,
                   help="cpu (default), cuda, cuda:N or auto: where every cell trains and is evaluated")
    p.set_defaults(func=_run)
