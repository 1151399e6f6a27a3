"""ROVIS frame-pair training (vis.md): identity travels with track queries.

key frame, learned queries -> set loss (the caller's) and the key matching; matched queries are kept
with p 0.8 and unmatched (false-positive) ones added with p 0.2 as track queries (detached, zero
positional embedding) -> reference frame: a track query's target is the ground truth of the same
instance id (no-object when that instance is absent or the query was a false positive), the other
ground truths are Hungarian-matched among the learned queries -> the reference frame's kept outputs
go back to the key frame as track queries, assigned the same way. Both pair losses are x0.5
(`PAIR_WEIGHT`), with the Mask2Former term weights, on every decoder layer.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from patchprune.vis.head import HeadOutput
from patchprune.vis.loss import LOSS_WEIGHTS, FrameTargets, SetLoss

KEEP_MATCHED = 0.8
ADD_FALSE_POSITIVE = 0.2
PAIR_WEIGHT = 0.5


def assigned_loss(criterion: SetLoss, out: HeadOutput, targets: list[FrameTargets],
                  indices: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Weighted set loss with a given assignment (pred rows, target rows) per sample, all layers."""
    crit = criterion.criterion
    masks = [t.masks.float() for t in targets]
    labels = [t.labels.long() for t in targets]
    n = sum(len(i) for i, _ in indices)
    dev = out.mask_logits[-1].device
    total = torch.zeros((), device=dev)
    for cls, msk in zip(out.class_logits, out.mask_logits):
        total = total + LOSS_WEIGHTS["loss_cross_entropy"] * crit.loss_labels(cls, labels, indices)["loss_cross_entropy"]
        if n:
            m = crit.loss_masks(msk, masks, indices, torch.tensor(float(n), device=dev))
            total = total + LOSS_WEIGHTS["loss_mask"] * m["loss_mask"] + LOSS_WEIGHTS["loss_dice"] * m["loss_dice"]
    return total


def choose_track_queries(hidden: Tensor, matches: list[tuple[Tensor, Tensor]], targets: list[FrameTargets],
                         gen: torch.Generator) -> tuple[Tensor, list[list[int]]]:
    """Track queries [B, E, D] (zero-padded) and, per sample and slot, the instance id it follows
    (-1: a false positive or padding)."""
    B, Q, D = hidden.shape
    picks: list[list[tuple[int, int]]] = []
    for b in range(B):
        pred, gt = matches[b]
        ids = targets[b].ids
        chosen = [(int(p), int(ids[g])) for p, g in zip(pred.tolist(), gt.tolist())
                  if float(torch.rand(1, generator=gen)) < KEEP_MATCHED]
        matched = set(pred.tolist())
        chosen += [(q, -1) for q in range(Q) if q not in matched and float(torch.rand(1, generator=gen)) < ADD_FALSE_POSITIVE]
        picks.append(chosen)
    E = max(1, max(len(p) for p in picks))
    tq = hidden.new_zeros(B, E, D)
    follow = [[-1] * E for _ in range(B)]
    for b, chosen in enumerate(picks):
        for e, (q, ident) in enumerate(chosen):
            tq[b, e] = hidden[b, q]
            follow[b][e] = ident
    return tq.detach(), follow


def track_assignment(criterion: SetLoss, out: HeadOutput, targets: list[FrameTargets], follow: list[list[int]],
                     num_queries: int) -> list[tuple[Tensor, Tensor]]:
    """Track query slots -> the ground truth of their instance id; the rest Hungarian among learned queries."""
    indices = []
    for b, tg in enumerate(targets):
        ids = tg.ids.tolist()
        pred, gt = [], []
        for e, ident in enumerate(follow[b]):
            if ident >= 0 and ident in ids:
                pred.append(num_queries + e)
                gt.append(ids.index(ident))
        rest = [j for j in range(len(ids)) if j not in gt]
        if rest:
            sub = FrameTargets(tg.masks[rest], tg.labels[rest], tg.ids[rest])
            (p, g), = criterion.criterion.matcher(out.mask_logits[-1][b:b + 1, :num_queries],
                                                  out.class_logits[-1][b:b + 1, :num_queries],
                                                  [sub.masks.float()], [sub.labels])
            pred += p.tolist()
            gt += [rest[j] for j in g.tolist()]
        indices.append((torch.as_tensor(pred, dtype=torch.long), torch.as_tensor(gt, dtype=torch.long)))
    return indices


def pair_loss(forward: Callable[[Tensor, Tensor | None], HeadOutput], criterion: SetLoss, key_out: HeadOutput,
              key: tuple[Tensor, list[FrameTargets]], ref: tuple[Tensor, list[FrameTargets]], num_queries: int,
              gen: torch.Generator) -> Tensor:
    """0.5 x (reference-frame loss with key track queries + key-frame loss with reference track queries).

    forward(images, track_queries) -> HeadOutput runs the model (the caller decides dense / pruned)."""
    key_images, key_targets = key
    ref_images, ref_targets = ref
    matches = criterion.criterion.matcher(key_out.mask_logits[-1], key_out.class_logits[-1],
                                          [t.masks.float() for t in key_targets], [t.labels for t in key_targets])
    tq, follow = choose_track_queries(key_out.hidden, matches, key_targets, gen)
    ref_out = forward(ref_images, tq)
    ref_idx = track_assignment(criterion, ref_out, ref_targets, follow, num_queries)
    loss = assigned_loss(criterion, ref_out, ref_targets, ref_idx)
    # back to the key frame: every reference output that now follows an instance, plus the track slots
    back_follow, back_rows = [], []
    for b, (pred, gt) in enumerate(ref_idx):
        ids = ref_targets[b].ids.tolist()
        rows = pred.tolist()
        back_rows.append(rows)
        back_follow.append([ids[g] for g in gt.tolist()])
    E = max(1, max(len(r) for r in back_rows))
    B, _, D = ref_out.hidden.shape
    tq2 = ref_out.hidden.new_zeros(B, E, D)
    follow2 = [[-1] * E for _ in range(B)]
    for b, rows in enumerate(back_rows):
        for e, r in enumerate(rows):
            tq2[b, e] = ref_out.hidden[b, r]
            follow2[b][e] = back_follow[b][e]
    key2 = forward(key_images, tq2.detach())
    loss = loss + assigned_loss(criterion, key2, key_targets, track_assignment(criterion, key2, key_targets, follow2,
                                                                               num_queries))
    return PAIR_WEIGHT * loss
