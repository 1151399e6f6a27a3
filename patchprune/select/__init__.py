"""Training-free token selection and merging (the EVTP family).

`select(tokens [B, N, C], k, method=..., grid=(H, W), attn=None, **options)` keeps or merges K of the N
patch tokens of every frame and returns a `SelectResult` (.tokens [B, K, C], .index [B, K] grid
positions, .size [B, K]). Methods (one file each): random, kcenter, evtp, divprune, tome, visionzip,
vispruner, attention. `patchprune.select.policies` exposes every method to the sparse ViT runner.
"""
from patchprune.select.base import (MethodSpec, SelectInput, SelectResult, available_methods, budget, method_spec,
                                    register_method, select)

from patchprune.registry import import_family  # noqa: E402

# Every module of the package is imported, so each method file registers itself (one new file, no list).
# `policies` (every method as a runner policy) is loaded by the policy registry once all methods exist.
import_family("patchprune.select", skip=("policies",))
from patchprune.select.evtp import ABLATION_LADDER  # noqa: E402

__all__ = ["select", "SelectResult", "SelectInput", "MethodSpec", "available_methods", "method_spec",
           "register_method", "budget", "ABLATION_LADDER"]
