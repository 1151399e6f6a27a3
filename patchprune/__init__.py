"""patchprune: patch-token pruning for vision transformers on dense prediction.

Entry points: `sparse_vit(model, schedule)` wraps a timm ViT with a pruning schedule;
`patchprune.select` (training-free selectors), `patchprune.learned` (VPP and learned baselines),
`patchprune.metrics` (PKR, IoI, FGS, FLOPs, coverage radius, segmentation metrics).
"""
from patchprune.policies.base import Decision, Merge, Policy, PolicyContext, available_policies, make_policy, register_policy
from patchprune.tokens import TokenState
from patchprune.vit import SparseViT, SparseViTOutput, sparse_vit

__version__ = "0.1.0"

__all__ = [
    "sparse_vit", "SparseViT", "SparseViTOutput", "TokenState", "Policy", "PolicyContext", "Decision", "Merge",
    "register_policy", "make_policy", "available_policies", "__version__",
]
