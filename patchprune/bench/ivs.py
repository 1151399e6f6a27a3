"""`patchprune bench ivs`: the EVTP paper's Tables 1-4 and Fig. 3 on the instructed-segmentation model.

One replicate = one trained dense model (a run folder) and its seed. For every replicate it evaluates
(`patchprune.ivs.evaluate.evaluate`) on the image set (gIoU, cIoU) and the video set (J, F, J&F):
- accuracy cells: dense, and every method x ratio (Tables 1-2, Fig. 3's coverage radius);
- the EVTP ablation ladder (Table 4): rungs kcenter / spatial / adaptive as the selector option
  `ablation=` (`select(..., method="evtp", ablation=...)`; the "full" rung is the plain evtp cell);
- the instruction-swap control: dense, each instruction replaced by another object's;
- the token-floor control: one random visual token per frame (does the model use them at all?);
- speed (Table 3, first replicate only): `speed_rounds` interleaved rounds of dense and EVTP at
  every ratio on a few samples, so each ratio's latency is measured beside the dense one (medians).
Without `--run-image` / `--run-video` it generates the data (`write_synth_refer`) and trains one
dense tiny model per seed (`patchprune.ivs.train.train`) under `--work`.
Every cell is a row of OUT/results.csv, rewritten atomically after each cell; a rerun skips the
cells already there and the runs already trained (resume). The report is `bench/ivs_report.py`.
`--device cuda` trains and evaluates every cell (accuracy and speed) on the GPU; such cells carry
a "device" column, and a rerun on another device measures them again.
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from patchprune.cli import CommandGroups
from patchprune.validate import DEVICE_HELP, comma_list

RATIOS = (0.05, 0.1, 0.2)
METHODS = ("random", "kcenter", "divprune", "tome", "visionzip", "vispruner", "evtp")
LADDER_RUNGS = ("kcenter", "spatial", "adaptive")  # "full" = the plain evtp cell
KINDS = ("image", "video")
SPEED_METHOD = "evtp"
# The token-floor control: one random visual token per frame (keep_count(N, 1e-3) = 1 for N < 1500).
# If accuracy barely moves from dense, the model does not use the LLM's image tokens and no
# selection method can be told apart from another.
FLOOR_METHOD, FLOOR_RATIO = "random", 1e-3
RESULTS_FILE = "results.csv"
TRAINED_MARK = "bench_trained.json"
# The generated data set and the tiny model's training length (the ivs quick recipe, docs/ivs.md).
DATA_RECIPE = {"images": 400, "videos": 60, "frames": 8, "size": 96, "min_objects": 2, "max_objects": 3,
               "min_distractors": 1, "max_distractors": 2, "clutter": 4, "min_radius": 0.14, "max_radius": 0.22,
               # the VIS recipe's appearance change (docs/ivs.md, "Fourteenth session"): shape x texture is
               # not learnt from scratch in a CPU budget, so each category gets its colour
               "texture_scale": 2.2, "category_colour": "fixed"}
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"seeds": (0,), "limit_image": 120, "limit_video": 16, "ladder_ratios": (0.2,), "speed_rounds": 3,
              "speed_limit_image": 8, "speed_limit_video": 1, "steps": 300},
    "full": {"seeds": (0, 1, 2), "limit_image": None, "limit_video": None, "ladder_ratios": RATIOS,
             "speed_rounds": 5, "speed_limit_image": 8, "speed_limit_video": 1, "steps": 1800},
}
FIELDS = ("kind", "seed", "method", "ratio", "variant")  # the key of a cell


@dataclass(frozen=True)
class Cell:
    """One evaluation: kind (image|video), replicate seed, method, ratio, variant ("" plain,
    "swap" instruction swap, "floor" one token per frame, "ladder-<rung>" EVTP ablation, "speed<i>"
    speed round i)."""

    kind: str
    seed: int
    method: str
    ratio: float
    variant: str = ""

    @property
    def key(self) -> str:
        return cell_key(self.kind, self.seed, self.method, self.ratio, self.variant)

    def options(self) -> dict[str, Any]:
        """Selector options of the cell (the ablation rung of a ladder cell)."""
        return {"ablation": self.variant[len("ladder-"):]} if self.variant.startswith("ladder-") else {}


def cell_key(kind: str, seed: int | str, method: str, ratio: float | str, variant: str) -> str:
    return f"{kind}|{int(seed)}|{method}|{float(ratio):g}|{variant}"


@dataclass
class Replicate:
    seed: int
    run_image: Path | None
    run_video: Path | None


@dataclass
class BenchConfig:
    """Everything a bench run depends on (saved in the report)."""

    out: Path
    work: Path
    quick: bool
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    ratios: tuple[float, ...]
    ladder_ratios: tuple[float, ...]
    kinds: tuple[str, ...]
    limit_image: int | None
    limit_video: int | None
    speed_rounds: int
    speed_limit_image: int
    speed_limit_video: int
    steps: int
    runs_image: tuple[Path, ...] = ()
    runs_video: tuple[Path, ...] = ()
    data_image: Path | None = None
    data_video: Path | None = None
    threads: int | None = None
    speed_threads: int = 1  # torch threads of the speed rounds (one core: two threads on two cores are noisy)
    progress: bool = True
    latency_note: str = ""
    mask_init: tuple[Path, ...] = ()  # one dense VIS run per seed: `train ivs --mask-init` for the bench's runs
    merge_from: tuple[Path, ...] = ()  # other bench ivs --out folders whose cells join this one's results.csv
    device: str | None = None  # None: the CPU; else the torch device every cell trains / runs on ("cuda:0")

    def device_kwargs(self) -> dict[str, str]:
        """`device=` for `evaluate` / `train` when the bench runs off the CPU (nothing on the CPU, the
        functions' default)."""
        return {} if self.device is None else {"device": self.device}

    @property
    def command(self) -> str:
        """The command line that reproduces this configuration (every option spelled out)."""
        parts = ["patchprune", "bench", "ivs"] + (["--quick"] if self.quick else [])
        for kind, runs, data in (("image", self.runs_image, self.data_image), ("video", self.runs_video,
                                                                                self.data_video)):
            if runs:
                parts += [f"--run-{kind}", ",".join(str(r) for r in runs)]
            if data is not None:
                parts += [f"--data-{kind}", str(data)]
        parts += ["--seeds", ",".join(map(str, self.seeds)), "--methods", ",".join(self.methods),
                  "--ratios", ",".join(f"{r:g}" for r in self.ratios)]
        for kind in ("image", "video"):
            if self.limit(kind) is not None:
                parts += [f"--limit-{kind}", str(self.limit(kind))]
        if not (self.runs_image or self.runs_video):
            parts += ["--steps", str(self.steps)]
            if self.mask_init:
                parts += ["--mask-init", ",".join(str(r) for r in self.mask_init)]
        parts += ["--speed-rounds", str(self.speed_rounds), "--out", str(self.out), "--work", str(self.work)]
        if self.threads:
            parts += ["--threads", str(self.threads)]
        if self.speed_rounds:
            parts += ["--speed-threads", str(self.speed_threads)]
        if self.latency_note:
            parts += ["--latency-note", self.latency_note]
        if self.device is not None:
            parts += ["--device", self.device]
        return " ".join(shlex.quote(p) for p in parts)

    def limit(self, kind: str) -> int | None:
        return self.limit_image if kind == "image" else self.limit_video

    def speed_limit(self, kind: str) -> int:
        return self.speed_limit_image if kind == "image" else self.speed_limit_video

    def data(self, kind: str) -> Path:
        d = self.data_image if kind == "image" else self.data_video
        return d if d is not None else self.work / "data"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d = {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if k.startswith("runs_") or k in ("mask_init", "merge_from")
                 else v)
             for k, v in d.items()}
        return {**d, "command": self.command}


