"""Metrics: pruning (PKR, IoI, FGS, coverage radius), compute (FLOPs) and segmentation quality.

Names are resolved on first use (PEP 562), so importing `patchprune.metrics.commands` (the command
line) does not import torch or pycocotools. `patchprune.metrics.flops` is the function even though a
submodule of the same name exists: the package refuses to let the submodule import rebind the name.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "patchprune.metrics.flops": ("FlopCount", "flops", "flops_with_output", "vit_block_macs", "vit_macs"),
    "patchprune.metrics.mllm_flops": ("MLLMCost", "MLLMSpec", "TransformerSpec", "mllm_macs", "paper_totals",
                                      "spec_from_llava_config"),
    "patchprune.metrics.pkr": ("keep_ratio_per_block", "pkr"),
    "patchprune.metrics.coco": ("coco_instance_eval",),
    "patchprune.select.coverage": ("coverage_radius",),
    "patchprune.metrics.fgs": ("BalancedLinearProbe", "evaluate_probe", "fgs", "patch_foreground", "train_probe"),
    "patchprune.metrics.ioi": ("SIZE_THRESHOLDS", "IoIMeter", "ioi", "patch_coverage", "patch_masks", "size_bucket"),
    "patchprune.metrics.davis": ("boundary_f", "boundary_map", "davis_eval", "davis_sequence", "region_j"),
    "patchprune.metrics.refer": ("ReferMeter", "refer_iou"),
    "patchprune.metrics.ytvis": ("YTVIS_AREA_RANGES", "spatiotemporal_iou", "ytvis_eval"),
}
_SOURCE = {name: module for module, names in _EXPORTS.items() for name in names}
# Exported functions that share their name with a submodule (flops, ioi, fgs, pkr).
_SHADOWED = frozenset(name for name in _SOURCE if f"patchprune.metrics.{name}" in _EXPORTS)

__all__ = list(_SOURCE)


def __getattr__(name: str) -> Any:
    if name in _SOURCE:
        value = getattr(importlib.import_module(_SOURCE[name]), name)
        object.__setattr__(sys.modules[__name__], name, value)
        return value
    raise AttributeError(f"module 'patchprune.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SOURCE))


class _MetricsPackage(types.ModuleType):
    """Keeps `flops`, `ioi`, `fgs`, `pkr` bound to the functions when their submodules get imported."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _MetricsPackage
