"""`eval ivs`: accuracy, cost and coverage of a trained run under a token-selection method and ratio.

Images: gIoU / cIoU (`metrics.refer`) of the top-1 query's mask. Videos: each frame is a key frame
with its `ref_frames` neighbours as reference frames (their tokens pruned too); J, F, J&F over all
frames of each expression's clip (`metrics.davis`, nothing skipped: every frame is predicted; an
empty prediction when the top query's sigmoid(logit) < 0.5, so frames the object left can score 1).
Cost: MACs per component (matmul-type ops, as `torch.utils.flop_counter` counts them, / 2; one
batch-1 forward of the first sample) and measured latency per component (batch 1, mean over
`timing` samples after one warm-up). Coverage: mean coverage radius of the key frames' kept
positions in EVTP's joint space (`select.coverage`; 0 when every token is kept). Control:
`swap_instruction` replaces each sample's instruction by another object's expression from the same
image / video (samples whose source has no other object are skipped and counted).
Device (`device`, `eval ivs --device`): the CPU by default; on CUDA the model and its batches go
there, predictions come back to the CPU for the metrics, and latency is timed with the device
synchronised around each component (CUDA runs asynchronously).
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from patchprune.ivs.model import COMPONENTS
from patchprune.metrics.timing import synchronize

VIDEO_EMPTY_BELOW = 0.5
COVERAGE_SPACE = "joint"


class ComponentMeter:
    """`meter(name)` context: adds wall milliseconds (and, when `count`, MACs) per component. `device`:
    the model's; on CUDA the timer synchronises it at each start and stop, so a component's time is
    its kernels' rather than their launch."""

    def __init__(self, count: bool = False, device: torch.device | str = "cpu") -> None:
        self.count = count
        self.device = torch.device(device)
        self.ms: dict[str, float] = {c: 0.0 for c in COMPONENTS}
        self.macs: dict[str, float] = {c: 0.0 for c in COMPONENTS}
        self.forward_ms = 0.0  # the whole model forward (components + glue)

    def sync(self) -> None:
        """Wait for the device's queued work (a no-op on the CPU)."""
        synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.count:
            from patchprune.metrics.flops import flop_counter

            with flop_counter() as fc:
                yield
            self.macs[name] += fc.get_total_flops() / 2
            return
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        self.ms[name] += (time.perf_counter() - t0) * 1e3


def check_eval_args(method: str, ratio: float, kind: str | None = None, limit: int | None = None) -> None:
    """One-line ValueErrors for an unknown selection method, a ratio outside (0, 1], a bad kind or limit."""
    from patchprune.hf.pruner import check_ratio
    from patchprune.select.base import method_spec

    if method != "dense":
        method_spec(method)  # ValueError naming the known methods
    check_ratio(ratio, "ratio")
    if kind not in (None, "image", "video"):
        raise ValueError(f"kind must be 'image', 'video' or None (the first the data holds), got {kind!r}")
    if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
        raise ValueError(f"limit must be >= 1 or None, got {limit!r}")


