"""VIS training augmentation (`vis.augment`) and the conv stem (`vis.stem`): labels follow the
pixels, draws are reproducible, errors name the flag, the stem keeps the ViT's token grid."""
from __future__ import annotations

import pytest
import torch

from patchprune.vis.augment import Draw, apply, draw, parse_augment
from patchprune.vis.config import named_config
from patchprune.vis.loss import FrameTargets
from patchprune.vis.model import VISModel, normalise
from patchprune.vis.stem import ConvStem


def _scene() -> tuple[torch.Tensor, FrameTargets]:
    frame = torch.zeros(32, 32, 3, dtype=torch.uint8)
    frame[4:12, 4:12] = torch.tensor([200, 40, 10], dtype=torch.uint8)
    frame[20:30, 18:30] = torch.tensor([10, 250, 90], dtype=torch.uint8)
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 4:12, 4:12] = True
    masks[1, 20:30, 18:30] = True
    return frame, FrameTargets(masks, torch.tensor([3, 1]), torch.tensor([0, 1]))


def test_parse_augment() -> None:
    assert parse_augment("colour,crop") == ("colour", "crop")
    assert parse_augment("none") == parse_augment("") == parse_augment(None) == ()
    with pytest.raises(ValueError, match="--augment.*flip"):
        parse_augment("colour,flip")


def test_colour_permutes_and_inverts_channels_and_keeps_targets() -> None:
    frame, target = _scene()
    d = Draw(perm=torch.tensor([2, 0, 1]), invert=torch.tensor([True, False, False]),
             gain=torch.ones(3), offset=torch.zeros(3))
    out, t = apply(d, frame, target)
    assert out[5, 5].tolist() == [255 - 10, 200, 40]
    assert t is target


def test_crop_moves_masks_with_the_pixels_and_drops_instances_it_cuts_away() -> None:
    frame, target = _scene()
    out, t = apply(Draw(box=(0, 0, 16)), frame, target)  # the top-left quarter, zoomed x2
    assert t.labels.tolist() == [3] and t.ids.tolist() == [0]  # the second instance is outside
    assert t.masks.shape == (1, 32, 32) and t.masks.dtype == torch.bool
    inside = t.masks[0]
    assert inside[8:24, 8:24].all() and not inside[:6].any()
    # the instance's pixels are where its mask is
    assert (out[inside].float()[:, 0] >= 100).all()  # edges blend (bilinear), interiors are the object


def test_draws_are_reproducible_and_within_range() -> None:
    a = draw(("colour", "crop"), 96, torch.Generator().manual_seed(3))
    b = draw(("colour", "crop"), 96, torch.Generator().manual_seed(3))
    assert torch.equal(a.perm, b.perm) and a.box == b.box
    assert sorted(a.perm.tolist()) == [0, 1, 2]
    top, left, side = a.box
    assert 64 <= side <= 96 and 0 <= top <= 96 - side and 0 <= left <= 96 - side
    assert draw((), 96, torch.Generator()) == Draw()


def test_conv_stem_keeps_the_grid_and_counts_its_macs() -> None:
    stem = ConvStem(3, 32, 8)
    x = torch.randn(1, 3, 40, 56)
    assert stem(x).shape == (1, 32, 5, 7)
    manual = sum(c.weight.numel() * h * w for c, (h, w) in zip(
        [m for m in stem.body if isinstance(m, torch.nn.Conv2d)] + [stem.out], [(20, 28), (10, 14), (5, 7), (5, 7)]))
    assert stem.macs(40, 56) == manual
    with pytest.raises(ValueError, match="power-of-two"):
        ConvStem(3, 32, 6)


def test_vis_model_with_conv_stem_trains_end_to_end() -> None:
    torch.manual_seed(0)
    cfg = named_config("tiny", img_size=64, dim=32, depth=2, heads=2, fpn_dim=32, hidden_dim=32, decoder_layers=1,
                       decoder_heads=2, decoder_ffn=64, pixel_ffn=64, num_queries=3, points=32, categories=[1, 2],
                       stem="conv")
    model = VISModel(cfg)
    out = model(normalise(torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)))
    assert out.mask_logits.shape == (2, 3, 16, 16)
    out.mask_logits.sum().backward()
    assert model.backbone.patch_embed.proj.body[0].weight.grad is not None
    with pytest.raises(ValueError, match="stem"):
        named_config("tiny", stem="cnn")


def test_closed_form_vit_macs_count_the_conv_stem() -> None:
    from patchprune.metrics.flops import vit_macs

    def backbone(stem: str):
        return VISModel(named_config("tiny", img_size=64, dim=32, depth=2, heads=2, fpn_dim=32, hidden_dim=32,
                                     categories=[1], stem=stem)).backbone

    conv, plain = backbone("conv"), backbone("patch")
    extra = conv.patch_embed.proj.macs(64, 64) - 64 * 3 * 8 * 8 * 32
    assert vit_macs(conv, (8, 8)) - vit_macs(plain, (8, 8)) == extra > 0
