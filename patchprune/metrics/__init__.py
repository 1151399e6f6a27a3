"""Metrics: pruning (PKR, IoI, FGS, coverage radius), compute (FLOPs) and segmentation quality.

Functions are bound here explicitly, so `patchprune.metrics.flops` is the function even though a
submodule of the same name exists (the binding below runs after the submodule import).
"""
from __future__ import annotations

from patchprune.metrics.flops import FlopCount, flops, flops_with_output, vit_block_macs, vit_macs
from patchprune.metrics.pkr import keep_ratio_per_block, pkr
from patchprune.metrics.coco import coco_instance_eval
from patchprune.select.coverage import coverage_radius
from patchprune.metrics.fgs import BalancedLinearProbe, evaluate_probe, fgs, patch_foreground, train_probe
from patchprune.metrics.ioi import SIZE_THRESHOLDS, IoIMeter, ioi, patch_coverage, patch_masks, size_bucket
from patchprune.metrics.davis import boundary_f, boundary_map, davis_eval, davis_sequence, region_j
from patchprune.metrics.refer import ReferMeter, refer_iou
from patchprune.metrics.ytvis import YTVIS_AREA_RANGES, spatiotemporal_iou, ytvis_eval

__all__ = [
    "FlopCount", "flops", "flops_with_output", "vit_block_macs", "vit_macs", "keep_ratio_per_block", "pkr",
    "coverage_radius", "fgs", "BalancedLinearProbe", "train_probe", "evaluate_probe", "patch_foreground",
    "ioi", "IoIMeter", "patch_masks", "patch_coverage", "size_bucket", "SIZE_THRESHOLDS", "coco_instance_eval", "boundary_f", "boundary_map", "davis_eval", "davis_sequence", "region_j",
    "ReferMeter", "refer_iou", "YTVIS_AREA_RANGES", "spatiotemporal_iou", "ytvis_eval",
]
