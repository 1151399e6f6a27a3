"""Data: in-memory sample types, synthetic generators, real data-set formats and video files.

Names resolve lazily, so `from patchprune.data import generate_video` does not import PyAV or
pycocotools.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # types
    "InstanceTrack": "patchprune.data.types",
    "VideoSample": "patchprune.data.types",
    "ReferSample": "patchprune.data.types",
    # synthetic scenes
    "CATEGORIES": "patchprune.data.synth",
    "CATEGORY_NAMES": "patchprune.data.synth",
    "Category": "patchprune.data.synth",
    "Difficulty": "patchprune.data.synth",
    "generate_video": "patchprune.data.synth",
    "split_seed": "patchprune.data.synth",
    "synth_videos": "patchprune.data.synth_vis",
    "write_synth_vis": "patchprune.data.synth_vis",
    "Expression": "patchprune.data.expressions",
    "scene_expressions": "patchprune.data.expressions",
    "generate_refer_samples": "patchprune.data.synth_refer",
    "write_synth_refer": "patchprune.data.synth_refer",
    # formats
    "read_ytvis": "patchprune.data.ytvis",
    "YTVISDataset": "patchprune.data.ytvis",
    "write_ytvis_split": "patchprune.data.ytvis",
    "gt_as_predictions": "patchprune.data.ytvis",
    "read_coco": "patchprune.data.coco",
    "CocoDataset": "patchprune.data.coco",
    "write_coco": "patchprune.data.coco",
    "read_davis": "patchprune.data.davis",
    "DavisDataset": "patchprune.data.davis",
    "write_davis": "patchprune.data.davis",
    "RefCocoDataset": "patchprune.data.refer",
    "RefYTVOSDataset": "patchprune.data.refer",
    "load_refs": "patchprune.data.refer",
    "write_ref_ytvos": "patchprune.data.refer",
    # video files
    "read_video": "patchprune.data.video",
    "iter_video_frames": "patchprune.data.video",
    "probe_video": "patchprune.data.video",
    "video_sample": "patchprune.data.video",
    "write_video": "patchprune.data.video",
    # pictures
    "contact_sheet": "patchprune.data.viz",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'patchprune.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