def evaluate(run: str | Path, data: str | Path, method: str = "dense", ratio: float = 1.0, split: str | None = None,
             kind: str | None = None, limit: int | None = None, swap_instruction: bool = False,
             threads: int | None = None, progress: bool = True, seed: int = 0, timing: int = 8,
             batch: int = 8, checkpoint: str | Path | None = None, options: dict[str, Any] | None = None,
             per_sample: bool = False, device: str | torch.device | None = None) -> dict[str, Any]:
    """Evaluate the run folder `run` on `data` (see the module docstring); returns a dict with kind,
    giou / ciou (images) or j / f / jf (videos), gmacs and latency_ms (per component + "total"),
    coverage_radius, kept_tokens_per_frame, method, ratio, samples, skipped, split. `options`: the
    selection method's own keyword options (e.g. EVTP's ablation switches); `checkpoint`: a snapshot
    of the run to evaluate instead of its last checkpoint; `timing`: samples timed for latency;
    `per_sample`: also "per_sample", each evaluated expression's IoU (images) or J&F (videos) in data
    order, for paired comparisons of two methods on the same expressions; `device`: where the model
    runs (None / "cpu", the default; "cuda", "cuda:N", "auto" or a torch.device; see the module docstring)."""
    from tqdm import tqdm

    from patchprune.ivs.data import available_kinds, load_items, make_batch, swap_texts
    from patchprune.ivs.run import load_run
    from patchprune.train.distributed import run_device
    from patchprune.validate import check_threads

    check_eval_args(method, ratio, kind, limit)
    check_threads("threads", threads)
    dev = run_device(device)
    if threads:
        torch.set_num_threads(threads)
    kinds = available_kinds(data)
    kind = kind or kinds[0]
    split = split or ("val" if kind == "image" else "valid")
    model, tok, config, step = load_run(run, checkpoint, dev)
    items = load_items(data, kind, split, config.img_size, limit)
    texts: list[str | None] = [it.text for it in items]
    if swap_instruction:
        texts = swap_texts(items)
    keep = [i for i, t in enumerate(texts) if t is not None]
    skipped = len(items) - len(keep)
    items, texts = [items[i] for i in keep], [texts[i] for i in keep]
    if not items:
        raise ValueError(f"no sample of {data} ({kind}, {split}) has another object's expression to swap in")
    options = {**({"seed": seed} if method == "random" else {}), **(options or {})}
    if options and method != "dense":
        from patchprune.select.base import method_spec

        method_spec(method).check_options(options)
    torch.manual_seed(seed)
    S = config.img_size
    radii: list[float] = []
    kept = 0

    def run_batch(its, keys, txts, meter=None):
        nonlocal kept
        b, masks, _ = make_batch(its, keys, tok, config.ref_frames, txts)
        b = b.to(dev)
        if isinstance(meter, ComponentMeter):
            meter.sync()
        t0 = time.perf_counter()
        out = model(b, method=method, ratio=ratio, meter=meter, **options)
        if isinstance(meter, ComponentMeter):
            meter.sync()
            meter.forward_ms += (time.perf_counter() - t0) * 1e3
        kept = out.kept_tokens
        if method != "dense" and ratio < 1.0:
            from patchprune.select.coverage import coverage_radius

            radii.extend(coverage_radius(out.vision.float(), out.kept_index, COVERAGE_SPACE,
                                         config.grid).tolist())
        else:
            radii.extend([0.0] * len(its))
        pred, _ = out.predict((S, S), VIDEO_EMPTY_BELOW if kind == "video" else 0.0)
        return pred.cpu().numpy(), masks.cpu().numpy()

    result: dict[str, Any] = {"kind": kind, "split": split, "method": method, "ratio": float(ratio),
                              "step": step, "swap_instruction": bool(swap_instruction)}
    with torch.inference_mode():
        if kind == "image":
            from patchprune.metrics.refer import ReferMeter

            meter = ReferMeter()
            for s in tqdm(range(0, len(items), batch), desc="eval ivs", disable=not progress, leave=False):
                its, txts = items[s:s + batch], texts[s:s + batch]
                pred, gt = run_batch(its, [0] * len(its), txts)
                for p, g in zip(pred, gt):
                    meter.update(p, g)
            m = meter.compute()
            result.update(giou=m["gIoU"], ciou=m["cIoU"])
            if per_sample:
                result["per_sample"] = [float(v) for v in meter.ious]
        else:
            from patchprune.metrics.davis import davis_eval

            seqs = []
            for it, txt in tqdm(list(zip(items, texts)), desc="eval ivs", disable=not progress, leave=False):
                T = it.frames.shape[0]
                preds = []
                for s in range(0, T, batch):
                    keys = list(range(s, min(T, s + batch)))
                    pred, _ = run_batch([it] * len(keys), keys, [txt] * len(keys))
                    preds.append(pred)
                seqs.append((np.concatenate(preds)[None], it.masks.numpy()[None]))
            m = davis_eval(seqs, skip_first_last=False)
            result.update(j=m["J_mean"], f=m["F_mean"], jf=m["J&F"])
            if per_sample:  # an expression with nothing to score (empty ground truth) gets None
                result["per_sample"] = [_sequence_jf(seq) for seq in seqs]
        result["coverage_radius"] = float(np.mean(radii))
        result["kept_tokens_per_frame"] = int(kept)
        result["tokens_per_frame"] = config.grid[0] * config.grid[1]
        result["samples"] = len(items)
        result["skipped"] = skipped
    result["gmacs"], result["latency_ms"] = _cost(run_batch, items, texts, kind, timing, dev)
    return result


def write_per_sample(path: str | Path, result: dict[str, Any], run: str | Path, data: str | Path,
                     seed: int) -> Path:
    """Write the per-expression scores of an `evaluate(per_sample=True)` result as JSON (the file of
    `eval ivs --per-sample`, read back by `benchmarks/ivs/paired.py`), with what they were measured on."""
    from patchprune.data.io import write_json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    record = {k: result[k] for k in ("kind", "split", "method", "ratio", "step", "per_sample")}
    return write_json(path, record | {"run": str(run), "data": str(data), "seed": seed})


def _sequence_jf(seq: tuple[np.ndarray, np.ndarray]) -> float | None:
    """J&F of one expression's (prediction, ground truth) sequence; None when it has no object to score."""
    from patchprune.metrics.davis import davis_eval

    try:
        return float(davis_eval([seq], skip_first_last=False)["J&F"])
    except ValueError:  # no objects to evaluate
        return None


def _cost(run_batch, items, texts, kind: str, timing: int, device: torch.device | str = "cpu"
          ) -> tuple[dict[str, float], dict[str, float]]:
    """GMACs per component of one batch-1 forward, and latency per component (mean of `timing` runs,
    timed with `device` synchronised: see `ComponentMeter`)."""
    key = [items[0].frames.shape[0] // 2] if kind == "video" else [0]
    counter = ComponentMeter(count=True)
    with torch.enable_grad():  # FlopCounterMode's module tracker needs autograd on (forward only here)
        run_batch(items[:1], key, texts[:1], counter)
    gmacs = {c: v / 1e9 for c, v in counter.macs.items()}
    gmacs["total"] = sum(gmacs.values())
    latency = {c: 0.0 for c in COMPONENTS}
    latency["total"] = 0.0
    if timing > 0:
        from patchprune.metrics.timing import steady_allocator

        steady_allocator()  # as every timed figure of the project: no call pays the previous one's page faults
        with torch.inference_mode():
            run_batch(items[:1], key, texts[:1], ComponentMeter(device=device))  # warm-up
            for i in range(timing):
                j = i % len(items)
                k = [items[j].frames.shape[0] // 2] if kind == "video" else [0]
                timer = ComponentMeter(device=device)
                run_batch(items[j:j + 1], k, texts[j:j + 1], timer)
                for c in COMPONENTS:
                    latency[c] += timer.ms[c] / timing
                latency["total"] += timer.forward_ms / timing
    return gmacs, latency