# ---- planning -------------------------------------------------------------------------------------


def plan_cells(cfg: BenchConfig) -> list[Cell]:
    """Every cell of the bench, in run order: per replicate and kind, dense, methods x ratios, the
    ladder, the swap and token-floor controls; then the speed rounds (first replicate)."""
    cells: list[Cell] = []
    for seed in cfg.seeds:
        for kind in cfg.kinds:
            cells.append(Cell(kind, seed, "dense", 1.0))
            cells += [Cell(kind, seed, m, r) for r in cfg.ratios for m in cfg.methods]
            cells += [Cell(kind, seed, "evtp", r, f"ladder-{rung}") for r in cfg.ladder_ratios for rung in LADDER_RUNGS]
            cells.append(Cell(kind, seed, "dense", 1.0, "swap"))
            cells.append(Cell(kind, seed, FLOOR_METHOD, FLOOR_RATIO, "floor"))
    for i in range(cfg.speed_rounds):
        for kind in cfg.kinds:
            cells.append(Cell(kind, cfg.seeds[0], "dense", 1.0, f"speed{i}"))
            cells += [Cell(kind, cfg.seeds[0], SPEED_METHOD, r, f"speed{i}") for r in cfg.ratios]
    return cells


# ---- the results store (resume) --------------------------------------------------------------------


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts (gmacs, latency_ms) -> dotted columns."""
    flat: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                flat[f"{k}.{kk}"] = vv
        else:
            flat[k] = v
    return flat


def _parse(text: str) -> Any:
    if text == "":
        return None
    try:
        v = float(text)
    except ValueError:
        return text
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


def unflatten(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row back to a record (numbers parsed, dotted columns nested)."""
    rec: dict[str, Any] = {}
    for k, v in row.items():
        value = v if k in ("kind", "method", "variant", "run", "data") else _parse(v)
        if "." in k:
            head, tail = k.split(".", 1)
            if value is not None:
                rec.setdefault(head, {})[tail] = value
        else:
            rec[k] = value if k != "variant" else (v or "")
    return rec


