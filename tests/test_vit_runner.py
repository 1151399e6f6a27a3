"""Sparse ViT runner: exactness against timm, mask/gather agreement, per-sample counts, errors."""
from __future__ import annotations


import pytest
import timm
import torch

import patchprune as pp
from patchprune.policies.base import Decision, Merge, Policy


def make_vit(img_size=64, patch=16, dim=64, depth=6, heads=2, class_token=False, reg_tokens=0, dynamic=False):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=0, img_size=img_size, patch_size=patch,
        embed_dim=dim, depth=depth, num_heads=heads, class_token=class_token, reg_tokens=reg_tokens,
        global_pool="avg" if not class_token else "token", dynamic_img_size=dynamic,
    ).eval()


def flat(features):
    return features.flatten(2).transpose(1, 2)


class FixedGridMask(Policy):
    """Keeps grid positions given per sample (bool [B, N]), restricted to the live tokens."""

    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def forward(self, ctx):
        keep = torch.gather(self.masks, 1, ctx.index)
        if ctx.training:
            return Decision(keep=keep.to(ctx.alive.dtype) * ctx.alive)
        return Decision(keep=keep & ctx.alive)


@pytest.mark.parametrize("class_token,reg_tokens,patch", [(False, 0, 16), (True, 0, 8), (True, 4, 14)])
def test_keep_all_equals_timm_forward_features(class_token, reg_tokens, patch):
    size = patch * 5
    vit = make_vit(img_size=size, patch=patch, class_token=class_token, reg_tokens=reg_tokens)
    x = torch.randn(2, 3, size, size)
    runner = pp.sparse_vit(vit, {2: ("keep-all", 1.0)}).eval()
    with torch.no_grad():
        out = runner(x)
        ref = vit.forward_features(x)
    P = vit.num_prefix_tokens
    assert out.features.shape == (2, vit.embed_dim, 5, 5)
    torch.testing.assert_close(flat(out.features), ref[:, P:], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.prefix, ref[:, :P], atol=1e-5, rtol=0)
    assert out.pkr == 1.0


def test_dynamic_img_size_and_resolution_change():
    vit = make_vit(img_size=64, dynamic=True)
    runner = pp.sparse_vit(vit, {1: ("topk-norm", 0.5)}).eval()
    with torch.no_grad():
        a = runner(torch.randn(1, 3, 64, 64))
        b = runner(torch.randn(1, 3, 96, 64))
    assert a.features.shape[-2:] == (4, 4) and b.features.shape[-2:] == (6, 4)
    assert int(b.keep_masks[1].sum()) == 12


def _mask_gather_runs(eps_values):
    vit = make_vit(depth=6)
    x = torch.randn(3, 3, 64, 64)
    torch.manual_seed(1)
    m1 = torch.rand(3, 16) < 0.7
    m3 = m1 & (torch.rand(3, 16) < 0.7)
    m1[:, 0] = m3[:, 0] = True
    schedule = {1: FixedGridMask(m1), 3: FixedGridMask(m3)}
    with torch.no_grad():
        gathered = pp.sparse_vit(vit, schedule, execution="gather")(x)
        masked = {eps: pp.sparse_vit(vit, schedule, execution="mask", policy_eps=eps)(x) for eps in eps_values}
    return gathered, masked


@pytest.mark.parametrize("eps", [1e-9, 1e-3])
def test_mask_and_gather_give_same_outputs_for_same_hard_mask(eps):
    # masking execution hides pruned keys with a hard key-padding mask (issue 12): it equals gather
    # to float error, whatever the policy-softmax eps (only "policy"-form policies use it)
    gathered, masked = _mask_gather_runs([eps])
    masked = masked[eps]
    for b in range(6):
        assert torch.equal(gathered.keep_masks[b], masked.keep_masks[b])
    torch.testing.assert_close(flat(gathered.features), flat(masked.features), atol=1e-5, rtol=0)
    assert gathered.pkr == pytest.approx(masked.pkr)


