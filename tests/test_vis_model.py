"""VIS model parts on tiny configs: shapes, gradients through every part, config checks."""
from __future__ import annotations

import pytest
import torch

from patchprune.vis.config import VISConfig, named_config
from patchprune.vis.loss import FrameTargets, SetLoss
from patchprune.vis.model import VISModel, normalise
from patchprune.vis.pyramid import SimpleFeaturePyramid


def small_config(**kw) -> VISConfig:
    base = dict(img_size=64, dim=32, depth=2, heads=2, fpn_dim=32, hidden_dim=32, decoder_layers=2,
                decoder_heads=2, decoder_ffn=64, pixel_ffn=64, num_queries=5, points=64, categories=[1, 2, 3])
    base.update(kw)
    return named_config("tiny", **base)


@pytest.mark.parametrize("patch", [8, 16])
def test_pyramid_strides(patch: int) -> None:
    grid = torch.randn(2, 24, 128 // patch, 96 // patch)
    maps = SimpleFeaturePyramid(24, 32, patch)(grid)
    assert [tuple(m.shape[-2:]) for m in maps] == [(128 // s, 96 // s) for s in (4, 8, 16, 32)]
    assert all(m.shape[:2] == (2, 32) for m in maps)


def test_forward_shapes_and_gradients_reach_every_part() -> None:
    torch.manual_seed(0)
    cfg = small_config()
    model = VISModel(cfg)
    images = normalise(torch.randint(0, 256, (2, 64, 96, 3), dtype=torch.uint8))
    out = model(images)
    layers = cfg.decoder_layers + 1  # Mask2Former also supervises the queries before the first layer
    assert len(out.head.class_logits) == len(out.head.mask_logits) == layers
    assert out.class_logits.shape == (2, 5, 4)
    assert out.mask_logits.shape == (2, 5, 16, 24)
    assert out.head.queries.shape == out.head.hidden.shape == (2, 5, 32)
    masks = torch.zeros(2, 64, 96)
    masks[0, 10:30, 20:50] = 1
    targets = [FrameTargets(masks[:1], torch.tensor([1])), FrameTargets(masks[:0], torch.zeros(0, dtype=torch.long))]
    logs = SetLoss(cfg)(out.head, targets)
    assert torch.isfinite(logs["loss"]) and logs["loss"] > 0
    logs["loss"].backward()
    parts = {"backbone": model.backbone, "pyramid": model.pyramid, "pixel_decoder": model.head.pixel_decoder,
             "transformer": model.head.transformer, "class_head": model.head.class_head}
    for name, part in parts.items():
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), f"no gradient reaches {name}"


def test_track_queries_are_appended() -> None:
    torch.manual_seed(0)
    model = VISModel(small_config()).eval()
    images = normalise(torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8))
    with torch.no_grad():
        plain = model(images)
        tracked = model(images, track_queries=plain.head.hidden[:, :3])
    assert tracked.class_logits.shape == (1, 8, 4)
    assert tracked.mask_logits.shape[1] == 8


def test_head_initialised_without_uninitialised_memory() -> None:
    torch.manual_seed(0)
    model = VISModel(small_config())
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
    assert float(model.head.pixel_decoder.level_embed.detach().std()) > 0.1


def test_config_checks_and_round_trip(tmp_path) -> None:
    with pytest.raises(ValueError, match="fpn_dim"):
        small_config(fpn_dim=48)
    with pytest.raises(ValueError, match="unknown config"):
        named_config("huge")
    with pytest.raises(ValueError, match="timm model name"):
        named_config("from-timm")
    with pytest.raises(ValueError, match="multiples of 32"):
        VISModel(small_config())(torch.zeros(1, 3, 72, 64))
    cfg = small_config()
    cfg.save(tmp_path)
    assert VISConfig.load(tmp_path) == cfg
    with pytest.raises(FileNotFoundError, match="config.json"):
        VISConfig.load(tmp_path / "nowhere")
    small = named_config("small")
    assert (small.patch_size, small.dim, small.img_size) == (16, 384, 512)


def test_from_timm_backbone_with_local_weights(tmp_path) -> None:
    from safetensors.torch import save_file
    import timm

    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "w.safetensors"))
    cfg = named_config("from-timm", timm_model="vit_tiny_patch16_224", weights=str(tmp_path / "w.safetensors"),
                       img_size=64, fpn_dim=32, hidden_dim=32, decoder_layers=1, decoder_heads=2, decoder_ffn=64,
                       pixel_ffn=64, num_queries=3, categories=[1])
    model = VISModel(cfg)
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.mask_logits.shape == (1, 3, 16, 16)
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="safetensors"):
        VISModel(named_config("from-timm", timm_model="vit_tiny_patch16_224", weights=str(tmp_path / "w.pt"),
                              fpn_dim=32, hidden_dim=32, categories=[1]))


def test_class_weight_scales_only_the_classification_terms() -> None:
    torch.manual_seed(0)
    cfg = small_config()
    model = VISModel(cfg).eval()
    with torch.no_grad():
        out = model(normalise(torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)))
    masks = torch.zeros(1, 64, 64)
    masks[0, 8:40, 16:48] = 1
    targets = [FrameTargets(masks, torch.tensor([2]))]
    terms = {}
    for w in (2.0, 5.0):
        torch.manual_seed(1)  # the same mask points for both
        terms[w] = SetLoss(cfg, class_weight=w)(out.head, targets)
    assert torch.equal(terms[2.0]["ce"], terms[5.0]["ce"]) and torch.equal(terms[2.0]["dice"], terms[5.0]["dice"])
    # every decoder layer's cross-entropy is weighted: total(5) - total(2) = 3 x the sum of those terms
    torch.manual_seed(1)
    crit = SetLoss(cfg)
    aux = [{"masks_queries_logits": m, "class_queries_logits": c}
           for m, c in zip(out.head.mask_logits[:-1], out.head.class_logits[:-1])]
    raw = crit.criterion(out.head.mask_logits[-1], out.head.class_logits[-1], [masks], [torch.tensor([2])], aux)
    ce_sum = sum(v for k, v in raw.items() if k.startswith("loss_cross_entropy"))
    torch.testing.assert_close(terms[5.0]["loss"] - terms[2.0]["loss"], 3 * ce_sum)
    with pytest.raises(ValueError, match="class_weight"):
        SetLoss(cfg, class_weight=0)
