"""The IVS loss on hand-made cases: Hungarian matching picks the query whose mask fits, the matched
query is the positive of the query BCE, an absent object gives only negatives, every layer counts."""
from __future__ import annotations

import torch

from patchprune.ivs.loss import QUERY_WEIGHT, ReferLoss, match, target_masks


def masks_and_target():
    target = torch.zeros(1, 4, 4)
    target[0, :2, :2] = 1.0
    logits = torch.full((1, 3, 4, 4), -8.0)
    logits[0, 0, 2:, 2:] = 8.0  # wrong place
    logits[0, 2, :2, :2] = 8.0  # right place
    return logits, target


def test_match_picks_the_fitting_query() -> None:
    logits, target = masks_and_target()
    assert match(logits[0].flatten(1), target[0].flatten()) == 2


def test_matched_query_is_the_positive() -> None:
    logits, target = masks_and_target()
    good = torch.tensor([[-5.0, -5.0, 5.0]], requires_grad=True)
    bad = torch.tensor([[5.0, -5.0, -5.0]], requires_grad=True)
    loss = ReferLoss()
    lg = loss([logits], [good], target, torch.tensor([True]))
    lb = loss([logits], [bad], target, torch.tensor([True]))
    assert lg["query"] < 0.05 < lb["query"]
    assert lg["mask"] < 0.01 and lg["dice"] < 0.01  # the matched mask is right
    lb["loss"].backward()
    assert bad.grad[0, 2] < 0 and bad.grad[0, 0] > 0  # push the matched query up, the wrong one down


def test_absent_object_has_no_mask_term_and_only_negatives() -> None:
    logits, target = masks_and_target()
    q = torch.zeros(1, 3, requires_grad=True)
    out = ReferLoss()([logits.requires_grad_()], [q], torch.zeros_like(target), torch.tensor([False]))
    assert out["mask"] == 0 and out["dice"] == 0
    assert torch.isclose(out["loss"], QUERY_WEIGHT * torch.log(torch.tensor(2.0)))
    out["loss"].backward()
    assert (q.grad > 0).all() and (logits.grad is None or logits.grad.abs().sum() == 0)


def test_every_layer_is_supervised() -> None:
    logits, target = masks_and_target()
    q = torch.tensor([[-5.0, -5.0, 5.0]])
    one = ReferLoss()([logits], [q], target, torch.tensor([True]))["loss"]
    two = ReferLoss()([logits, logits], [q, q], target, torch.tensor([True]))["loss"]
    assert torch.isclose(two, 2 * one)


def test_target_masks_are_area_fractions() -> None:
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, :2, :1] = True
    t = target_masks(m, (4, 4))
    assert t.shape == (1, 4, 4) and float(t[0, 0, 0]) == 0.5 and float(t.sum()) == 0.5


def test_query_weight_scales_only_the_choice_term() -> None:
    logits, target = masks_and_target()
    q = torch.tensor([[1.0, -2.0, 0.5]])
    base = ReferLoss()([logits], [q], target, torch.tensor([True]))
    heavy = ReferLoss(query_weight=QUERY_WEIGHT + 8.0)([logits], [q], target, torch.tensor([True]))
    assert torch.allclose(heavy["loss"] - base["loss"], 8.0 * base["query"])
    assert torch.equal(heavy["mask"], base["mask"]) and torch.equal(heavy["dice"], base["dice"])
