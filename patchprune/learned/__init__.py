"""Learned patch pruning: VPP (Map-SM + SM) and the image-based baselines SViT, DynamicViT, TPS, EViT.

Every module is a `patchprune.policies.base.Policy`, so it plugs into the sparse ViT runner;
`build(method, model, target)` attaches a method's paper configuration to a timm ViT and returns
a `LearnedPruner` whose outputs carry the sparsity loss in `out.aux["sparsity_loss"]`.
"""
from patchprune.learned.dynamicvit import DynamicViTPredictor, DynamicViTStage, dynamicvit_rho
from patchprune.learned.evit import EViT, evit_keep_rate
from patchprune.learned.gumbel import gumbel_noise, gumbel_softmax, keep_decision, perturb, straight_through
from patchprune.learned.heads import SelectorMLP, count_parameters
from patchprune.learned.losses import dynamicvit_loss, sparsity_loss, svit_loss, vpp_loss, vpp_targets
from patchprune.learned.mapsm import MapSM, smooth_logits, spatial_prior
from patchprune.learned.registry import LOSS_KEY, LearnedPruner, MethodConfig, available_methods, build, register_method
from patchprune.learned.sm import SM
from patchprune.learned.svit import SViTSelector, svit_targets
from patchprune.learned.tps import TPSStage, squeeze
from patchprune.registry import import_family

# Every module of this package registers its own policies, builder and loss on import (one file per
# method, no list to edit); the names above are only the public exports.
import_family("patchprune.learned")

__all__ = [
    "build", "available_methods", "register_method", "LearnedPruner", "MethodConfig", "LOSS_KEY",
    "SM", "MapSM", "SViTSelector", "DynamicViTStage", "DynamicViTPredictor", "TPSStage", "EViT", "SelectorMLP",
    "gumbel_softmax", "gumbel_noise", "keep_decision", "perturb", "straight_through",
    "vpp_loss", "svit_loss", "dynamicvit_loss", "sparsity_loss", "vpp_targets", "svit_targets",
    "dynamicvit_rho", "evit_keep_rate", "spatial_prior", "smooth_logits", "squeeze", "count_parameters",
]