class ResultStore:
    """OUT/results.csv: one row per finished cell, rewritten atomically after every cell."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    rec = unflatten(row)
                    try:
                        key = cell_key(rec["kind"], rec["seed"], rec["method"], rec["ratio"], rec["variant"])
                    except (KeyError, TypeError, ValueError):
                        raise ValueError(f"{self.path} is not a bench ivs results file (row {row}); "
                                         f"remove it or choose another --out") from None
                    self.records[key] = rec

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def is_current(self, key: str, origin: dict[str, Any]) -> bool:
        """Whether the cell's stored record was measured with this `origin` (run, data, limit, threads
        of a speed cell, device: `cell_origin`); a record from another configuration is stale, so a
        rerun with another --limit-*, run or --device does not reuse it. "device" is compared even when
        `origin` lacks it (a CPU cell): a stored GPU cell is not a CPU one."""
        rec = self.records.get(key)
        return rec is not None and all(_same(rec.get(k), origin.get(k)) for k in {*origin, "device"})

    def add(self, record: dict[str, Any]) -> None:
        key = cell_key(record["kind"], record["seed"], record["method"], record["ratio"], record["variant"])
        self.records[key] = record
        self.save()

    def save(self) -> None:
        from patchprune.data.io import atomic_path

        rows = [flatten(r) for r in self.records.values()]
        columns = list(FIELDS)
        for r in rows:
            columns += [c for c in r if c not in columns]
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=columns)
                w.writeheader()
                for r in rows:
                    w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})


# ---- evaluation -------------------------------------------------------------------------------------


def _evaluate_fn() -> Callable[..., dict]:
    from patchprune.ivs.evaluate import evaluate

    return evaluate


def _train_fn() -> Callable[..., Path]:
    from patchprune.ivs.train import train

    return train


def call_evaluate(evaluate: Callable[..., dict], options: dict[str, Any], **kwargs: Any) -> dict:
    """evaluate(**kwargs), plus `options=` (the selector's keyword options, e.g. EVTP's `ablation`)
    when the cell has any."""
    return evaluate(**kwargs, options=dict(options)) if options else evaluate(**kwargs)


METRICS = {"image": ("giou", "ciou"), "video": ("j", "f", "jf")}


def cell_origin(cell: Cell, rep: Replicate, cfg: BenchConfig) -> dict[str, Any]:
    """What a cell's result depends on beyond its key: run, data, sample limit, for a speed cell the
    torch threads it is timed with, and the device when it is not the CPU."""
    speed = cell.variant.startswith("speed")
    origin: dict[str, Any] = {"run": str(rep.run_image if cell.kind == "image" else rep.run_video),
                              "data": str(cfg.data(cell.kind)),
                              "limit": cfg.speed_limit(cell.kind) if speed else cfg.limit(cell.kind)}
    if speed:
        origin["threads"] = cfg.speed_threads
    if cfg.device is not None:
        origin["device"] = cfg.device
    return origin


def _same(stored: Any, wanted: Any) -> bool:
    return stored == wanted or (stored in (None, "") and wanted is None)


def evaluate_cell(cell: Cell, rep: Replicate, cfg: BenchConfig, evaluate: Callable[..., dict],
                  threads: int | None = None) -> dict[str, Any]:
    """Run one cell and return its record (key fields, its origin, metrics, GMACs, latency, seconds).
    threads: torch threads of an accuracy cell (speed cells use cfg.speed_threads)."""
    origin = cell_origin(cell, rep, cfg)
    t0 = time.perf_counter()
    res = call_evaluate(evaluate, cell.options(), run=origin["run"], data=origin["data"], method=cell.method,
                        ratio=cell.ratio, kind=cell.kind, limit=origin["limit"], swap_instruction=cell.variant == "swap",
                        threads=origin.get("threads", threads), progress=False, seed=cell.seed,
                        **cfg.device_kwargs())
    seconds = time.perf_counter() - t0
    if res.get("kind", cell.kind) != cell.kind:
        raise ValueError(f"{origin['run']} evaluated {res.get('kind')} samples for a {cell.kind} cell; check --data-{cell.kind}")
    rec: dict[str, Any] = {"kind": cell.kind, "seed": cell.seed, "method": cell.method, "ratio": cell.ratio,
                           "variant": cell.variant}
    for m in METRICS[cell.kind]:
        rec[m] = _number(res.get(m))
    for m in ("coverage_radius", "kept_tokens_per_frame", "samples", "skipped", "step"):
        rec[m] = _number(res.get(m))
    rec["gmacs"] = {k: _number(v) for k, v in (res.get("gmacs") or {}).items()}
    rec["latency_ms"] = {k: _number(v) for k, v in (res.get("latency_ms") or {}).items()}
    rec["seconds"] = seconds
    rec.update(origin)
    return rec


def _number(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ---- data and training --------------------------------------------------------------------------------


def prepare_replicates(cfg: BenchConfig, train: Callable[..., Path] | None = None,
                       log: Callable[[str], None] = print) -> list[Replicate]:
    """The runs to evaluate: the given ones (one per seed), else generate the data and train one dense
    tiny model per seed under cfg.work (skipping runs this bench already finished)."""
    if cfg.runs_image or cfg.runs_video:
        n = max(len(cfg.runs_image), len(cfg.runs_video))
        img = cfg.runs_image or (None,) * n
        vid = cfg.runs_video or (None,) * n
        return [Replicate(s, i, v) for s, i, v in zip(cfg.seeds, img, vid)]
    data = cfg.work / "data"
    if not (data / "refcoco").exists() or not (data / "ref-ytvos").exists():
        from patchprune.data.synth_refer import write_synth_refer

        log(f"bench ivs: generating the referring data set in {data} ({DATA_RECIPE})")
        write_synth_refer(data, seed=0, overwrite=True, progress=cfg.progress, **DATA_RECIPE)
    train = train or _train_fn()
    reps = []
    for i, seed in enumerate(cfg.seeds):
        run = cfg.work / f"run_seed{seed}"
        mark = run / TRAINED_MARK
        recipe = {"steps": cfg.steps, "mask_init": str(cfg.mask_init[i]) if cfg.mask_init else None}
        done = json.loads(mark.read_text()) if mark.exists() else {}
        if done and all(done.get(k) == v for k, v in recipe.items()):
            log(f"bench ivs: {run} already trained ({cfg.steps} steps), skipped")
        else:
            extra = {"mask_init": recipe["mask_init"]} if recipe["mask_init"] else {}
            extra.update(cfg.device_kwargs())
            log(f"bench ivs: training the dense tiny model, seed {seed}, {cfg.steps} steps"
                f"{', mask branch from ' + recipe['mask_init'] if recipe['mask_init'] else ''}"
                f"{' on ' + cfg.device if cfg.device else ''} -> {run}")
            t0 = time.perf_counter()
            run = Path(train(data, run, config="tiny", steps=cfg.steps, seed=seed, threads=cfg.threads,
                             progress=cfg.progress, **extra))
            from patchprune.data.io import write_json

            write_json(run / TRAINED_MARK, {**recipe, "seed": seed, "seconds": time.perf_counter() - t0,
                                            **cfg.device_kwargs()})
        reps.append(Replicate(seed, run, run))
    return reps


# ---- the run ----------------------------------------------------------------------------------------------


def machine(device: str | None = None) -> dict[str, Any]:
    """The machine the cells ran on; with a CUDA `device`, also its GPU's name ("gpu")."""
    import torch

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def run_bench(cfg: BenchConfig, evaluate: Callable[..., dict] | None = None, train: Callable[..., Path] | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Plan, prepare the runs, evaluate every missing cell (resume), write the report; return its summary."""
    import torch
    from tqdm import tqdm

    from patchprune.bench.ivs_report import write_report

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    threads = torch.get_num_threads()  # the accuracy cells' (speed cells set their own and this restores it)
    cfg.out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(cfg.out / RESULTS_FILE)
    t_start = time.perf_counter()
    reps = {r.seed: r for r in prepare_replicates(cfg, train, log)}
    evaluate = evaluate or _evaluate_fn()
    cells = [c for c in plan_cells(cfg) if _has_run(reps[c.seed], c.kind)]
    origins = {c.key: cell_origin(c, reps[c.seed], cfg) for c in cells}
    merged = merge_cells(store, cfg.merge_from, origins)
    if merged:
        log(f"bench ivs: {merged} cell(s) taken from {', '.join(map(str, cfg.merge_from))}")
    todo = [c for c in cells if not store.is_current(c.key, origins[c.key])]
    stale = sum(c.key in store for c in todo)
    log(f"bench ivs: {len(cells)} cells, {len(cells) - len(todo)} already in {store.path}, {len(todo)} to run"
        + (f" ({stale} stored from another run / data / limit / speed threads, measured again)" if stale else ""))
    skipped: list[str] = []
    bar = tqdm(todo, desc="bench ivs", unit="cell", disable=not cfg.progress, dynamic_ncols=True)
    for cell in bar:
        bar.set_postfix_str(f"{cell.kind} s{cell.seed} {cell.method}@{cell.ratio:g} {cell.variant}".strip())
        try:
            store.add(evaluate_cell(cell, reps[cell.seed], cfg, evaluate, threads))
        except ValueError as err:  # e.g. no sample with another object's expression to swap in
            if cell.variant != "swap":
                raise
            skipped.append(f"{cell.key}: {err}")
    meta = {"config": cfg.as_dict(), "machine": machine(cfg.device),
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_seconds_this_invocation": time.perf_counter() - t_start, "skipped": sorted(set(skipped)),
            "replicates": [{"seed": r.seed, "run_image": str(r.run_image), "run_video": str(r.run_video)}
                           for r in reps.values()]}
    for rep in reps.values():
        mark = None if rep.run_image is None else Path(rep.run_image) / TRAINED_MARK
        if mark is not None and mark.exists():
            meta.setdefault("training", {})[str(rep.seed)] = json.loads(mark.read_text())
    wanted = {c.key for c in cells}
    records = [r for k, r in store.records.items() if k in wanted]
    return write_report(records, meta, cfg.out)


def merge_cells(store: ResultStore, folders: tuple[Path, ...], wanted: dict[str, dict[str, Any]]) -> int:
    """Fill `store` from other bench outputs (their results.csv): every wanted cell (key -> its
    origin, `cell_origin`) that `store` lacks or holds from another origin is taken from the first
    folder holding it with that origin. Returns how many cells were taken."""
    others = [ResultStore(Path(folder) / RESULTS_FILE) for folder in folders]
    taken = 0
    for key, origin in wanted.items():
        if store.is_current(key, origin):
            continue
        source = next((o for o in others if o.is_current(key, origin)), None)
        if source is not None:
            store.records[key] = source.records[key]
            taken += 1
    if taken:
        store.save()
    return taken


def _has_run(rep: Replicate, kind: str) -> bool:
    return (rep.run_image if kind == "image" else rep.run_video) is not None


# ---- command line -----------------------------------------------------------------------------------------


def _existing_dirs(text: str | None, name: str, written_by: str = "train ivs") -> tuple[Path, ...]:
    """Comma-separated run folders of option `--name`; a one-line error for one that is not a folder."""
    paths = tuple(Path(p) for p in comma_list(f"--{name}", text, str, unique=True))
    for p in paths:
        if not p.is_dir():
            raise ValueError(f"--{name} {p} is not a folder; give a run folder written by `patchprune {written_by}`")
    return paths


def config_from_args(args: Any) -> BenchConfig:
    """Validate the options (one-line ValueErrors naming the option) into a BenchConfig."""
    from patchprune.validate import check_int, check_output_folder

    preset = PRESETS["quick" if args.quick else "full"]
    seeds = tuple(comma_list("--seeds", args.seeds, int, unique=True)) or preset["seeds"]
    if any(s < 0 for s in seeds):
        raise ValueError(f"--seeds must be integers >= 0, got {args.seeds}")
    ratios = tuple(comma_list("--ratios", args.ratios, float, unique=True)) or RATIOS
    if any(not 0 < r < 1 for r in ratios):
        raise ValueError(f"--ratios must lie in (0, 1), got {args.ratios}")
    methods = tuple(comma_list("--methods", args.methods, str, unique=True)) or METHODS
    from patchprune.select import available_methods

    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise ValueError(f"--methods: unknown selection method(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(available_methods())}")
    runs_image = _existing_dirs(args.run_image, "run-image")
    runs_video = _existing_dirs(args.run_video, "run-video")
    for name, runs in (("run-image", runs_image), ("run-video", runs_video)):
        if runs and len(runs) != len(seeds):
            raise ValueError(f"--{name} has {len(runs)} run(s) but --seeds has {len(seeds)} seed(s); give one "
                             f"run per seed (comma-separated) or --seeds with {len(runs)} value(s)")
    for name in ("data_image", "data_video"):
        d = getattr(args, name)
        if d is not None and not Path(d).is_dir():
            raise ValueError(f"--{name.replace('_', '-')} {d} is not a folder; give a `patchprune data synth-refer` "
                             f"output or a RefCOCO / Ref-YouTube-VOS layout folder")
    for kind, runs, data in (("image", runs_image, args.data_image), ("video", runs_video, args.data_video)):
        if runs and data is None:
            raise ValueError(f"--run-{kind} needs the data it is evaluated on: add --data-{kind} (e.g. the folder "
                             f"the run was trained on)")
    kinds = tuple(k for k, runs in (("image", runs_image), ("video", runs_video)) if runs) or KINDS
    mask_init = _existing_dirs(args.mask_init, "mask-init", written_by="train vis")
    merge_from = _existing_dirs(args.merge_from, "merge-from", written_by="bench ivs")
    missing = [str(f) for f in merge_from if not (f / RESULTS_FILE).is_file()]
    if missing:
        raise ValueError(f"--merge-from {missing[0]} holds no {RESULTS_FILE}; give --out folders of earlier "
                         f"`patchprune bench ivs` runs")
    if mask_init and (runs_image or runs_video):
        raise ValueError("--mask-init sets the recipe of the runs the bench trains; it does not go with "
                         "--run-image / --run-video (train those with `train ivs --mask-init`)")
    if mask_init and len(mask_init) != len(seeds):
        raise ValueError(f"--mask-init has {len(mask_init)} VIS run(s) but --seeds has {len(seeds)} seed(s); give "
                         f"one dense VIS run per seed (comma-separated)")
    limit_image = preset["limit_image"] if args.limit_image is None else check_int("--limit-image", args.limit_image, 1)
    limit_video = preset["limit_video"] if args.limit_video is None else check_int("--limit-video", args.limit_video, 1)
    steps = preset["steps"] if args.steps is None else check_int("--steps", args.steps, 1)
    speed_rounds = preset["speed_rounds"] if args.speed_rounds is None else check_int("--speed-rounds",
                                                                                      args.speed_rounds, 0)
    threads = None if args.threads is None else check_int("--threads", args.threads, 1)
    speed_threads = check_int("--speed-threads", args.speed_threads, 1)
    ladder = tuple(r for r in ratios if r in preset["ladder_ratios"]) or ratios[-1:]
    device = _device(args.device)
    return BenchConfig(
        out=check_output_folder("--out", args.out), work=check_output_folder("--work", args.work), quick=args.quick,
        seeds=seeds, methods=methods, ratios=ratios, ladder_ratios=ladder, kinds=kinds,
        limit_image=limit_image, limit_video=limit_video, speed_rounds=speed_rounds,
        speed_limit_image=preset["speed_limit_image"], speed_limit_video=preset["speed_limit_video"], steps=steps,
        runs_image=runs_image, runs_video=runs_video,
        data_image=Path(args.data_image) if args.data_image else None,
        data_video=Path(args.data_video) if args.data_video else None,
        threads=threads, speed_threads=speed_threads, progress=not args.no_progress,
        latency_note=args.latency_note or "", mask_init=mask_init, merge_from=merge_from, device=device)


def _device(text: str | None) -> str | None:
    """--device as the config keeps it: None for the CPU (the default), else the resolved device's name
    ("cuda" -> "cuda:0"); a one-line ValueError naming --device for one this machine lacks."""
    from patchprune.train.distributed import run_device

    dev = run_device(text)
    return None if dev.type == "cpu" else str(dev)


def _run(args: Any) -> int:
    cfg = config_from_args(args)
    summary = run_bench(cfg)
    print(summary["text"])
    return 0


def register(groups: CommandGroups) -> None:
    """Add `patchprune bench ivs` (heavy imports happen in the handler)."""
    p = groups.bench.add_parser("ivs", help="instructed segmentation: the EVTP paper's Tables 1-4 and Fig. 3 "
                                            "(accuracy, cost, speed-up, ablation, coverage) over methods x ratios")
    p.add_argument("--run-image", default=None, help="trained run folder(s) for the image set, one per seed "
                                                     "(comma-separated; default: train them)")
    p.add_argument("--run-video", default=None, help="trained run folder(s) for the video set, one per seed")
    p.add_argument("--data-image", default=None, help="image data folder (default: the generated one)")
    p.add_argument("--data-video", default=None, help="video data folder (default: the generated one)")
    p.add_argument("--quick", action="store_true",
                   help="one seed, 120 image / 16 video expressions, ladder at 20 %% only, 3 speed rounds, "
                        "300 training steps when it trains (about 30 min on 2 CPU cores)")
    p.add_argument("--seeds", default=None, help="comma-separated replicate seeds (default 0,1,2; --quick: 0)")
    p.add_argument("--methods", default=None, help=f"comma-separated (default {','.join(METHODS)})")
    p.add_argument("--ratios", default=None, help="comma-separated keep ratios (default 0.05,0.1,0.2)")
    p.add_argument("--limit-image", type=int, default=None, help="evaluate the first N image expressions (default: all; quick 120)")
    p.add_argument("--limit-video", type=int, default=None, help="evaluate the first N video expressions (default: all; quick 16)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of each bench-trained model (default 1800; quick 300)")
    p.add_argument("--mask-init", default=None, metavar="VIS_RUN[,VIS_RUN...]",
                   help="train the bench's runs with `train ivs --mask-init`: one dense VIS run per seed "
                        "(the IVS recipe where such runs exist, docs/ivs.md)")
    p.add_argument("--speed-rounds", type=int, default=None, help="interleaved speed rounds (default 5; quick 3)")
    p.add_argument("--out", default="benchmarks/ivs", help="report folder (results.csv, tables, plots)")
    p.add_argument("--work", default="runs/bench_ivs", help="folder for the generated data and trained runs")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--merge-from", default=None, metavar="OUT[,OUT...]",
                   help="first take the cells of these earlier --out folders (e.g. parts run side by side); "
                        "cells measured on another run, data or limit are measured again")
    p.add_argument("--speed-threads", type=int, default=1,
                   help="torch threads of the speed rounds (default 1: timing on one core; more threads than "
                        "idle cores give noisy rounds)")
    p.add_argument("--latency-note", default=None, help="a label printed next to every latency figure")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)
