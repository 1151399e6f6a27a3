"""Turn a `train vis` run folder into a shipped reference checkpoint (see `patchprune.checkpoints`), and
ship `train vis` / `train ivs` run folders weights-only.

`export_run_folder(run, out)` writes a weights-only copy of a run folder (config.json, train.json, a
checkpoint.safetensors in fp16, or fp32 with `half=False`, without optimiser state, the run's eval JSONs;
an IVS run's tokenizer): a folder every command that reads run folders accepts (`eval vis --run`,
`train vis --init`, `bench vis --use`, `bench ivs --mask-init`; `eval ivs --run`, `bench ivs --run-image`),
small enough to commit, so later work does not have to retrain it.

`export_reference(run, name)` writes `<out>/vis-<config>-<name>.safetensors` (the model's and the
pruner's weights, floating tensors cast to fp16, no optimiser state), `<out>/vis-<config>-<name>.json`
(config, method, target, the generated data set's generator settings, training settings and
time, the run's metrics and the metrics of the fp16 file itself), updates `<out>/manifest.json`
with both files' SHA-256, and writes the model card (`patchprune.model_card`). Every file is
written atomically. Used by `scripts/export_reference_checkpoints.py`.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from patchprune.checkpoints import MANIFEST, MANIFEST_FORMAT, WEIGHTS_DIR, sha256_file
from patchprune.data.io import atomic_path, read_json, write_json

# Metrics kept from an `eval vis` JSON (the per-video results are left out).
METRIC_KEYS = ("videos", "frames", "AP", "AP50", "AP75", "AR1", "AR10", "AP_bbox", "AP_segm", "pkr",
               "keep_ratio_per_block", "ioi", "gmacs", "fps", "threads", "tracker")


def find_data(data: str, run: Path) -> Path | None:
    """The run's data folder: as written in train.json, else relative to the run's grandparent / parent."""
    for cand in (Path(data), run.parent.parent / data, run.parent / data):
        if cand.is_dir():
            return cand.resolve()
    return None


def data_info(data: Path | None, recorded: str) -> dict[str, Any]:
    """Generator settings (seed, frames, size, difficulty) and video counts of a YouTube-VIS folder."""
    from patchprune.vis.data import find_split

    info: dict[str, Any] = {"path": recorded}
    if data is None:
        return {**info, "found": False}
    for split in ("train", "valid"):
        try:
            ann, _ = find_split(data, split)
        except FileNotFoundError:
            continue
        js = read_json(ann, f"{split} annotations")
        info[f"{split}_videos"] = len(js.get("videos", []))
        if split == "train":
            gen = js.get("info", {})
            info["generator"] = {k: gen[k] for k in ("generator", "seed", "frames", "size", "difficulty") if k in gen}
            info["categories"] = {str(c["id"]): c["name"] for c in js.get("categories", [])}
    return info


def machine_description() -> str:
    """CPU model, core count, OS and torch version of this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, torch {torch.__version__}, {gpu}"


