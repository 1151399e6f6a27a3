"""Generic training: checkpoints (safetensors, atomic, resumable), a small loop with the stage-2
optimiser recipe and torchrun / gloo gradient averaging. Task code lives with its system (`patchprune.fgseg`)."""
from patchprune.train.checkpoint import load_checkpoint, save_checkpoint
from patchprune.train.loop import LoopConfig, Trainer, param_groups, step_lr

__all__ = ["save_checkpoint", "load_checkpoint", "Trainer", "LoopConfig", "param_groups", "step_lr"]
