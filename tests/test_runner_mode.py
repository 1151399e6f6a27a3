"""Mode follows the model (issue 13, item 1): the runner starts in the wrapped model's mode."""
from __future__ import annotations

import pytest
import timm
import torch

import patchprune as pp
from patchprune.learned import build


def make_vit(train: bool, depth: int = 6):
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=64, patch_size=16,
                            embed_dim=64, depth=depth, num_heads=2, class_token=False, global_pool="avg")
    return vit.train(train)


@pytest.mark.parametrize("train", [False, True])
def test_sparse_vit_starts_in_the_model_mode(train):
    runner = pp.sparse_vit(make_vit(train), {1: ("random", 0.5), 3: ("evtp", 0.5)})
    assert runner.training is train
    assert all(p.training is train for p in runner.policies.values())
    assert runner.execution_in_force == ("mask" if train else "gather")
    out = runner(torch.randn(2, 3, 64, 64))
    # gather runs blocks on fewer tokens; the masks say the same in both executions
    assert int(out.keep_masks[3][0].sum()) == 4


def test_eval_model_runs_merging_policies_without_a_mode_switch():
    """ToMe / VisionZip refuse masking execution; on an eval model they now run as built."""
    vit = make_vit(False)
    out = pp.sparse_vit(vit, {2: ("tome", 0.5)})(torch.randn(1, 3, 64, 64))
    assert out.features.shape == (1, 64, 4, 4) and torch.isfinite(out.features).all()
    with pytest.raises(ValueError, match="eval"):
        pp.sparse_vit(make_vit(True), {2: ("tome", 0.5)})(torch.randn(1, 3, 64, 64))


def test_the_users_submodule_modes_are_left_alone():
    vit = make_vit(True)
    vit.blocks[0].eval()  # e.g. a frozen part the user keeps in eval
    runner = pp.sparse_vit(vit, {1: ("random", 0.5)})
    assert runner.training and vit.training and not vit.blocks[0].training


def test_explicit_mode_switch_and_execution_still_win():
    runner = pp.sparse_vit(make_vit(False), {1: ("random", 0.5)})
    assert runner.train().execution_in_force == "mask"
    assert runner.eval().execution_in_force == "gather"
    assert pp.sparse_vit(make_vit(False), {1: ("random", 0.5)}, execution="mask").execution_in_force == "mask"


@pytest.mark.parametrize("method", ["vpp", "svit", "dynamicvit", "tps"])
@pytest.mark.parametrize("train", [False, True])
def test_learned_build_follows_the_model(method, train):
    pruner = build(method, make_vit(train, depth=12), 0.55)
    assert pruner.training is train and pruner.runner.training is train
    assert all(m.training is train for m in pruner.runner.policies.modules())
    assert pruner.runner.execution_in_force == ("mask" if train else "gather")
