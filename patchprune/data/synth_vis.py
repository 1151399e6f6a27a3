"""Write a synthetic video instance segmentation data set (train + valid) in the YouTube-VIS layout."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from patchprune.data.synth import CATEGORY_NAMES, Difficulty, generate_video, split_seed
from patchprune.data.types import VideoSample
from patchprune.data.ytvis import write_ytvis_split


def synth_videos(split: str, count: int, frames: int, size: int, seed: int, **difficulty: Any) -> Iterator[VideoSample]:
    """The videos of one synthetic split, generated lazily (video ids 1..count)."""
    for i in range(count):
        s = split_seed(seed, split, i)
        yield generate_video(s, frames, size, video_id=i + 1, name=f"{split}_{i:05d}", **difficulty)


def write_synth_vis(out: str | Path, videos: int = 50, valid_videos: int | None = None, frames: int = 20,
                    size: int = 192, seed: int = 0, overwrite: bool = False, quality: int = 90,
                    progress: bool = True, **difficulty: Any) -> dict[str, Path]:
    """Generate and write OUT/{train,valid}.json with frames; returns {split: json path}.

    `videos` counts both splits; `valid_videos` of them go to valid (default videos // 5, at least 1
    when videos >= 2). Train and valid use disjoint per-video seeds (see `split_seed`).
    """
    if videos < 1:
        raise ValueError(f"videos must be >= 1, got {videos}")
    if valid_videos is None:
        valid_videos = max(1, videos // 5) if videos >= 2 else 0
    if not 0 <= valid_videos <= videos:
        raise ValueError(f"valid_videos must be in [0, {videos}], got {valid_videos}")
    if frames < 1 or size < 16:
        raise ValueError(f"need frames >= 1 and size >= 16, got frames={frames}, size={size}")
    diff = Difficulty.from_kwargs(difficulty)  # validate before writing anything
    counts = {"train": videos - valid_videos, "valid": valid_videos}
    out = Path(out)
    if not overwrite:
        for split, n in counts.items():
            for p in (out / f"{split}.json", out / split):
                if n and p.exists():
                    raise ValueError(f"{p} already exists (pass --overwrite to replace it)")
    bar = tqdm(total=videos, desc="synth-vis", unit="video", disable=not progress)
    paths = {}
    try:
        for split, n in counts.items():
            if n == 0:
                continue
            info = {"description": f"patchprune synthetic video instance segmentation ({split})",
                    "generator": "patchprune.data.synth", "version": 1, "seed": seed, "split": split,
                    "frames": frames, "size": size, "difficulty": asdict(diff)}
            paths[split] = write_ytvis_split(
                synth_videos(split, n, frames, size, seed, **difficulty), out, split, info=info,
                overwrite=overwrite, quality=quality, categories=CATEGORY_NAMES,
                on_video=lambda _v: bar.update(1))
    finally:
        bar.close()
    return paths
