"""patchprune: patch-token pruning for vision transformers on dense prediction.

Entry points: `sparse_vit(model, schedule)` wraps a timm ViT with a pruning schedule;
`patchprune.select` (training-free selectors), `patchprune.learned` (VPP and learned baselines),
`patchprune.metrics` (PKR, IoI, FGS, FLOPs, coverage radius, segmentation metrics).

The names below are resolved on first use (PEP 562), so `import patchprune` and the command line's
`--help` do not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "sparse_vit": "patchprune.vit", "SparseViT": "patchprune.vit", "SparseViTOutput": "patchprune.vit",
    "TokenState": "patchprune.tokens",
    "Policy": "patchprune.policies.base", "PolicyContext": "patchprune.policies.base",
    "Decision": "patchprune.policies.base", "Merge": "patchprune.policies.base",
    "register_policy": "patchprune.policies.base", "make_policy": "patchprune.policies.base",
    "available_policies": "patchprune.policies.base",
    "load_reference": "patchprune.checkpoints", "reference_names": "patchprune.checkpoints",
}

__all__ = [*_EXPORTS, "__version__"]


# Subpackages reachable as attributes (`pp.metrics.flops`, `pp.select.select`) without an explicit import.
_SUBMODULES = frozenset({"bench", "data", "fgseg", "learned", "metrics", "policies", "select", "tokens", "train",
                         "video", "vit"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"patchprune.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'patchprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