@pytest.mark.parametrize("ragged", ["split", "pad"])
def test_batch_with_different_counts_equals_each_sample_alone(ragged):
    vit = make_vit(depth=4, class_token=True)
    x = torch.randn(4, 3, 64, 64)
    masks = torch.zeros(4, 16, dtype=torch.bool)
    for i, k in enumerate([1, 5, 11, 16]):
        masks[i, torch.randperm(16)[:k]] = True
    policy = FixedGridMask(masks)
    runner = pp.sparse_vit(vit, {2: policy}, ragged=ragged).eval()
    with torch.no_grad():
        batch = runner(x)
        for i in range(4):
            policy.masks = masks[i : i + 1]
            alone = runner(x[i : i + 1])
            torch.testing.assert_close(alone.features, batch.features[i : i + 1], atol=1e-5, rtol=0)
            torch.testing.assert_close(alone.prefix, batch.prefix[i : i + 1], atol=1e-5, rtol=0)
    assert batch.keep_masks[2].sum(1).tolist() == [1, 5, 11, 16]


def test_pruned_positions_keep_their_last_feature():
    vit = make_vit(depth=4)
    x = torch.randn(1, 3, 64, 64)
    keep = torch.zeros(1, 16, dtype=torch.bool)
    keep[0, :4] = True
    runner = pp.sparse_vit(vit, {2: FixedGridMask(keep)}).eval()
    with torch.no_grad():
        out = runner(x, return_layers=[2, 4])
    before = flat(out.layers[2])[0]
    after = flat(out.layers[4])[0]
    torch.testing.assert_close(after[4:], before[4:])  # pruned: frozen at their block-2 input
    assert not torch.allclose(after[:4], before[:4])  # kept: processed by blocks 2 and 3


@pytest.mark.parametrize("execution", ["gather", "mask"])
def test_single_kept_token_stays_finite(execution):
    vit = make_vit(depth=4)
    x = torch.randn(2, 3, 64, 64)
    keep = torch.zeros(2, 16, dtype=torch.bool)
    keep[:, 7] = True
    out = pp.sparse_vit(vit, {1: FixedGridMask(keep)}, execution=execution)(x)
    assert torch.isfinite(out.features).all()
    assert out.keep_masks[1].sum(1).tolist() == [1, 1]


def test_empty_keep_is_raised_to_one_token():
    class DropAll(Policy):
        def forward(self, ctx):
            return Decision(keep=torch.zeros_like(ctx.alive))

    vit = make_vit(depth=3)
    out = pp.sparse_vit(vit, {1: DropAll()}).eval()(torch.randn(2, 3, 64, 64))
    assert out.keep_masks[1].sum(1).tolist() == [1, 1]
    assert torch.isfinite(out.features).all()


def test_mask_mode_is_differentiable_wrt_soft_masks():
    class Soft(Policy):
        def __init__(self):
            super().__init__()
            self.logit = torch.nn.Parameter(torch.zeros(16))

        def forward(self, ctx):
            soft = torch.sigmoid(self.logit).expand(ctx.alive.shape[0], -1)
            hard = (soft > 0.4).float()
            return Decision(keep=hard + soft - soft.detach())  # straight-through

    vit = make_vit(depth=3)
    pol = Soft()
    runner = pp.sparse_vit(vit, {1: pol}).train()
    runner(torch.randn(2, 3, 64, 64)).features.pow(2).mean().backward()
    assert pol.logit.grad is not None and pol.logit.grad.abs().sum() > 0
    assert torch.isfinite(pol.logit.grad).all()


def test_keep_grid_reactivates_with_stale_features():
    class Grid(Policy):
        def __init__(self, masks):
            super().__init__()
            self.masks = masks

        def forward(self, ctx):
            return Decision(keep_grid=self.masks)

    vit = make_vit(depth=5)
    first = torch.zeros(1, 16, dtype=torch.bool)
    first[0, :8] = True
    second = torch.zeros(1, 16, dtype=torch.bool)
    second[0, 4:12] = True  # 8..11 come back
    runner = pp.sparse_vit(vit, {1: Grid(first), 3: Grid(second)}).eval()
    with torch.no_grad():
        out = runner(torch.randn(1, 3, 64, 64))
    assert out.keep_masks[2][0].nonzero().flatten().tolist() == list(range(8))
    assert out.keep_masks[3][0].nonzero().flatten().tolist() == list(range(4, 12))


