"""The referring map of the IVS target head: pooled under each query's mask it ranks the query on the
map's bright region first, it leaves the masks alone (detached), its loss term rewards the right map,
an absent object only pushes the map down, and the model carries it end to end; the conv stem of the
mask branch (the VIS recipe) trains; old configs without these fields still load."""
from __future__ import annotations

import pytest
import torch

from patchprune.ivs.config import IVSConfig, named_config
from patchprune.ivs.loss import ReferLoss
from patchprune.ivs.model import IVSModel
from patchprune.ivs.target_head import TargetHead
from patchprune.ivs.tokenizer import build_tokenizer
from tests.test_ivs_model import TEXTS, make


def two_queries() -> torch.Tensor:
    """Mask logits [1, 3, 4, 4]: query 0 on the top-left quarter, query 1 on the bottom-right, query 2 empty."""
    m = torch.full((1, 3, 4, 4), -9.0)
    m[0, 0, :2, :2] = 9.0
    m[0, 1, 2:, 2:] = 9.0
    return m


def test_pooled_map_ranks_the_query_on_the_bright_region() -> None:
    pixel_map = torch.full((1, 4, 4), -3.0)
    pixel_map[0, 2:, 2:] = 4.0
    pixel_map.requires_grad_()
    masks = two_queries().requires_grad_()
    pooled = TargetHead.pooled(pixel_map, masks)
    assert pooled.shape == (1, 3)
    assert pooled[0, 1] > 2.5 and pooled[0, 0] < -2.0  # mean under each mask (one pseudo-pixel at 0)
    assert abs(float(pooled[0, 2].detach())) < 0.1  # an empty mask stays near 0
    pooled.sum().backward()
    assert pixel_map.grad is not None and masks.grad is None  # the map scores masks; it does not reshape them


def test_map_term_rewards_the_right_map_and_absent_objects_only_push_down() -> None:
    target = torch.zeros(2, 4, 4)
    target[:, 2:, 2:] = 1.0
    right = torch.where(target > 0, 6.0, -6.0)
    wrong = -right
    present = torch.tensor([True, True])
    loss = ReferLoss(map_weight=2.0)
    assert loss.map_term(right, target, present) < 0.05 < loss.map_term(wrong, target, present)
    absent = torch.tensor([False, False])
    empty = torch.zeros(2, 4, 4)
    m = torch.zeros(2, 4, 4, requires_grad=True)
    term = loss.map_term(m, empty, absent)
    assert torch.isclose(term, torch.log(torch.tensor(2.0)))  # BCE only, no dice on an absent object
    term.backward()
    assert (m.grad > 0).all()


def test_map_term_is_weighted_into_the_loss() -> None:
    target = torch.zeros(1, 4, 4)
    target[0, 2:, 2:] = 1.0
    masks, q = two_queries(), torch.tensor([[-5.0, 5.0, -5.0]])
    pixel_map = torch.zeros(1, 4, 4)
    present = torch.tensor([True])
    without = ReferLoss()([masks], [q], target, present)
    with_map = ReferLoss(map_weight=3.0)([masks], [q], target, present, pixel_map)
    assert "map" not in without
    assert torch.isclose(with_map["loss"], without["loss"] + 3.0 * with_map["map"])


def test_model_with_refer_map_trains_it_and_adds_it_to_the_query_logits() -> None:
    tok = build_tokenizer(TEXTS)
    torch.manual_seed(0)
    cfg = named_config("micro", vocab_size=tok.get_vocab_size(), refer_map=True)
    model = IVSModel(cfg).train()
    batch = make(tok, cfg, video=False)
    out = model(batch)
    h = cfg.img_size // 4
    assert out.refer_map is not None and out.refer_map.shape == (2, h, h)
    target = torch.zeros(2, h, h)
    target[:, : h // 2] = 1.0
    ReferLoss()(out.mask_logits, out.query_logits, target, torch.tensor([True, True]), out.refer_map)["loss"].backward()
    head = model.target_head
    for p in (head.map_text.weight, head.map_pixels.weight, head.map_bias):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the query logits are the dot-product logits plus the pooled map
    with torch.no_grad():
        model.target_head.map_bias.add_(5.0)
        brighter = model(batch)
    assert (brighter.query_logits[-1] - out.query_logits[-1].detach() > 0).all()


def test_tiny_recipe_and_configs_without_the_fields_load_without_it() -> None:
    tiny, micro = named_config("tiny"), named_config("micro")
    assert tiny.refer_map and tiny.mask_stem == "conv" and not micro.refer_map and micro.mask_stem == "patch"
    old = {k: v for k, v in micro.to_json().items() if k not in ("refer_map", "mask_stem")}
    assert IVSConfig.from_json(old) == micro
    with pytest.raises(ValueError, match="mask_stem"):
        named_config("micro", mask_stem="pixel")


def test_conv_mask_stem_is_trained() -> None:
    from patchprune.vis.stem import ConvStem

    tok = build_tokenizer(TEXTS)
    torch.manual_seed(0)
    cfg = named_config("micro", vocab_size=tok.get_vocab_size(), mask_stem="conv")
    model = IVSModel(cfg).train()
    assert isinstance(model.mask_branch.encoder.patch_embed.proj, ConvStem)
    out = model(make(tok, cfg, video=False))
    out.mask_logits[-1].mean().backward()
    assert model.mask_branch.encoder.patch_embed.proj.body[0].weight.grad.abs().sum() > 0
