"""Rebuild input ids and attention mask with K_i image placeholders per image.

The model scatters image features into its placeholder tokens in row-major order: image i owns the
placeholders with running number g in [i N, (i + 1) N). Keeping the first K_i of them (they are all
the same token) and dropping padding, then re-padding on the caller's side, gives the compacted
prompt (positions have no gaps). Vectorised over the batch: no Python loop over tokens.

Dense positions (`kept_slots`): each kept placeholder takes the position its kept token had in the
unpruned prompt (the slot it came from), and every other token keeps its own: the language model
sees the relative distances it was trained on, with gaps where tokens were dropped. The rebuilt
prompt then carries `position_ids`; pass them with the attention mask (transformers reads position
steps other than 1 without a mask and without a cache as packed sequences).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Prompt:
    input_ids: Tensor  # [B, S'] with K_i placeholders per image
    attention_mask: Tensor  # [B, S'] 1 on real tokens
    position_ids: Tensor | None = None  # [B, S'] dense positions (only when asked for; padding 0)


def check_prompt(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Validate ids [B, S] (integer) and the mask; returns the mask as bool [B, S]."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ValueError(f"input_ids must be an integer tensor [batch, sequence], got "
                         f"{getattr(input_ids, 'shape', type(input_ids))}")
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                         f"got {tuple(attention_mask.shape)}")
    return attention_mask.bool()


def infer_padding_side(mask: Tensor) -> str:
    """'left' when some row starts with padding and every row ends with a real token, else 'right'."""
    if bool((~mask[:, 0]).any()) and bool(mask[:, -1].all()):
        return "left"
    return "right"


def images_per_sample(input_ids: Tensor, mask: Tensor, image_token_id: int, tokens_per_image: int,
                      n_images: int, what: str = "image", source: str = "pixel_values") -> Tensor:
    """[B] images (videos) each sample's placeholders stand for; ValueError when counts and inputs disagree."""
    counts = ((input_ids == image_token_id) & mask).sum(1)
    bad = (counts % tokens_per_image).nonzero().flatten()
    if bad.numel():
        b = int(bad[0])
        raise ValueError(f"sample {b} has {int(counts[b])} {what} placeholders, not a multiple of the "
                         f"{tokens_per_image} features per {what}; build the prompt with the model's processor")
    per_sample = counts // tokens_per_image
    needed = torch.cumsum(per_sample, 0)
    if int(needed[-1]) > n_images:
        b = int((needed > n_images).nonzero()[0])
        raise ValueError(f"{what}s missing: sample {b} has {what} placeholders for {what}s up to #{int(needed[b])} "
                         f"but {source} holds {n_images} {what}(s); pass one {what} per placeholder run")
    if int(needed[-1]) < n_images:
        raise ValueError(f"{source} holds {n_images} {what}s but the prompts have placeholders for "
                         f"{int(needed[-1])}; pass exactly one {what} per placeholder run")
    return per_sample


def default_positions(mask: Tensor, generate: bool) -> Tensor:
    """[B, S] positions the model gives an unpruned prompt: its forward numbers every slot
    (arange, padding included); generate numbers real tokens (cumsum of the mask - 1, padding 0)."""
    if generate:
        return (torch.cumsum(mask.long(), 1) - 1).clamp_min(0).masked_fill(~mask, 0)
    return torch.arange(mask.shape[1], device=mask.device).expand(mask.shape)


def rebuild_prompt(input_ids: Tensor, mask: Tensor, image_token_id: int, tokens_per_image: int,
                   keep_counts: Tensor, pad_token_id: int, padding_side: str, kept_slots: Tensor | None = None,
                   positions: Tensor | None = None) -> Prompt:
    """Keep the first keep_counts[i] placeholders of image i, drop padding, re-pad on `padding_side`.

    kept_slots: the slot (0 .. tokens_per_image - 1) of every kept token, image after image
    (sum(keep_counts) values, in the order the features fill the placeholders): the result then
    carries dense position ids, starting from `positions` [B, S] (the prompt's own; default: every
    token numbered by its slot, `default_positions(mask, False)`)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    is_img = (input_ids == image_token_id) & mask
    running = torch.cumsum(is_img.reshape(-1).long(), 0).view_as(input_ids) - 1  # placeholder number
    image = torch.div(running.clamp_min(0), tokens_per_image, rounding_mode="floor")
    slot = running.clamp_min(0) % tokens_per_image
    if keep_counts.numel():
        limit = keep_counts.to(input_ids.device)[image.clamp_max(keep_counts.numel() - 1)]
    else:
        limit = torch.zeros_like(input_ids)
    keep = mask & (~is_img | (slot < limit))
    lengths = keep.sum(1)
    width = int(lengths.max())
    pos = torch.cumsum(keep.long(), 1) - 1
    if padding_side == "left":
        pos = pos + (width - lengths)[:, None]
    B = input_ids.shape[0]
    rows = torch.arange(B, device=input_ids.device)[:, None].expand_as(input_ids)
    ids = input_ids.new_full((B, width), int(pad_token_id))
    ids[rows[keep], pos[keep]] = input_ids[keep]
    new_mask = torch.zeros((B, width), dtype=torch.long, device=input_ids.device)
    new_mask[rows[keep], pos[keep]] = 1
    position_ids = None
    if kept_slots is not None or positions is not None:
        dense = default_positions(mask, False) if positions is None else positions
        if kept_slots is not None and keep_counts.numel():
            if kept_slots.numel() != int(keep_counts.sum()):
                raise ValueError(f"kept_slots holds {kept_slots.numel()} slots but keep_counts sums to "
                                 f"{int(keep_counts.sum())}")
            starts = torch.cumsum(keep_counts, 0) - keep_counts  # first kept slot of each image
            at = (starts.to(input_ids.device)[image.clamp_max(keep_counts.numel() - 1)] + slot)
            at = at.clamp_max(kept_slots.numel() - 1)
            moved = kept_slots.to(input_ids.device)[at] - slot  # where the kept token sat, minus where it lands
            dense = dense + torch.where(is_img & (slot < limit), moved, torch.zeros_like(moved))
        position_ids = torch.zeros((B, width), dtype=torch.long, device=input_ids.device)
        position_ids[rows[keep], pos[keep]] = dense[keep]
    return Prompt(input_ids=ids, attention_mask=new_mask, position_ids=position_ids)