def test_merge_fills_every_position_of_its_group():
    class PairMerge(Policy):
        """Merge raster neighbours (0,1), (2,3), ... by averaging."""

        def forward(self, ctx):
            B, n, C = ctx.tokens.shape
            tokens = ctx.tokens.reshape(B, n // 2, 2, C).mean(2)
            assign = (torch.arange(n) // 2).expand(B, -1)
            index = ctx.index[:, 1::2]
            return Merge(tokens=tokens, index=index, size=torch.full((B, n // 2), 2.0), assign=assign)

    vit = make_vit(depth=3)
    runner = pp.sparse_vit(vit, {1: PairMerge()}).eval()
    with torch.no_grad():
        out = runner(torch.randn(2, 3, 64, 64))
    f = flat(out.features)
    torch.testing.assert_close(f[:, 0::2], f[:, 1::2])
    assert out.keep_masks[1].sum(1).tolist() == [8, 8]


def test_policy_attention_is_given_only_when_asked():
    seen = {}

    class Spy(Policy):
        needs_attention = True

        def forward(self, ctx):
            seen["attn"] = ctx.attn
            return Decision(keep=ctx.alive)

    vit = make_vit(depth=3, class_token=True, heads=2)
    pp.sparse_vit(vit, {1: Spy()}).eval()(torch.randn(2, 3, 64, 64))
    attn = seen["attn"]
    assert attn.shape == (2, 2, 17, 17)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 17))


def test_observers_get_full_grid_and_mask_in_force():
    got = {}

    class Observer(Policy):
        observe_positions = (3,)

        def observe(self, position, features, alive, stream):
            got["pos"], got["features"], got["alive"], got["stream"] = position, features, alive, stream

        def forward(self, ctx):
            keep = torch.zeros_like(ctx.alive)
            keep[:, :5] = True
            return Decision(keep=keep)

    vit = make_vit(depth=4)
    pp.sparse_vit(vit, {1: Observer()}).eval()(torch.randn(2, 3, 64, 64), stream="video-7")
    assert got["pos"] == 3 and got["stream"] == "video-7"
    assert got["features"].shape == (2, 16, 64)
    assert got["alive"].sum(1).tolist() == [5, 5]


@pytest.mark.parametrize(
    "schedule,match",
    [
        ({6: ("random", 0.5)}, "outside the model's blocks"),
        ({-1: ("random", 0.5)}, "outside the model's blocks"),
        ({1: ("random", 0.0)}, "keep ratio"),
        ({1: ("random", 1.5)}, "keep ratio"),
        ({1: ("no-such-policy", 0.5)}, "unknown policy"),
        ("1:0.6,x", "POSITION:RATIO"),
        ("1:0.6,1:0.5", "twice"),
    ],
)
def test_invalid_schedules_raise_clear_errors(schedule, match):
    with pytest.raises(ValueError, match=match):
        pp.sparse_vit(make_vit(depth=6), schedule)


def test_wrong_grid_and_bad_images_raise():
    runner = pp.sparse_vit(make_vit(img_size=64), {1: ("random", 0.5)}).eval()
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        runner(torch.randn(1, 3, 70, 64))
    with pytest.raises(ValueError, match="built for"):
        runner(torch.randn(1, 3, 96, 64))
    with pytest.raises(ValueError, match="channels"):
        runner(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        runner(torch.randn(3, 64, 64))


def test_rejects_models_without_global_attention():
    with pytest.raises(ValueError, match="timm VisionTransformer"):
        pp.sparse_vit(torch.nn.Linear(3, 3), {})


def test_string_schedule_and_pkr():
    vit = make_vit(depth=4)
    runner = pp.sparse_vit(vit, "1:0.5,2:0.5", default_policy="topk-norm").eval()
    out = runner(torch.randn(2, 3, 64, 64))
    assert [int(m[0].sum()) for _, m in sorted(out.keep_masks.items())] == [16, 8, 4, 4]
    assert out.pkr == pytest.approx((16 + 8 + 4 + 4) / 64)
