"""What defines an fgseg study run: methods, PKR targets, scene difficulty, model and training sizes.

Kept free of torch so the command line can validate options before any heavy import.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Same value as `patchprune.vit.POLICY_ATTENTION_EPS` (DynamicViT / TPS policy softmax, the authors' 1e-6;
# checked by tests/test_train_fgseg.py); a literal
# here so that reading the configuration does not import torch.
POLICY_ATTENTION_EPS = 1e-6

METHODS = ("vpp", "svit", "dynamicvit", "tps")
DENSE_FT = "dense-ft"  # dense model fine-tuned like the pruned ones (reference for fine-tuning gains)
TARGETS = (0.55, 0.40)
FGS_LAYERS = tuple(range(13))
# Scene settings of the bench (patchprune.data.synth.Difficulty fields), per foreground rule.
APPEARANCE_DIFFICULTY = {"min_radius": 0.12, "max_radius": 0.22, "min_distractors": 1, "max_distractors": 3,
                         "clutter": 4, "foreground": "appearance"}
CUE_DIFFICULTY = {"min_radius": 0.12, "max_radius": 0.22, "min_objects": 1, "max_objects": 3,
                  "min_distractors": 3, "max_distractors": 6, "clutter": 4, "foreground": "cue"}
IOI_THRESHOLDS = (0.015, 0.04)  # S < 1.5 % of the frame, M < 4 %, L >= 4 % (synthetic objects are small)


@dataclass
class FgSegBenchConfig:
    """Everything that defines a run (saved next to the results)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    size: int = 96
    patch: int = 8
    dim: int = 128
    heads: int = 2
    depth: int = 12
    frames: int = 12
    train_videos: int = 512
    valid_videos: int = 32
    dense_steps: int = 2000
    dense_batch: int = 16
    dense_lr: float = 1.5e-3
    finetune_steps: int = 400
    finetune_batch: int = 4
    finetune_lr: float = 3e-3  # pruning modules; backbone and head x0.1 (the spec's 2.5e-5 is for long GPU runs)
    finetune_clip: float = 0.01
    fgs_train_frames: int = 128
    fgs_steps: int = 300
    timing_repeats: int = 15
    timing_batch: int = 16  # videos in lock-step for the throughput speed-up
    threads: int = 0  # 0: all cores
    # VPP's 9 x 9 smoothing is sized for ~40 x 23 grids (YouTube-VIS at patch 16); on our 12 x 12
    # grid it would average away most of the map, so the bench scales it to 3 x 3 (same share).
    vpp_smooth_kernel: int = 3
    # Sparsity loss of VPP's prior-free pass: "spec" (default), "none" or "live"; see
    # `patchprune.learned.losses.vpp_loss` (with "spec" VPP settles below its PKR target).
    vpp_first_frame_loss: str = "spec"
    policy_eps: float = POLICY_ATTENTION_EPS  # DynamicViT / TPS policy-softmax eps in fine-tuning
    class_weight_power: float = 0.5  # CE class weights freq^-power (0: unweighted)
    dense_finetune: bool = True  # also fine-tune the dense model with the same chain (reference row)
    methods: tuple[str, ...] = METHODS
    targets: tuple[float, ...] = TARGETS
    # foreground="cue": distractors share the categories' shapes and textures, and an object is
    # foreground only when its colour matches the frame's beacon (context, not local appearance).
    # With the original scenes (foreground="appearance", `--foreground appearance`) one block already
    # finds the foreground (FGS 0.92 from layer 1), so VPP's premise cannot show.
    difficulty: dict[str, Any] = field(default_factory=lambda: dict(CUE_DIFFICULTY))

    @classmethod
    def quick(cls) -> "FgSegBenchConfig":
        return cls(seeds=(0,), train_videos=256, valid_videos=16, dense_steps=500, finetune_steps=120,
                   fgs_train_frames=64, fgs_steps=200, timing_repeats=10)


def seg_config(cfg: FgSegBenchConfig, num_classes: int):
    """The `FgSegConfig` of the study's model (imports the model module, hence torch)."""
    from patchprune.fgseg.model import FgSegConfig

    return FgSegConfig(img_size=cfg.size, patch_size=cfg.patch, dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                       num_classes=num_classes)


def training_fingerprint(cfg: FgSegBenchConfig) -> str:
    """Short hash of the settings checkpoints depend on (data, model, training), so that a changed
    configuration never resumes from another one's checkpoints."""
    skip = {"seeds", "threads", "timing_repeats", "timing_batch", "fgs_train_frames", "fgs_steps", "methods",
            "targets", "dense_finetune", "valid_videos"}
    relevant = {k: v for k, v in asdict(cfg).items() if k not in skip}
    return hashlib.sha1(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:8]
