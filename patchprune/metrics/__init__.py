"""Metrics: pruning (PKR, IoI, FGS, coverage radius), compute (FLOPs) and segmentation quality.

Functions are bound here explicitly, so `patchprune.metrics.flops` is the function even though a
submodule of the same name exists (the binding below runs after the submodule import).
"""
from __future__ import annotations

from patchprune.metrics.flops import FlopCount, flops, flops_with_output, vit_block_macs, vit_macs
from patchprune.metrics.pkr import keep_ratio_per_block, pkr

__all__ = ["FlopCount", "flops", "flops_with_output", "vit_block_macs", "vit_macs", "keep_ratio_per_block", "pkr"]
