"""Synthetic instructed segmentation: images and short videos with referring / reasoning expressions.

In memory: `generate_refer_samples(seed, frames, size)` gives the scene and its ReferSamples.
On disk (`patchprune data synth-refer`):
    OUT/refcoco/instances.json, OUT/refcoco/images/*.jpg, OUT/refcoco/refs.json   (RefCOCO-like)
    OUT/ref-ytvos/{train,valid}/JPEGImages|Annotations/..., OUT/ref-ytvos/meta_expressions/...
                                                                                 (Ref-YouTube-VOS-like)
Train / valid scenes use disjoint seeds (see `split_seed`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from patchprune.data.coco import write_coco
from patchprune.data.expressions import Expression, scene_expressions
from patchprune.data.io import write_json
from patchprune.data.refer import refcoco_refs, write_ref_ytvos
from patchprune.data.synth import CATEGORY_NAMES, Difficulty, generate_video, split_seed
from patchprune.data.types import ReferSample, VideoSample


def generate_refer_samples(seed: int, frames: int = 10, size: int | tuple[int, int] = 192, *,
                           video_id: int = 1, name: str | None = None, per_target: int = 2, reasoning: int = 2,
                           **difficulty: Any) -> tuple[VideoSample, list[Expression], list[ReferSample]]:
    """One scene (frames = 1 for an image) with its expressions and one ReferSample per expression."""
    video = generate_video(seed, frames, size, video_id=video_id, name=name, keep_distractors=True, **difficulty)
    rng = np.random.default_rng([int(seed), 7])
    exps = scene_expressions(video, rng, per_target=per_target, reasoning=reasoning)
    by_id = {tr.track_id: tr for tr in video.tracks}
    samples = [ReferSample(ref_id=i + 1, name=video.name, frames=video.frames, expression=e.text,
                           masks=by_id[e.track_id].masks, kind=e.kind, source_id=video.video_id,
                           track_id=e.track_id, category_id=by_id[e.track_id].category_id)
               for i, e in enumerate(exps)]
    return video, exps, samples


def write_synth_refer(out: str | Path, images: int = 100, videos: int = 20, frames: int = 10, size: int = 192,
                      seed: int = 0, overwrite: bool = False, progress: bool = True,
                      **difficulty: Any) -> dict[str, Path]:
    """Write the image (RefCOCO-like) and video (Ref-YouTube-VOS-like) sets; returns the written files.

    A fifth of each (at least one when there are two or more) goes to the valid / val split.
    """
    if images < 0 or videos < 0 or images + videos == 0:
        raise ValueError("need images >= 0, videos >= 0 and at least one of them")
    if frames < 2:
        raise ValueError(f"videos need frames >= 2, got {frames}")
    Difficulty.from_kwargs(difficulty)
    out = Path(out)
    paths: dict[str, Path] = {}
    bar = tqdm(total=images + videos, desc="synth-refer", unit="scene", disable=not progress)
    try:
        if images:
            n_val = max(1, images // 5) if images >= 2 else 0
            scenes, exps, splits = [], [], []
            for i in range(images):
                split = "val" if i >= images - n_val else "train"
                j = i - (images - n_val) if split == "val" else i
                s = split_seed(seed, "valid" if split == "val" else "train", j, stream="refer-images")
                v, e, _ = generate_refer_samples(s, 1, size, video_id=i + 1, name=f"{split}_{j:05d}", **difficulty)
                v.file_names = [f"{v.name}.jpg"]
                scenes.append(v)
                exps.append(e)
                splits.append(split)
                bar.update(1)
            root = out / "refcoco"
            paths["refcoco_instances"] = write_coco(scenes, root, "instances", CATEGORY_NAMES,
                                                    overwrite=overwrite, image_dir="images")
            refs = refcoco_refs(scenes, exps, splits)
            paths["refcoco_refs"] = write_json(root / "refs.json", refs)
        if videos:
            n_val = max(1, videos // 5) if videos >= 2 else 0
            for split, count in (("train", videos - n_val), ("valid", n_val)):
                if count == 0:
                    continue
                vids, exps = [], []
                for j in range(count):
                    s = split_seed(seed, split, j, stream="refer-videos")
                    v, e, _ = generate_refer_samples(s, frames, size, video_id=j + 1, name=f"{split}_{j:05d}",
                                                     **difficulty)
                    vids.append(v)
                    exps.append(e)
                    bar.update(1)
                paths[f"ref_ytvos_{split}"] = write_ref_ytvos(vids, exps, out / "ref-ytvos", split,
                                                              overwrite=overwrite)
    finally:
        bar.close()
    return paths
