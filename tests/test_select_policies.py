"""The selection methods as policies of the sparse ViT runner (training-free pruning inside a ViT)."""
import pytest
import timm
import torch

import patchprune
from patchprune.policies.base import make_policy
from patchprune.select import available_methods, select
from patchprune.select.policies import SelectPolicy, ToMeBlockPolicy, tome_schedule


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=0).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _counts(out):
    return {b: m.sum(1).tolist() for b, m in out.keep_masks.items()}


def test_every_method_is_a_policy():
    registered = set(patchprune.available_policies())
    assert {m for m in available_methods() if m != "random"} | {"select", "tome-block"} <= registered
    assert make_policy("attention", 0.5).needs_attention and not make_policy("evtp", 0.5).needs_attention
    assert isinstance(make_policy("select", 0.5, method="random"), SelectPolicy)
    with pytest.raises(ValueError, match="has no option"):
        make_policy("evtp", 0.5, bogus=1)


def test_evtp_inside_a_vit_keeps_what_select_picks_on_that_block_input(vit, images):
    with torch.no_grad():
        out = patchprune.sparse_vit(vit, {3: ("evtp", 0.5)}).eval()(images)
        dense = patchprune.sparse_vit(vit, {}).eval()(images, return_layers=(3,))
    assert out.features.shape == (2, 192, 4, 4)
    counts = _counts(out)
    assert all(counts[b] == [16, 16] for b in range(3)) and all(counts[b] == [8, 8] for b in range(3, 12))
    block3_input = dense.layers[3].flatten(2).transpose(1, 2)  # [B, N, C]
    expected = select(block3_input, 8, method="evtp", grid=(4, 4)).index
    kept = out.keep_masks[3].nonzero()[:, 1].view(2, 8)
    assert torch.equal(kept, expected)
    assert out.pkr == pytest.approx((3 * 16 + 9 * 8) / (12 * 16))


@pytest.mark.parametrize("method", ["kcenter", "divprune", "attention", "vispruner", "tome", "visionzip"])
def test_methods_run_in_gather_execution(vit, images, method):
    with torch.no_grad():
        out = patchprune.sparse_vit(vit, {2: (method, 0.5), 6: (method, 0.5)}).eval()(images)
    counts = _counts(out)
    assert counts[1] == [16, 16] and counts[2] == [8, 8] and counts[11] == [4, 4]
    assert torch.isfinite(out.features).all()


def test_selection_policies_run_in_masking_execution(vit, images):
    runner = patchprune.sparse_vit(vit, {3: ("evtp", 0.5), 6: ("attention", 0.5)}, execution="mask")
    with torch.no_grad():
        out = runner(images)
    assert _counts(out)[3] == [8, 8] and _counts(out)[6] == [4, 4]
    with pytest.raises(ValueError, match="gather"):
        patchprune.sparse_vit(vit, {3: ("tome", 0.5)}, execution="mask")(images)


def test_samples_with_different_live_counts_keep_their_own_share(vit, images):
    schedule = {1: ("random-bernoulli", 0.6, {"seed": 3}), 3: ("evtp", 0.5)}
    with torch.no_grad():
        out = patchprune.sparse_vit(vit, schedule).eval()(images)
    live = out.keep_masks[2].sum(1)
    assert live[0] != live[1]  # padded batch
    assert torch.equal(out.keep_masks[3].sum(1), torch.clamp(live // 2, min=1))
    assert bool((out.keep_masks[3] <= out.keep_masks[2]).all())  # only live tokens are kept


def test_tome_block_merges_r_tokens_per_block(vit, images):
    with torch.no_grad():
        out = patchprune.sparse_vit(vit, tome_schedule(12, 3)).eval()(images)
    # every block merges (12, ToMe's code); block i's attention runs before its merge
    assert len(tome_schedule(12, 3)) == 12
    assert [c[0] for c in _counts(out).values()] == [16, 13, 10, 7, 4, 2, 1, 1, 1, 1, 1, 1]
    assert torch.isfinite(out.features).all()
    half = patchprune.sparse_vit(vit, {4: ("tome-block", 0.5)}).eval()
    with torch.no_grad():
        counts = _counts(half(images))
    assert counts[4] == [16, 16] and counts[5] == [8, 8]
    with pytest.raises(ValueError, match="exactly one of ratio or r"):
        ToMeBlockPolicy()


def test_tome_block_uses_sizes_for_proportional_attention(vit, images):
    """After merges the runner adds log(size) to the keys: outputs differ from equal-size merging."""
    with torch.no_grad():
        prop = patchprune.sparse_vit(vit, tome_schedule(12, 4)).eval()(images).features
        flat = patchprune.SparseViT(vit, tome_schedule(12, 4), proportional_attention=False).eval()(images).features
    assert not torch.allclose(prop, flat)


def test_random_bernoulli_spread_sets_each_samples_probability():
    from patchprune.policies.random import RandomPolicy

    pol = make_policy("random-bernoulli", 0.5, spread=0.6)
    probs = pol.sample_probabilities(4, torch.device("cpu"))
    torch.testing.assert_close(probs, torch.tensor([0.2, 0.4, 0.6, 0.8]))
    assert make_policy("random-bernoulli", 0.8, spread=0.5).sample_probabilities(3, torch.device("cpu")).max() == 1.0
    assert pol.sample_probabilities(1, torch.device("cpu")).tolist() == [0.5]
    with pytest.raises(ValueError, match="spread must be in"):
        make_policy("random-bernoulli", 0.5, spread=1.0)
    with pytest.raises(ValueError, match="mode 'bernoulli'"):
        RandomPolicy(0.5, mode="fixed", spread=0.2)
