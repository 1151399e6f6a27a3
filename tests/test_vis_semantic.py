"""The VIS semantic head: per-pixel category targets, mask-pooled class logits, the dense loss term,
and configs written before the head existed."""
from __future__ import annotations

import pytest
import torch

from patchprune.vis.config import VISConfig, named_config
from patchprune.vis.head import mask_pooled_logits
from patchprune.vis.loss import FrameTargets, SetLoss, semantic_targets
from patchprune.vis.model import VISModel, normalise


def small_config(**kw) -> VISConfig:
    base = dict(img_size=64, dim=32, depth=2, heads=2, fpn_dim=32, hidden_dim=32, decoder_layers=2,
                decoder_heads=2, decoder_ffn=64, pixel_ffn=64, num_queries=5, points=64, categories=[1, 2, 3])
    base.update(kw)
    return named_config("tiny", **base)


def test_semantic_targets_label_covered_cells_and_later_instances_win() -> None:
    masks = torch.zeros(2, 16, 16)
    masks[0, 0:8, 0:8] = 1
    masks[1, 4:8, 4:12] = 1  # overlaps the first instance's lower right quarter
    labels = semantic_targets([FrameTargets(masks, torch.tensor([0, 2]))], (4, 4), background=3)[0]
    expected = torch.full((4, 4), 3)
    expected[0:2, 0:2] = 0
    expected[1, 1:3] = 2
    assert torch.equal(labels, expected)
    empty = semantic_targets([FrameTargets(torch.zeros(0, 16, 16), torch.zeros(0, dtype=torch.long))], (4, 4), 3)
    assert torch.equal(empty[0], torch.full((4, 4), 3))
    # a cell less than half covered stays background
    thin = torch.zeros(1, 16, 16)
    thin[0, 0:1, 0:4] = 1
    assert int(semantic_targets([FrameTargets(thin, torch.tensor([1]))], (4, 4), 3)[0, 0, 0]) == 3


def test_mask_pooled_logits_average_under_the_mask_and_leave_masks_alone() -> None:
    sem = torch.randn(1, 4, 6, 6, requires_grad=True)
    masks = torch.full((1, 2, 6, 6), -30.0, requires_grad=True)
    with torch.no_grad():
        masks[0, 0, :3] = 30.0  # query 0 covers the top half
        masks[0, 1, :, :2] = 30.0  # query 1 the two left columns
    pooled = mask_pooled_logits(sem, masks)
    torch.testing.assert_close(pooled[0, 0], sem[0, :, :3].mean((-2, -1)))
    torch.testing.assert_close(pooled[0, 1], sem[0, :, :, :2].mean((-2, -1)))
    pooled.sum().backward()
    assert masks.grad is None and sem.grad is not None and float(sem.grad.abs().sum()) > 0
    # an empty mask gives a small, finite average (the clamp), not a division by zero
    assert torch.isfinite(mask_pooled_logits(sem.detach(), torch.full((1, 1, 6, 6), -100.0))).all()


def test_semantic_loss_term_and_gradient() -> None:
    torch.manual_seed(0)
    cfg = small_config()
    assert cfg.semantic_head
    model = VISModel(cfg)
    out = model(normalise(torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)))
    assert out.head.semantic_logits.shape == (1, 4, 16, 16)
    masks = torch.zeros(1, 64, 64)
    masks[0, 8:40, 16:48] = 1
    targets = [FrameTargets(masks, torch.tensor([2]))]
    logs = {}
    for w in (0.0, 3.0):
        torch.manual_seed(1)
        logs[w] = SetLoss(cfg, semantic_weight=w)(out.head, targets)
    torch.testing.assert_close(logs[3.0]["loss"] - logs[0.0]["loss"], 3.0 * logs[3.0]["sem"])
    logs[3.0]["loss"].backward()
    assert float(model.head.semantic.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="semantic_weight"):
        SetLoss(cfg, semantic_weight=-1)


def test_per_sample_seeded_loss_keeps_the_semantic_term() -> None:
    torch.manual_seed(0)
    cfg = small_config()
    model = VISModel(cfg).eval()
    with torch.no_grad():
        out = model(normalise(torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)))
    masks = torch.zeros(1, 64, 64)
    masks[0, 8:40, 16:48] = 1
    targets = [FrameTargets(masks, torch.tensor([1])), FrameTargets(masks, torch.tensor([0]))]
    both = SetLoss(cfg)(out.head, targets, seeds=[5, 6])
    one = SetLoss(cfg)(out.head.sample(1), targets[1:], seeds=[6])
    assert "sem" in both
    assert float(both["sem"]) != pytest.approx(float(one["sem"]))  # the two samples differ
    torch.testing.assert_close(one["sem"], SetLoss(cfg)(out.head.sample(1), targets[1:])["sem"])


def test_configs_without_the_field_build_the_plain_head() -> None:
    data = small_config().to_json()
    del data["semantic_head"]  # a config.json written before the semantic head
    old = VISConfig.from_json(data)
    assert not old.semantic_head and VISModel(old).head.semantic is None
    assert old.fingerprint() != small_config().fingerprint()  # a checkpoint of the other kind is refused
    out = VISModel(old).eval()(torch.zeros(1, 3, 64, 64))
    assert out.head.semantic_logits is None
