"""Label-preserving training augmentation of VIS frames: colour and scale.

Why: on a small training set a from-scratch model learns the *scenes*, not the categories (the
tiny model trained on 120 generated videos puts the right class on 91 % of the instances it finds
in training videos and on 26 % in valid ones, docs/vis.md). Categories of the generated sets (and of
most real ones) do not depend on an object's colour, position or exact size, so these draws change
the shortcuts and keep the labels:

- colour: a random permutation of the RGB channels, each channel inverted with probability 1/2,
  then a random gain (0.7-1.3) and offset (+-0.1 of the range) per channel;
- crop: a random square crop of 1/s of the side (s uniform in [1, max_zoom]) resized back to the
  frame size (frames bilinear, masks nearest); instances the crop removes leave the targets.

One draw per sample: every frame of a stage-2 chain gets the same transform (the Map-SM's
previous-frame prior must see the same geometry). All draws come from the step's generator, so a
resumed run sees the same batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from patchprune.validate import comma_list
from patchprune.vis.loss import FrameTargets

AUGMENTATIONS = ("colour", "crop")


def parse_augment(text: str | None) -> tuple[str, ...]:
    """'colour,crop' -> ('colour', 'crop'); '' or 'none' -> (); ValueError naming --augment otherwise."""
    if not text or text == "none":
        return ()
    return tuple(comma_list("--augment", text, allowed=AUGMENTATIONS))


@dataclass
class Draw:
    """One sample's transform."""

    perm: Tensor | None = None  # [3] channel order
    invert: Tensor | None = None  # [3] bool
    gain: Tensor | None = None  # [3]
    offset: Tensor | None = None  # [3], in [0, 255] units
    box: tuple[int, int, int] | None = None  # (top, left, side) of the crop


def draw(kinds: tuple[str, ...], side: int, gen: torch.Generator, max_zoom: float = 1.5) -> Draw:
    """A random transform of the given kinds for frames of side `side`."""
    d = Draw()
    if "colour" in kinds:
        d.perm = torch.randperm(3, generator=gen)
        d.invert = torch.rand(3, generator=gen) < 0.5
        d.gain = 0.7 + 0.6 * torch.rand(3, generator=gen)
        d.offset = (torch.rand(3, generator=gen) - 0.5) * 51.0
    if "crop" in kinds:
        zoom = 1.0 + (max_zoom - 1.0) * float(torch.rand(1, generator=gen))
        crop = max(8, int(round(side / zoom)))
        top = int(torch.randint(0, side - crop + 1, (1,), generator=gen))
        left = int(torch.randint(0, side - crop + 1, (1,), generator=gen))
        d.box = (top, left, crop)
    return d


def apply(d: Draw, frame: Tensor, target: FrameTargets) -> tuple[Tensor, FrameTargets]:
    """Transform one uint8 frame [S, S, 3] and its targets."""
    if d.perm is not None:
        x = frame.float()[..., d.perm]
        x = torch.where(d.invert, 255.0 - x, x) * d.gain + d.offset
        frame = x.clamp_(0, 255).round_().to(torch.uint8)
    if d.box is not None:
        top, left, crop = d.box
        side = frame.shape[0]
        patch = frame[top:top + crop, left:left + crop].permute(2, 0, 1)[None].float()
        frame = F.interpolate(patch, size=(side, side), mode="bilinear", align_corners=False)[0]
        frame = frame.round_().clamp_(0, 255).permute(1, 2, 0).to(torch.uint8)
        masks = target.masks[:, top:top + crop, left:left + crop]
        masks = F.interpolate(masks[None].float(), size=(side, side), mode="nearest")[0] > 0.5 if masks.shape[0] \
            else torch.zeros(0, side, side, dtype=torch.bool)
        present = masks.flatten(1).any(1)
        target = FrameTargets(masks=masks[present].to(target.masks.dtype), labels=target.labels[present],
                              ids=None if target.ids is None else target.ids[present])
    return frame, target
