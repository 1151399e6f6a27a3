"""The fgseg study behind `patchprune bench fgseg`: a fast end-to-end check that learned patch pruning works.

On synthetic videos (patchprune.data.synth) it trains a small 12-block ViT with a light per-pixel
foreground / category head densely, fine-tunes every pruning method from that dense checkpoint at
the 55 % and 40 % PKR targets with the spec's three-frame chain, and evaluates on held-out videos
streamed frame by frame (several videos in lock-step): mIoU, PKR, IoI (S / M / L), MACs and the
speed-up per method (batch 1 and batched, on the run's device), plus FGS per layer of the dense model.
Writes results.json, README.md (tables) and PNG plots (FGS per layer, keep ratio per layer) to the
output folder.

This module runs one seed (`run_seed`), aggregates seeds and writes the report; the model, the
training stages and the scoring live beside it (`model.py`, `training.py`, `evaluation.py`).

The device (`run_seed(..., device=)`, `--device`; the CPU by default) is not part of the
configuration (`FgSegBenchConfig`) and so not of the work folder's hash (`training_fingerprint`): it
says where a run computes, not what it trains, so the checkpoints of a CPU run are reused (loaded, not
trained again) by a CUDA run of the same configuration and the other way round, e.g. to re-time CPU-
trained models on a GPU. Each checkpoint's meta records the device that trained it (finished ones are
loaded, never re-saved); results.json and README.md name the device the figures were measured on.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from patchprune.fgseg.config import DENSE_FT, FGS_LAYERS, IOI_THRESHOLDS, FgSegBenchConfig
from patchprune.fgseg.evaluation import evaluate, foreground_selectivity, streaming_macs, timing
from patchprune.fgseg.training import finetune, make_data, train_dense

# ------------------------------------------------------------------------------------------------
# One seed


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        tqdm.write(msg)


def run_seed(cfg: FgSegBenchConfig, seed: int, workdir: Path, progress: bool, quiet: bool,
             device: torch.device | str | None = None) -> dict[str, Any]:
    """One seed end to end: data, dense training, FGS, every fine-tune, evaluation, MACs and timing;
    checkpoints go to `workdir` (resumable). Returns the seed's rows, FGS and timings.

    device: where the models train, run and are timed (default the CPU; data and seeded draws stay on
    the CPU, see `patchprune.fgseg.training`)."""
    dev = torch.device("cpu") if device is None else torch.device(device)
    workdir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    train = make_data(seed, "train", cfg.train_videos, cfg.frames, cfg.size, progress=progress, **cfg.difficulty)
    valid = make_data(seed, "valid", cfg.valid_videos, cfg.frames, cfg.size, progress=progress, **cfg.difficulty)
    times["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    weight = train.class_weights(cfg.class_weight_power)
    dense, dense_hist = train_dense(cfg, seed, train, workdir, progress, weight, device=dev)
    times["dense_train"] = time.perf_counter() - t0
    _log(f"[seed {seed}] dense trained in {times['dense_train']:.0f}s (last loss {dense_hist[-1]['loss']:.3f})", quiet)

    t0 = time.perf_counter()
    fgs_res = foreground_selectivity(dense, train, valid, cfg, seed, progress)
    times["fgs"] = time.perf_counter() - t0

    rows = []
    t0 = time.perf_counter()
    dense_eval = evaluate(dense, None, valid, valid.num_classes, seed, progress, "dense")
    rows.append({"method": "dense", "target": 1.0, **dense_eval, "finetune_final": None})
    entries: dict[str, tuple[Any, Any]] = {"dense": (dense, None)}
    times["eval"] = time.perf_counter() - t0
    times["finetune"] = 0.0
    runs = [(DENSE_FT, 1.0)] if cfg.dense_finetune else []
    runs += [(m, t) for m in cfg.methods for t in cfg.targets]
    for method, target in runs:
        t0 = time.perf_counter()
        model, pruner, hist = finetune(cfg, seed, dense, train, method, target, workdir, progress, weight, device=dev)
        times["finetune"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        res = evaluate(model, pruner, valid, valid.num_classes, seed, progress, f"{method}@{target}")
        times["eval"] += time.perf_counter() - t0
        last = hist[-1] if hist else {}
        rows.append({"method": method, "target": target, **res,
                     "finetune_final": {k: last.get(k) for k in ("seg", "sparsity", "pkr")}})
        entries[f"{method}@{target}"] = (model, pruner)
        _log(f"[seed {seed}] {method}@{target}: mIoU {res['miou']:.2f} PKR {res['pkr']:.3f} IoI {res['ioi']:.3f}",
             quiet)

    t0 = time.perf_counter()
    names = list(entries)
    macs = {name: streaming_macs(*entries[name], valid) for name in names}
    latency = timing(entries, valid, cfg.timing_repeats, progress)
    batched = timing(entries, valid, max(2, cfg.timing_repeats // 2), progress, batch=cfg.timing_batch)
    times["speed"] = time.perf_counter() - t0
    for name, row in zip(names, rows):
        row["gmacs"] = macs[name] / 1e9
        row["macs_ratio"] = macs[name] / macs["dense"]
        row["latency_ms"] = latency[name]
        row["speedup"] = latency["dense"] / latency[name]
        row["batch_ms"] = batched[name]
        row["speedup_batch"] = batched["dense"] / batched[name]
    return {"seed": seed, "results": rows, **fgs_res, "times_s": times,
            "dense_final_loss": dense_hist[-1]["loss"] if dense_hist else None}


# ------------------------------------------------------------------------------------------------
# Aggregation and reports

SCALARS = ("miou", "fg_iou", "pkr", "ioi", "ioi_S", "ioi_M", "ioi_L", "gmacs", "macs_ratio", "latency_ms", "speedup",
           "batch_ms", "speedup_batch")


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and std over seeds when there are several) of every figure."""
    first = per_seed[0]
    results = []
    for i, row in enumerate(first["results"]):
        agg: dict[str, Any] = {"method": row["method"], "target": row["target"]}
        for key in SCALARS:
            vals = [s["results"][i][key] for s in per_seed if s["results"][i][key] is not None]
            agg[key] = float(np.mean(vals)) if vals else None
            if len(per_seed) > 1:
                agg[key + "_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        kr = np.array([s["results"][i]["keep_ratio_per_block"] for s in per_seed])
        agg["keep_ratio_per_block"] = kr.mean(0).tolist()
        results.append(agg)
    out = {"results": results, "fgs": np.mean([s["fgs"] for s in per_seed], 0).tolist(),
           "fgs_balanced": np.mean([s["fgs_balanced"] for s in per_seed], 0).tolist()}
    if len(per_seed) > 1:
        out["fgs_std"] = np.std([s["fgs"] for s in per_seed], 0, ddof=1).tolist()
    return out


def _fmt(row: dict[str, Any], key: str, digits: int, scale: float = 1.0) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    s = f"{v * scale:.{digits}f}"
    std = row.get(key + "_std")
    return s + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def checks(summary: dict[str, Any]) -> list[str]:
    """The issue's expected shape of the result, checked on the means."""
    rows = {(r["method"], r["target"]): r for r in summary["results"]}
    out = []
    dense = rows.get(("dense", 1.0))
    vpp = rows.get(("vpp", 0.55))
    dense_ft = rows.get((DENSE_FT, 1.0))
    if dense and vpp:
        gap = dense["miou"] - vpp["miou"]
        ok = gap <= 1.0 and vpp["pkr"] <= 0.56
        ft = f", gap to dense-ft {dense_ft['miou'] - vpp['miou']:+.2f}" if dense_ft else ""
        out.append(f"VPP@0.55 within 1.0 mIoU of dense with PKR <= 0.56: {'yes' if ok else 'NO'} "
                   f"(gap {gap:+.2f} mIoU{ft}, PKR {vpp['pkr']:.3f})")
    for target in (0.55, 0.40):
        v = rows.get(("vpp", target))
        for other in ("svit", "dynamicvit"):
            o = rows.get((other, target))
            if v and o:
                better = v["miou"] > o["miou"] and (v["ioi"] or 0) > (o["ioi"] or 0)
                out.append(f"VPP@{target} above {other} in mIoU and IoI: {'yes' if better else 'NO'} "
                           f"(mIoU {v['miou']:.2f} vs {o['miou']:.2f}, IoI {v['ioi']:.3f} vs {o['ioi']:.3f}, "
                           f"PKR {v['pkr']:.3f} vs {o['pkr']:.3f})")
    f = summary["fgs"]
    rising = f[-1] > f[0] and np.corrcoef(np.arange(len(f)), f)[0, 1] > 0.7
    out.append(f"FGS rising with depth: {'yes' if rising else 'NO'} (layer 0 {f[0]:.3f}, layer 6 {f[6]:.3f}, "
               f"last {f[-1]:.3f}; chance 0.5)")
    return out


def training_minutes(per_seed: list[dict[str, Any]]) -> float:
    """Minutes this invocation spent training (dense + fine-tunes over all seeds): with finished
    checkpoints in the work folder a run only evaluates, so its wall time alone would mislead."""
    return sum(s["times_s"].get("dense_train", 0.0) + s["times_s"].get("finetune", 0.0) for s in per_seed) / 60


def write_report(out_dir: Path, cfg: FgSegBenchConfig, summary: dict[str, Any], per_seed: list[dict[str, Any]],
                 wall_s: float, mode: str, check_lines: list[str] | None = None,
                 device: torch.device | str | None = None) -> str:
    """Write results.json, README.md (tables) and the plots to `out_dir`; returns the README text.

    check_lines: `checks(summary)` when the caller has it already (computed here otherwise).
    device: the device the seeds ran on (default the CPU; named in the report and its speed-up columns).
    """
    from patchprune.data.io import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cpu") if device is None else torch.device(device)
    env = _environment(cfg, dev)
    where = "CPU" if dev.type == "cpu" else dev.type.upper()
    found = checks(summary) if check_lines is None else check_lines
    payload = {"mode": mode, "config": asdict(cfg), "wall_s": wall_s, "environment": env,
               **summary, "checks": found, "per_seed": per_seed}
    write_json(out_dir / "results.json", payload, indent=1)
    lines = [
        f"# fgseg: learned patch pruning on synthetic videos ({mode})",
        "",
        f"Generated by `patchprune bench fgseg{' --quick' if mode == 'quick' else ''}"
        f"{'' if dev.type == 'cpu' else ' --device ' + dev.type}` in {wall_s / 60:.1f} min "
        f"({training_minutes(per_seed):.1f} min of it training: stages whose finished checkpoints were in the "
        f"work folder are loaded, not trained again; seeds {list(cfg.seeds)}; {env['device']}, "
        f"{env['threads']} threads). "
        f"ViT {cfg.depth} blocks, C={cfg.dim}, {cfg.heads} heads, patch {cfg.patch}, {cfg.size}px; "
        f"dense {cfg.dense_steps} steps x {cfg.dense_batch}, fine-tune {cfg.finetune_steps} steps x "
        f"{cfg.finetune_batch} chains; {cfg.valid_videos} held-out videos x {cfg.frames} frames streamed.",
        "",
        "| method | target | mIoU | fg IoU | PKR | IoI | IoI S | IoI M | IoI L | GMACs | MACs ratio "
        f"| {where} speed-up (batch 1) | {where} speed-up (batch {cfg.timing_batch}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["results"]:
        lines.append(
            f"| {r['method']} | {r['target']:.2f} | {_fmt(r, 'miou', 2)} | {_fmt(r, 'fg_iou', 2)} | {_fmt(r, 'pkr', 3)} "
            f"| {_fmt(r, 'ioi', 3)} | {_fmt(r, 'ioi_S', 3)} | {_fmt(r, 'ioi_M', 3)} | {_fmt(r, 'ioi_L', 3)} "
            f"| {_fmt(r, 'gmacs', 3)} | {_fmt(r, 'macs_ratio', 3)} | {_fmt(r, 'speedup', 2)} "
            f"| {_fmt(r, 'speedup_batch', 2)} |")
    lines += ["", "FGS per layer (dense model; layer l = input of block l, 12 = last block's output; chance 0.5):", "",
              "| layer | " + " | ".join(str(l) for l in FGS_LAYERS) + " |",
              "|---" * (len(FGS_LAYERS) + 1) + "|",
              "| accuracy | " + " | ".join(f"{v:.3f}" for v in summary["fgs"]) + " |",
              "| balanced accuracy | " + " | ".join(f"{v:.3f}" for v in summary["fgs_balanced"]) + " |",
              "", "Expected shape (issue 5) checked on these numbers:", ""]
    lines += [f"- {c}" for c in found]
    lines += ["", "Plots: `fgs_per_layer.png`, `keep_ratio_per_layer.png`. Raw numbers: `results.json`.",
              f"IoI size buckets: S < {IOI_THRESHOLDS[0]:.1%}, M < {IOI_THRESHOLDS[1]:.1%}, L >= "
              f"{IOI_THRESHOLDS[1]:.1%} of the frame area; a patch belongs to an instance when covered by half.", ""]
    readme = "\n".join(lines)
    (out_dir / "README.md").write_text(readme)
    _plots(out_dir, summary)
    return readme


def _plots(out_dir: Path, summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(FGS_LAYERS, summary["fgs"], "o-", label="accuracy (FGS)")
    ax.plot(FGS_LAYERS, summary["fgs_balanced"], "s--", label="balanced accuracy")
    if "fgs_std" in summary:
        f, s = np.array(summary["fgs"]), np.array(summary["fgs_std"])
        ax.fill_between(FGS_LAYERS, f - s, f + s, alpha=0.2)
    ax.axhline(0.5, color="gray", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("layer (input of block l)")
    ax.set_ylabel("foreground probe accuracy")
    ax.set_title("Foreground selectivity of the dense model")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "fgs_per_layer.png", dpi=120)
    plt.close(fig)

    targets = sorted({r["target"] for r in summary["results"] if r["method"] not in ("dense", DENSE_FT)},
                     reverse=True)
    fig, axes = plt.subplots(1, max(1, len(targets)), figsize=(5.5 * max(1, len(targets)), 3.5), squeeze=False)
    styles = {"vpp": "o-", "svit": "s-", "dynamicvit": "^-", "tps": "v--"}
    for ax, target in zip(axes[0], targets):
        for r in summary["results"]:
            if r["target"] == target:
                kr = r["keep_ratio_per_block"]
                ax.plot(range(len(kr)), kr, styles.get(r["method"], "o-"), ms=4,
                        label=f"{r['method']} (PKR {r['pkr']:.2f})")
        ax.set_title(f"keep ratio per block, target {target:.0%}")
        ax.set_xlabel("block")
        ax.set_ylabel("tokens processed / N")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "keep_ratio_per_layer.png", dpi=120)
    plt.close(fig)


def _device_name(device: torch.device) -> str:
    """The report's name of `device`: the CPU's model and cores, or the GPU's name."""
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type != "cpu":
        return str(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _environment(cfg: FgSegBenchConfig, device: torch.device) -> dict[str, Any]:
    return {"device": _device_name(device),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": "float32",
            "image_size": cfg.size,
            "timing": f"streaming, median of interleaved repeats; batch 1 (latency) and batch {cfg.timing_batch} "
                      "(videos in lock-step, throughput)"}
