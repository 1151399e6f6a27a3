"""Per-frame set loss: HF `Mask2FormerLoss` on every decoder layer, weighted as Mask2Former does
(class 2, mask 5, dice 5; no-object class weight 0.1 inside the cross-entropy), plus, when the head
has a semantic map, a per-pixel category cross-entropy against the frame's instance masks."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

from patchprune.vis.config import VISConfig
from patchprune.vis.head import HeadOutput, mask2former_config

LOSS_WEIGHTS = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
SEMANTIC_WEIGHT = 2.0


def semantic_targets(targets: list["FrameTargets"], size: tuple[int, int], background: int) -> Tensor:
    """Per-pixel labels [B, h, w] at the semantic map's size: the category of the instance that
    covers most of each cell (area resampling, > 0.5; a later instance wins an overlap), else
    `background`."""
    maps = []
    for t in targets:
        label = torch.full(size, background, dtype=torch.long, device=t.labels.device)
        if t.masks.shape[0]:
            cover = F.interpolate(t.masks.float()[None], size=size, mode="area")[0] > 0.5
            for j in range(cover.shape[0]):  # a loop over the few instances of a frame
                label[cover[j]] = int(t.labels[j])
        maps.append(label)
    return torch.stack(maps)


@dataclass
class FrameTargets:
    """Ground truth of one frame at model resolution: masks float [J, H, W], labels long [J] and
    instance ids [J] (the track of each mask within its video; ROVIS pairs need them)."""

    masks: Tensor
    labels: Tensor
    ids: Tensor | None = None

    def to(self, device: torch.device | str) -> "FrameTargets":
        """The same targets on `device` (the loss runs where the model does; a no-op on the same device)."""
        return FrameTargets(self.masks.to(device), self.labels.to(device),
                            None if self.ids is None else self.ids.to(device))


class SetLoss(nn.Module):
    """`forward(head_out, targets, seeds=None) -> {"loss", "ce", "mask", "dice"}` (last-layer terms
    for logs).

    With `seeds` (one int per sample) the loss is the mean of per-sample losses, each computed with
    the global RNG seeded by its sample's seed (the loss samples mask points at random): a sample's
    loss then does not depend on which other samples share its batch, so torchrun ranks that split
    a global batch reproduce the single-process gradient, and a resumed run its batches.
    """

    def __init__(self, cfg: VISConfig, class_weight: float = LOSS_WEIGHTS["loss_cross_entropy"],
                 semantic_weight: float = SEMANTIC_WEIGHT) -> None:
        super().__init__()
        if not class_weight > 0:
            raise ValueError(f"class_weight must be > 0, got {class_weight}")
        if not semantic_weight >= 0:
            raise ValueError(f"semantic_weight must be >= 0, got {semantic_weight}")
        self.semantic_weight = float(semantic_weight)
        self.background = cfg.num_labels
        # class_weight scales the classification term of the loss; the matching cost keeps Mask2Former's 2
        self.weights = {**LOSS_WEIGHTS, "loss_cross_entropy": float(class_weight)}
        self.criterion = Mask2FormerLoss(mask2former_config(cfg), self.weights)

    def forward(self, out: HeadOutput, targets: list[FrameTargets], seeds: list[int] | None = None
                ) -> dict[str, Tensor]:
        if seeds is not None:
            if len(seeds) != len(targets):
                raise ValueError(f"{len(seeds)} seeds for {len(targets)} samples")
            parts = []
            for b, seed in enumerate(seeds):  # a loop over the few samples of a batch, not over tokens
                torch.manual_seed(seed)
                parts.append(self.forward(out.sample(b), [targets[b]]))
            return {k: torch.stack([p[k] for p in parts]).mean() for k in parts[0]}
        masks = [t.masks.float() for t in targets]
        labels = [t.labels.long() for t in targets]
        aux = [{"masks_queries_logits": m, "class_queries_logits": c}
               for m, c in zip(out.mask_logits[:-1], out.class_logits[:-1])]
        terms = self.criterion(out.mask_logits[-1], out.class_logits[-1], masks, labels, aux)
        total = torch.zeros((), device=out.mask_logits[-1].device)
        for key, value in terms.items():
            weight = next(w for name, w in self.weights.items() if key.startswith(name))
            total = total + weight * value
        logs = {"ce": terms["loss_cross_entropy"].detach(), "mask": terms["loss_mask"].detach(),
                "dice": terms["loss_dice"].detach()}
        if out.semantic_logits is not None:
            sem = out.semantic_logits
            semantic = F.cross_entropy(sem, semantic_targets(targets, tuple(sem.shape[-2:]), self.background))
            total = total + self.semantic_weight * semantic
            logs["sem"] = semantic.detach()
        return {"loss": total, **logs}
