"""Analyses behind `bench vis`'s figures: FGS per layer of a dense VIS backbone (Fig. 2) and the
keep mask's recovery after blank frames and a scene cut (Fig. 6)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from patchprune.vis.data import VISData
from patchprune.vis.model import VISModel, normalise


@torch.no_grad()
def layer_features(model: VISModel, data: VISData, frames: list[tuple[int, int]], layers: tuple[int, ...]
                   ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Patch features {layer: [M, C]} of the dense backbone (inputs of blocks; `depth` = the last
    block's output) and their foreground labels [M] (a patch is foreground when instances cover at
    least half of it), for the (video, frame) pairs `frames`. The backbone runs on the model's device;
    the features come back on the CPU (the probes fit there)."""
    from patchprune.metrics.fgs import patch_foreground

    patch = model.backbone.patch_embed.patch_size[0]
    grid = (data.side // patch, data.side // patch)
    feats: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    labels = []
    for i in range(0, len(frames), 16):
        chunk = frames[i:i + 16]
        x = torch.stack([data.clips[v].frames[t] for v, t in chunk])
        fg = torch.stack([data.clips[v].masks[:, t].any(0) if data.clips[v].masks.shape[0]
                          else torch.zeros(data.side, data.side, dtype=torch.bool) for v, t in chunk])
        out = model.dense(normalise(x.to(model.device)), return_layers=layers)
        for l in layers:
            f = out.layers[l] if l < model.config.depth else out.features
            feats[l].append(f.flatten(2).transpose(1, 2).reshape(-1, f.shape[1]).cpu())
        labels.append(patch_foreground(fg, grid).reshape(-1))
    return {l: torch.cat(f) for l, f in feats.items()}, torch.cat(labels)


def fgs_per_layer(model: VISModel, train: VISData, valid: VISData, frames: int = 64, steps: int = 300,
                  seed: int = 0) -> dict[str, Any]:
    """FGS (foreground selectivity, `patchprune.metrics.fgs`) at the input of every block and after
    the last one: linear probes fitted on `frames` random train frames, scored on every valid frame."""
    from patchprune.metrics.fgs import fgs

    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    model.eval()
    layers = tuple(range(model.config.depth + 1))
    gen = np.random.default_rng(seed)
    index = train.frame_index
    pick = [index[i] for i in gen.choice(len(index), size=min(frames, len(index)), replace=False)]
    tr_x, tr_y = layer_features(model, train, pick, layers)
    va_x, va_y = layer_features(model, valid, valid.frame_index, layers)
    res = fgs(tr_x, tr_y, va_x, va_y, steps=steps, seed=seed)
    return {"layers": list(layers), "fgs": [res[l].accuracy for l in layers],
            "fgs_balanced": [res[l].balanced_accuracy for l in layers], "fg_share": res[0].fg_share}


def recovery_sequence(data: VISData, blank: int = 2) -> tuple[torch.Tensor, list[torch.Tensor], list[str]]:
    """A test stream built from two valid clips: clip A's first half, `blank` black frames, clip A's
    second half, then a hard cut to clip B. Returns frames uint8 [T, S, S, 3], per-frame instance
    masks [J, S, S] and per-frame labels ("A", "blank", "A", "cut B"...)."""
    if len(data.clips) < 2:
        raise ValueError("the recovery sequence needs at least 2 valid videos")
    a, b = data.clips[0], data.clips[1]
    half = a.num_frames // 2
    empty = torch.zeros(0, data.side, data.side, dtype=torch.bool)
    frames, masks, tags = [], [], []
    for t in range(half):
        frames.append(a.frames[t]), masks.append(a.masks[:, t]), tags.append("A")
    for _ in range(blank):
        frames.append(torch.zeros_like(a.frames[0])), masks.append(empty), tags.append("blank")
    for t in range(half, a.num_frames):
        frames.append(a.frames[t]), masks.append(a.masks[:, t]), tags.append("A (after blank)")
    for t in range(b.num_frames):
        frames.append(b.frames[t]), masks.append(b.masks[:, t]), tags.append("B (cut)" if t == 0 else "B")
    return torch.stack(frames), masks, tags


def keep_recovery(model: VISModel, encoder: nn.Module | None, data: VISData, blank: int = 2) -> list[dict[str, Any]]:
    """Per frame of `recovery_sequence`: PKR, IoI of the keep masks with the instances (None when the
    frame has none) and whether the stream was reset (scene cut detected)."""
    from patchprune.metrics.ioi import IoIMeter
    from patchprune.vis.predict import VideoPredictor

    frames, masks, tags = recovery_sequence(data, blank)
    patch = model.backbone.patch_embed.patch_size[0]
    grid = (data.side // patch, data.side // patch)
    pred = VideoPredictor(model, encoder, "minvis")
    rows = []
    for t in range(frames.shape[0]):
        r = pred.frame(frames[t])
        ioi = None
        if r.keep_masks and masks[t].shape[0] and bool(masks[t].any()):
            meter = IoIMeter()
            meter.update({k: v[None] for k, v in r.keep_masks.items()}, [masks[t]], grid)
            ioi = meter.compute()["ioi"]
        rows.append({"frame": t, "tag": tags[t], "pkr": r.pkr, "ioi": ioi, "reset": r.cut})
    return rows
