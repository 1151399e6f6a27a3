"""Parameter counts at C = 384 (VPP paper, Tab. 1) and the configurations `build` attaches."""
import pytest
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


def test_learned_policy_names_resolve_without_importing_patchprune_learned():
    # a fresh interpreter: the runner's registry loads patchprune.learned itself (POLICY_FAMILIES)
    import subprocess
    import sys

    code = (
        "import sys, patchprune as pp\n"
        "from patchprune.policies.base import make_policy, available_policies\n"
        "assert 'patchprune.learned' not in sys.modules\n"
        "p = make_policy('vpp-sm', dim=48)\n"
        "assert type(p).__name__ == 'SM', type(p)\n"
        "assert {'vpp-sm', 'vpp-mapsm', 'svit', 'dynamicvit', 'tps', 'evit'} <= set(available_policies())\n"
        "assert type(make_policy('dynamicvit', 0.6, dim=48)).__name__ == 'DynamicViTStage'\n"
        "r = pp.sparse_vit(__import__('test_learned_helpers').tiny_vit(), {3: ('vpp-sm', None, {'dim': 48})})\n"
        "assert type(r.policy_at(3)).__name__ == 'SM'\n"
    )
    import os
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr


def test_target_defaults_share_one_lookup():
    from patchprune.learned.common import target_default
    from patchprune.learned.dynamicvit import dynamicvit_rho
    from patchprune.learned.mapsm import default_kappa
    from patchprune.learned.vpp import vpp_rho

    assert [vpp_rho(0.55), vpp_rho(0.40), vpp_rho(0.4 + 1e-9)] == [0.8, 0.7, 0.7]
    assert [dynamicvit_rho(0.55), dynamicvit_rho(0.4)] == [0.6, 0.4]
    assert [default_kappa(0.55), default_kappa(0.40)] == [0.7, 0.6]
    with pytest.raises(ValueError, match=r"no default VPP rho for target 0.5; pass rho= explicitly \(known: 0.55, 0.40\)"):
        vpp_rho(0.5)
    with pytest.raises(ValueError, match="pass kappa="):
        default_kappa(0.3)
    assert target_default({0.3: 1.0}, 0.3 + 5e-7, "x", "x") == 1.0