def write_weights_only(checkpoint: Path, out: Path, meta: dict[str, Any], half: bool = True) -> Path:
    """Copy the "module/model/..." and "module/policies/..." tensors of a training checkpoint to `out`
    (floating tensors as fp16 unless `half` is False), in the `train.checkpoint` layout so
    `load_checkpoint` reads it."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors = {}
    with safe_open(str(checkpoint), framework="pt") as fh:
        step = (fh.metadata() or {}).get("step", "0")
        for key in fh.keys():
            if key.startswith(("module/model/", "module/policies/")):
                t = fh.get_tensor(key)
                tensors[key] = (t.to(torch.float16) if half and t.is_floating_point() else t).contiguous()
    metadata = {"step": step, "meta": json.dumps(meta), "optim": "null"}
    with atomic_path(out) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return out


def export_run_folder(run: str | Path, out: str | Path, extra_files: tuple[str, ...] = ("eval.json",),
                      half: bool = True) -> Path:
    """Copy run folder `run` (of `train vis` or `train ivs`) to `out` as weights only: config.json,
    train.json (and an IVS run's tokenizer.json) as they are, the checkpoint's model (and pruning-module)
    tensors (in fp16 when `half`; fp32 keeps the run's figures exact) with the checkpoint's step and
    metadata (config, settings, loss history), and each of `extra_files` the run has. Refuses an
    existing checkpoint at `out` (never overwrites a shipped run)."""
    import shutil

    from patchprune.run_config import CONFIG_FILE
    from patchprune.train.checkpoint import checkpoint_meta
    from patchprune.vis.run import CHECKPOINT, SETTINGS

    run, out = Path(run), Path(out)
    ckpt = run / CHECKPOINT
    meta = checkpoint_meta(ckpt)
    own_files = _check_run_folder(run, ckpt, meta)
    if (out / CHECKPOINT).exists():
        raise FileExistsError(f"{out / CHECKPOINT} exists; pick a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, SETTINGS, *own_files, *extra_files):
        if (run / name).is_file():
            shutil.copyfile(run / name, out / name)
    write_weights_only(ckpt, out / CHECKPOINT, meta, half)
    return out


def _check_run_folder(run: Path, ckpt: Path, meta: dict[str, Any]) -> tuple[str, ...]:
    """Check that `ckpt` holds the model `run`'s config.json describes (a complete run folder of one
    model); the files besides config and settings a run of its kind needs."""
    if "ivs_config" in meta:
        from patchprune.ivs.config import IVSConfig
        from patchprune.ivs.run import check_compatible as check_ivs
        from patchprune.ivs.tokenizer import TOKENIZER_FILE

        check_ivs(ckpt, IVSConfig.load(run))
        if not (run / TOKENIZER_FILE).is_file():
            raise FileNotFoundError(f"{run / TOKENIZER_FILE} not found: an IVS run folder needs its tokenizer")
        return (TOKENIZER_FILE,)
    from patchprune.vis.config import VISConfig
    from patchprune.vis.run import check_compatible as check_vis

    check_vis(ckpt, VISConfig.load(run))
    return ()


def run_metrics(run: Path, eval_json: str | Path | None) -> dict[str, Any] | None:
    """The metrics of an `eval vis --json` output (given, or RUN/eval.json / RUN/../<run>_eval.json)."""
    cands = [Path(eval_json)] if eval_json else [run / "eval.json", run / "eval_valid.json",
                                                 run.parent / f"{run.name}_eval.json"]
    for c in cands:
        if c.is_file():
            js = read_json(c, "eval vis JSON")
            return {k: js[k] for k in METRIC_KEYS if k in js}
    if eval_json:
        raise FileNotFoundError(f"eval JSON {eval_json} not found")
    return None


def shipped_metrics(name: str, root: Path, data: Path, max_videos: int | None = None) -> dict[str, Any]:
    """`eval vis` metrics (no timing) of the fp16 file as the loader gives it, on the data's valid split."""
    from patchprune.checkpoints import load_reference
    from patchprune.vis.data import load_split, square_size
    from patchprune.vis.evaluate import evaluate

    import torch

    ref = load_reference(name, root)
    torch.manual_seed(0)  # VPP draws Gumbel noise at inference: a fixed seed makes the figures repeatable
    split = load_split(data, "valid", square_size(ref.model.config.img_size), ref.model.config.categories, max_videos)
    m = evaluate(ref.model, ref.encoder, split, timing_frames=0)
    return {k: m[k] for k in METRIC_KEYS if k in m}


def update_manifest(out: Path, name: str, entry: dict[str, Any]) -> Path:
    path = out / MANIFEST
    data = read_json(path, "manifest") if path.is_file() else {"format": MANIFEST_FORMAT, "checkpoints": {}}
    data["checkpoints"][name] = entry
    return write_json(path, data, indent=2)


def export_reference(run: str | Path, name: str, out: str | Path | None = None, eval_json: str | Path | None = None,
                     card_dir: str | Path | None = None, machine: str | None = None, check: bool = True,
                     check_videos: int | None = None, commands: list[str] | None = None) -> dict[str, Any]:
    """Ship run folder `run` as reference `name`; returns the written JSON info (see the module docstring).

    check: evaluate the fp16 file on the run's valid split (`metrics_shipped`), so the card states what
    the shipped weights score, not only what the fp32 run scored. commands: the exact commands that made
    the run (data, stage 1, stage 2), for the card; default: rebuilt from the recorded settings."""
    from patchprune.model_card import default_commands, write_card
    from patchprune.vis.config import VISConfig
    from patchprune.vis.run import CHECKPOINT, SETTINGS, check_compatible, checkpoint_meta

    run = Path(run)
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"name must be a short identifier like 'vpp-0.40', got {name!r}")
    out = Path(out) if out is not None else WEIGHTS_DIR
    config = VISConfig.load(run)
    ckpt = run / CHECKPOINT
    check_compatible(ckpt, config)
    settings = read_json(run / SETTINGS, "training settings")
    meta = checkpoint_meta(ckpt)
    last = (meta.get("history") or [{}])[-1]
    method = settings.get("method", "dense")
    data = find_data(settings["data"], run)
    stem = f"vis-{config.name}-{name}"
    info: dict[str, Any] = {
        "name": name, "method": method, "target": None if method == "dense" else float(settings["target"]),
        "tracker": "minvis", "vis_config": config.to_json(), "data": data_info(data, settings["data"]),
        "training": {"settings": settings, "steps_done": int(last.get("step", -1)) + 1,
                     "cpu_minutes": round(float(last.get("cpu_minutes", 0.0)), 2),
                     "wall_minutes": round(float(last.get("minutes", 0.0)), 2),
                     "machine": machine or machine_description(),
                     "source_checkpoint_sha256": sha256_file(ckpt)},
        "metrics": run_metrics(run, eval_json),
    }
    if settings.get("init") and method != "dense":
        init = find_data(settings["init"], run)  # a folder, found like the data folder
        if init is not None and (init / CHECKPOINT).is_file():
            h = (checkpoint_meta(init / CHECKPOINT).get("history") or [{}])[-1]
            info["training"]["init_cpu_minutes"] = round(float(h.get("cpu_minutes", 0.0)), 2)
    info["commands"] = commands or default_commands(info)
    weights = write_weights_only(ckpt, out / f"{stem}.safetensors", {"vis_config": config.to_json(), "reference": name})
    cfg_path = write_json(out / f"{stem}.json", info, indent=2)
    card = Path(card_dir) / f"{name}.md" if card_dir is not None else None
    entry = {"weights": weights.name, "config": cfg_path.name, "card": f"docs/models/{name}.md",
             "bytes": weights.stat().st_size + cfg_path.stat().st_size,
             "sha256": {weights.name: sha256_file(weights), cfg_path.name: sha256_file(cfg_path)}}
    update_manifest(out, name, entry)
    if check:
        if data is None:
            raise FileNotFoundError(f"data folder {settings['data']} of run {run} not found; pass check=False "
                                    "to ship without evaluating the fp16 file")
        info["metrics_shipped"] = shipped_metrics(name, out, data, check_videos)
        cfg_path = write_json(out / f"{stem}.json", info, indent=2)
        entry["bytes"] = weights.stat().st_size + cfg_path.stat().st_size
        entry["sha256"][cfg_path.name] = sha256_file(cfg_path)
        update_manifest(out, name, entry)
    if card is not None:
        write_card(card, info, entry)
    return info
