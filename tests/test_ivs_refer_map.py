"""The IVS referring map: pooled under each query's mask it ranks the query on the map's bright region
first and leaves the masks alone (detached); its loss term rewards the right map and an absent object
only pushes the map down; the "tokens" map spreads each kept token's logit to its nearest cells, so
pruning changes it; the model carries both kinds end to end; the conv stem of the mask branch (the
VIS recipe) trains; old configs without these fields still load."""
from __future__ import annotations

import pytest
import torch

from patchprune.ivs.config import IVSConfig, named_config
from patchprune.ivs.loss import ReferLoss
from patchprune.ivs.model import IVSModel
from patchprune.ivs.refer_map import ReferMap, nearest_kept
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
    pooled = ReferMap.pooled(pixel_map, masks)
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


def test_nearest_kept_spreads_each_token_to_its_cells() -> None:
    index = torch.tensor([[0, 15]])  # corners of a 4 x 4 grid
    slots = nearest_kept(index, (4, 4)).view(4, 4)
    assert slots[0, 0] == 0 and slots[3, 3] == 1 and slots[0, 1] == 0 and slots[2, 3] == 1
    full = torch.arange(16).unsqueeze(0)
    assert torch.equal(nearest_kept(full, (4, 4)), full)  # dense: every cell is its own token


def test_token_map_sees_only_the_kept_tokens() -> None:
    torch.manual_seed(0)
    m = ReferMap("tokens", 8, 32)
    refer, states = torch.randn(1, 8), torch.randn(1, 16, 8)
    dense = m.from_tokens(refer, states, torch.arange(16).unsqueeze(0), (4, 4), (4, 4))
    kept = torch.tensor([[0, 5, 10, 15]])
    pruned = m.from_tokens(refer, states[:, kept[0]], kept, (4, 4), (4, 4))
    assert dense.shape == pruned.shape == (1, 4, 4)
    assert torch.allclose(pruned[0, 0, 0], dense[0, 0, 0]) and torch.allclose(pruned[0, 3, 3], dense[0, 3, 3])
    assert not torch.allclose(pruned, dense)  # cells of dropped tokens take a kept neighbour's logit
    assert torch.allclose(pruned[0, 0, 1], pruned[0, 0, 0])


@pytest.mark.parametrize("kind", ["tokens", "pixels"])
def test_model_with_refer_map_trains_it_and_adds_it_to_the_query_logits(kind: str) -> None:
    tok = build_tokenizer(TEXTS)
    torch.manual_seed(0)
    cfg = named_config("micro", vocab_size=tok.get_vocab_size(), refer_map=kind)
    model = IVSModel(cfg).train()
    batch = make(tok, cfg, video=kind == "tokens")
    out = model(batch)
    h = cfg.img_size // 4
    assert out.refer_map is not None and out.refer_map.shape == (2, h, h)
    target = torch.zeros(2, h, h)
    target[:, : h // 2] = 1.0
    ReferLoss()(out.mask_logits, out.query_logits, target, torch.tensor([True, True]), out.refer_map)["loss"].backward()
    for p in model.refer_map.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    if kind == "tokens":  # the map reaches the vision tower through the LLM's visual-token states
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.vision.parameters())
    # the query logits are the dot-product logits plus the pooled map
    with torch.no_grad():
        model.refer_map.bias.add_(5.0)
        brighter = model(batch)
    assert (brighter.query_logits[-1] - out.query_logits[-1].detach() > 0).all()


def test_token_map_changes_with_selection() -> None:
    tok = build_tokenizer(TEXTS)
    torch.manual_seed(0)
    cfg = named_config("micro", vocab_size=tok.get_vocab_size(), refer_map="tokens")
    model = IVSModel(cfg).eval()
    batch = make(tok, cfg, video=False)
    with torch.no_grad():
        dense, pruned = model(batch), model(batch, method="kcenter", ratio=0.25)
    assert pruned.kept_tokens < dense.kept_tokens
    assert not torch.allclose(dense.refer_map, pruned.refer_map)


def test_tiny_recipe_and_configs_without_the_fields_load_without_it() -> None:
    tiny, micro = named_config("tiny"), named_config("micro")
    assert tiny.refer_map == "tokens" and tiny.mask_stem == "conv"
    assert micro.refer_map == "none" and micro.mask_stem == "patch"
    old = {k: v for k, v in micro.to_json().items() if k not in ("refer_map", "mask_stem")}
    assert IVSConfig.from_json(old) == micro
    with pytest.raises(ValueError, match="mask_stem"):
        named_config("micro", mask_stem="pixel")
    with pytest.raises(ValueError, match="refer_map"):
        named_config("micro", refer_map="words")


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
