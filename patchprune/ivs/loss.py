"""Training loss of the instructed-segmentation model, on every decoder layer.

Per sample and layer: Hungarian matching (scipy) of the N queries to the referred object's mask with
cost 5 x BCE + 5 x dice on the mask points (class cost 0: there is no class vocabulary); the
matched query's mask gets 5 x BCE + 5 x dice; the N query logits get a BCE with target 1 on the
matched query, pos_weight N - 1 (one positive among N), weight 2. A sample whose object is absent
(a video frame it left) has no match: all its query targets are 0 and no mask loss.

Points: every pixel of the stride-4 mask grid (24 x 24 at 96 px). Mask2Former samples 12,544 points
from a far larger map; on our maps sampling more points than pixels only repeats them (the VIS
recipe's finding), so the grid itself is the point set. The pairwise and per-mask terms are HF
Mask2Former's functions.

Instance loss (`InstanceLoss`, training with `--instance-weight`; our addition, not InstructSeg's):
the N queries also learn every annotated object of the image with the VIS model's set loss (HF
`Mask2FormerLoss`: Hungarian matching, class + mask + dice on every layer), so that each query is a
classified object proposal whatever the instruction says, and the choice learns on stable proposals.

Referring map (configs with `refer_map`): map_weight x (BCE over every pixel + dice on samples whose
object is present) against the same soft target; an absent object's map is pushed to 0 everywhere.
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from transformers.models.mask2former.modeling_mask2former import (dice_loss, pair_wise_dice_loss,
                                                                  pair_wise_sigmoid_cross_entropy_loss,
                                                                  sigmoid_cross_entropy_loss)

from patchprune.ivs.config import MAP_WEIGHT, QUERY_WEIGHT

MASK_WEIGHT, DICE_WEIGHT = 5.0, 5.0


def match(mask_logits: Tensor, target: Tensor) -> int:
    """Index of the query matched to one target mask. mask_logits [N, P], target [P] float in [0, 1]."""
    with torch.no_grad():
        cost = MASK_WEIGHT * pair_wise_sigmoid_cross_entropy_loss(mask_logits, target[None]) + \
            DICE_WEIGHT * pair_wise_dice_loss(mask_logits, target[None])
    rows, _ = linear_sum_assignment(cost.float().cpu().numpy())
    return int(rows[0])


def target_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """bool / float [B, H, W] -> float [B, h, w] (area fraction of each cell: soft targets)."""
    return nn.functional.adaptive_avg_pool2d(masks.float().unsqueeze(1), size).squeeze(1)


class ReferLoss(nn.Module):
    """`forward(mask_logits per layer [B, N, h, w], query_logits per layer [B, N], masks [B, h, w]
    float (see `target_masks`), present [B] bool, refer_map [B, h, w] or None) -> {"loss", "mask",
    "dice", "query"[, "map"]}` (last-layer terms for logs; loss = sum over layers, mean over samples,
    plus map_weight x the map term). query_weight: the query BCE's weight (2; `train ivs --query-weight`)."""

    def __init__(self, map_weight: float = MAP_WEIGHT, query_weight: float = QUERY_WEIGHT) -> None:
        super().__init__()
        self.map_weight = map_weight
        self.query_weight = query_weight

    def map_term(self, refer_map: Tensor, masks: Tensor, present: Tensor) -> Tensor:
        """BCE (all samples, every pixel) + dice (samples whose object is present) of the referring map."""
        flat_m, flat_t = refer_map.flatten(1), masks.flatten(1)
        bce = nn.functional.binary_cross_entropy_with_logits(flat_m, flat_t)
        if not bool(present.any()):
            return bce
        return bce + dice_loss(flat_m[present], flat_t[present], int(present.sum()))

    def forward(self, mask_logits: list[Tensor], query_logits: list[Tensor], masks: Tensor, present: Tensor,
                refer_map: Tensor | None = None) -> dict[str, Tensor]:
        B, N = query_logits[-1].shape
        flat_t = masks.flatten(1)
        pos_weight = torch.tensor(float(max(N - 1, 1)), device=masks.device)
        total = masks.new_zeros(())
        logs: dict[str, Tensor] = {}
        for m_l, q_l in zip(mask_logits, query_logits):
            flat_m = m_l.flatten(2)
            labels = torch.zeros_like(q_l)
            mask_term, dice_term = masks.new_zeros(()), masks.new_zeros(())
            for b in range(B):  # the few samples of a batch, not tokens
                if not bool(present[b]):
                    continue
                j = match(flat_m[b], flat_t[b])
                labels[b, j] = 1.0
                mask_term = mask_term + sigmoid_cross_entropy_loss(flat_m[b, j:j + 1], flat_t[b:b + 1], 1)
                dice_term = dice_term + dice_loss(flat_m[b, j:j + 1], flat_t[b:b + 1], 1)
            query_term = nn.functional.binary_cross_entropy_with_logits(q_l, labels, pos_weight=pos_weight)
            mask_term, dice_term = mask_term / B, dice_term / B
            total = total + MASK_WEIGHT * mask_term + DICE_WEIGHT * dice_term + self.query_weight * query_term
            logs = {"mask": mask_term.detach(), "dice": dice_term.detach(), "query": query_term.detach()}
        if refer_map is not None:
            map_term = self.map_term(refer_map, masks, present)
            total = total + self.map_weight * map_term
            logs["map"] = map_term.detach()
        return {"loss": total, **logs}


class InstanceLoss(nn.Module):
    """`InstanceLoss(config)` (an `IVSConfig` with `instance_classes`); `forward(output: IVSOutput,
    targets: list[vis.loss.FrameTargets], seeds) -> {"loss", "ce", "mask", "dice"}`: the VIS set loss (`vis.loss.SetLoss`) of the queries against every annotated object,
    one sample at a time with its own seed (its point sampling then does not depend on the batch)."""

    def __init__(self, config) -> None:
        super().__init__()
        from dataclasses import replace

        from patchprune.ivs.mask_branch import vis_config
        from patchprune.vis.loss import SetLoss

        classes = config.instance_classes
        if classes < 1:
            raise ValueError(f"the instance loss needs a config with instance_classes >= 1, got {classes}")
        self.set_loss = SetLoss(replace(vis_config(config), categories=list(range(1, classes + 1))).validate())

    def forward(self, output, targets: list, seeds: list[int]) -> dict[str, Tensor]:
        from patchprune.vis.head import HeadOutput

        if output.class_logits is None or output.query_states is None:
            raise ValueError("the instance loss needs a model with a class head (IVSConfig.instance_classes > 0)")
        head = HeadOutput(output.class_logits, output.mask_logits, output.query_states, output.query_states)
        return self.set_loss(head, targets, seeds)
