"""Training: checkpoints (safetensors, atomic, resumable), a small generic loop with the stage-2
optimiser recipe, torchrun / gloo gradient averaging, and the fgseg task used by `patchprune bench fgseg`."""
from patchprune.train.checkpoint import load_checkpoint, save_checkpoint
from patchprune.train.loop import LoopConfig, Trainer, param_groups, step_lr

__all__ = ["save_checkpoint", "load_checkpoint", "Trainer", "LoopConfig", "param_groups", "step_lr"]
