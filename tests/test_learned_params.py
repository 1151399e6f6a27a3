"""Parameter counts at C = 384 (VPP paper, Tab. 1) and the configurations `build` attaches."""
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from patchprune.learned import SM, DynamicViTStage, MapSM, SViTSelector, build, count_parameters, svit_targets
from patchprune.learned.losses import vpp_targets
from test_learned_helpers import tiny_vit


def test_module_parameter_counts_at_384():
    assert count_parameters(SM(384)) == 37_922
    assert count_parameters(MapSM(384)) == 75_074
    assert count_parameters(DynamicViTStage(384, 0.6)) == 241_250
    assert count_parameters(SViTSelector(384)) == 37_922


def test_method_parameter_counts_at_384():
    vit = VisionTransformer(img_size=64, patch_size=16, embed_dim=384, depth=12, num_heads=6, class_token=False,
                            global_pool="", num_classes=0)
    vpp = build("vpp", vit, 0.55)
    assert vpp.num_pruning_parameters() == 3 * 37_922 + 75_074
    assert round(vpp.num_pruning_parameters() / 1e6, 3) == 0.189
    assert round(build("svit", vit, 0.55).num_pruning_parameters() / 1e6, 3) == 0.341
    assert build("dynamicvit", vit, 0.55).num_pruning_parameters() == 3 * 241_250
    assert build("tps", vit, 0.40).num_pruning_parameters() == 3 * 241_250


def test_targets_and_ratios():
    assert vpp_targets(0.7, 0.8) == pytest.approx([0.56, 0.448, 0.3584])
    assert vpp_targets(0.6, 0.7) == pytest.approx([0.42, 0.294, 0.2058])
    vit = tiny_vit()
    assert build("vpp", vit, 0.40).config.targets == pytest.approx([0.42, 0.294, 0.2058])
    d = build("dynamicvit", vit, 0.55)
    assert d.config.targets == pytest.approx([0.6, 0.36, 0.216])
    assert (3 + 3 * sum(d.config.targets)) / 12 == pytest.approx(0.544)
    d40 = build("dynamicvit", vit, 0.40)
    assert (3 + 3 * sum(d40.config.targets)) / 12 == pytest.approx(0.406)
    for target in (0.55, 0.40):
        t = svit_targets(target)
        assert (3 + sum(t)) / 12 == pytest.approx(target)
        assert t[0] / t[3] == pytest.approx(0.7 / 0.49) and t[3] / t[6] == pytest.approx(0.49 / 0.343)


def test_build_errors():
    vit = tiny_vit()
    with pytest.raises(ValueError, match="unknown learned method"):
        build("nope", vit)
    with pytest.raises(ValueError, match="kappa"):
        build("vpp", vit, 0.5)
    build("vpp", vit, 0.5, kappa=0.65, rho=0.75)  # explicit knobs make any target possible
    with pytest.raises(ValueError, match="CLS"):
        build("evit", vit)
    with pytest.raises(ValueError, match="outside"):
        build("dynamicvit", vit, 0.55, positions=(3, 6, 12))
    with pytest.raises(ValueError, match="multiple"):
        SM(30)
