"""Training-free token selection and merging (the EVTP family).

`select(tokens [B, N, C], k, method=..., grid=(H, W), attn=None, **options)` keeps or merges K of the N
patch tokens of every frame and returns a `SelectResult` (.tokens [B, K, C], .index [B, K] grid
positions, .size [B, K]). Methods (one file each): random, kcenter, evtp, divprune, tome, visionzip,
vispruner, attention. `patchprune.select.policies` exposes every method to the sparse ViT runner.
"""
from patchprune.select.base import (MethodSpec, SelectInput, SelectResult, available_methods, budget, method_spec,
                                    register_method, select)

# Importing a method registers it (one file per method).
from patchprune.select import attention, divprune, evtp, kcenter, random, tome, visionzip, vispruner  # noqa: E402,F401
from patchprune.select.evtp import ABLATION_LADDER  # noqa: E402

__all__ = ["select", "SelectResult", "SelectInput", "MethodSpec", "available_methods", "method_spec",
           "register_method", "budget", "ABLATION_LADDER"]
