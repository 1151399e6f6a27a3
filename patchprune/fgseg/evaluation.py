"""Scoring an fgseg model: held-out videos streamed frame by frame (mIoU, PKR, IoI), MACs per frame,
side-by-side timing, and foreground selectivity (FGS) per layer of the dense model.

Every scorer runs on the device the model is on (`module_device`): frames go there, and what is
tallied (confusion matrix, keep masks, FGS features and their probes) comes back to the CPU, so the
figures are computed the same way whatever ran the model."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from patchprune.metrics.timing import time_side_by_side
from patchprune.fgseg.config import FGS_LAYERS, IOI_THRESHOLDS, FgSegBenchConfig
from patchprune.fgseg.model import module_device, normalise
from patchprune.metrics.fgs import fgs, patch_foreground
from patchprune.metrics.flops import flops_with_output
from patchprune.metrics.ioi import IoIMeter
from patchprune.metrics.pkr import keep_ratio_per_block
from patchprune.video import VideoStream


@torch.no_grad()
def evaluate(model, encoder, data, num_classes: int, seed: int, progress: bool, desc: str) -> dict[str, Any]:
    """Stream every held-out video (all in lock-step, batch = videos) on the model's device and score
    every frame (on the CPU)."""
    device = module_device(model)
    torch.manual_seed(seed)  # VPP keeps its Gumbel noise at inference (seeds the CUDA generators too)
    model.eval()
    if encoder is not None:
        encoder.eval()
    stream = VideoStream()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    masks, meter = [], IoIMeter(IOI_THRESHOLDS)
    grid = (data.frames.shape[2] // model.config.patch_size, data.frames.shape[3] // model.config.patch_size)
    for t in tqdm(range(data.num_frames), desc=f"eval {desc}", leave=False, disable=not progress):
        stream.start_frame(list(range(data.num_videos)))
        logits, out = model(normalise(data.frames[:, t].to(device)), encoder=encoder, stream=stream)
        pred, lab = logits.argmax(1).cpu(), data.labels[:, t]
        conf += torch.bincount((lab * num_classes + pred).flatten(), minlength=num_classes**2).view(
            num_classes, num_classes).double()
        keep = {b: m.cpu() for b, m in out.keep_masks.items()}
        masks.append(keep)
        meter.update(keep, [data.instances[v][t] for v in range(data.num_videos)], grid)
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    iou = inter / union.clamp(min=1)
    fg_inter = conf[1:, 1:].sum()
    fg_union = conf.sum() - conf[0, 0]
    ioi = meter.compute()
    per_block = keep_ratio_per_block(masks)
    return {
        "miou": 100 * float(iou[union > 0].mean()),
        "fg_iou": 100 * float(fg_inter / fg_union.clamp(min=1)),
        "pkr": float(np.mean(per_block)),
        "keep_ratio_per_block": per_block,
        "ioi": ioi["ioi"], "ioi_S": ioi["S"], "ioi_M": ioi["M"], "ioi_L": ioi["L"],
        "ioi_counts": [ioi["n_S"], ioi["n_M"], ioi["n_L"]],
    }


@torch.no_grad()
def streaming_macs(model, encoder, data, video: int = 0) -> float:
    """Mean MACs per frame of backbone + pruning modules + head, streaming one video at batch 1 (on the
    model's device: torch counts the CUDA attention kernels with the same formula as the CPU one)."""
    device = module_device(model)
    stream = VideoStream()
    total = 0.0
    for t in range(data.num_frames):
        stream.start_frame()
        frame = normalise(data.frames[video, t : t + 1].to(device))
        count, _ = flops_with_output(model, frame, encoder=encoder, stream=stream)
        total += count.macs
    return total / data.num_frames


def timing(entries: dict[str, tuple[Any, Any]], data, repeats: int, progress: bool, batch: int = 1) -> dict[str, float]:
    """Median streaming time per call (ms) of each entry, interleaved side by side in this process, on
    the device of the entries' models (all on one device; CUDA is synchronised around every call).

    batch 1: latency of one video; batch > 1: that many videos in lock-step (throughput).
    """
    devices = {module_device(m) for m, _ in entries.values()}
    if len(devices) != 1:
        raise ValueError(f"timing: the entries' models are on several devices {sorted(map(str, devices))}; "
                         "time them on one")
    (device,) = devices
    b = min(batch, data.num_videos)
    frames = [normalise(data.frames[:b, t].to(device)) for t in range(data.num_frames)]

    def runner(model, encoder):
        stream, state = VideoStream(), {"t": 0}

        def call():
            stream.start_frame()
            model(frames[state["t"] % len(frames)], encoder=encoder, stream=stream)
            state["t"] += 1
        return call

    fns = {name: runner(m, e) for name, (m, e) in entries.items()}
    return time_side_by_side(fns, device, warmup=3, repeats=repeats, progress=progress)


@torch.no_grad()
def foreground_selectivity(dense, train, valid, cfg: FgSegBenchConfig, seed: int, progress: bool) -> dict[str, list]:
    """FGS per layer (inputs of blocks 0..11 and the last block's output) of the frozen dense model.

    Features are extracted on the model's device and probed on the CPU (the probes are small, and
    their seeded draws stay on a CPU generator)."""
    device = module_device(dense)
    gen = torch.Generator().manual_seed(seed + 17)
    n = cfg.fgs_train_frames
    v = torch.randint(0, train.num_videos, (n,), generator=gen)
    t = torch.randint(0, train.num_frames, (n,), generator=gen)
    grid = (cfg.size // cfg.patch, cfg.size // cfg.patch)

    def features(frames, labels):
        feats: dict[int, list] = {l: [] for l in FGS_LAYERS}
        for i in range(0, frames.shape[0], 32):
            _, out = dense(normalise(frames[i : i + 32].to(device)), return_layers=FGS_LAYERS)
            for l in FGS_LAYERS:
                feats[l].append(out.layers[l].flatten(2).transpose(1, 2).reshape(-1, cfg.dim).cpu())
        y = patch_foreground((labels > 0).numpy(), grid).reshape(-1)
        return {l: torch.cat(f) for l, f in feats.items()}, y

    tr_x, tr_y = features(train.frames[v, t], train.labels[v, t])
    va_x, va_y = features(valid.frames.flatten(0, 1), valid.labels.flatten(0, 1))
    res = fgs(tr_x, tr_y, va_x, va_y, steps=cfg.fgs_steps, lr=1e-2, seed=seed)
    return {"fgs": [res[l].accuracy for l in FGS_LAYERS],
            "fgs_balanced": [res[l].balanced_accuracy for l in FGS_LAYERS],
            "fg_share": res[0].fg_share}
