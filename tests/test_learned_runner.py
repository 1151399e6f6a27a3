"""Learned pruning modules inside the sparse ViT runner: gradients, train/inference agreement,
cumulative masks, temporal fallbacks, EViT, and never an empty sample."""
import math

import pytest
import torch

from patchprune.learned import build
from patchprune.learned.registry import LOSS_KEY
from patchprune.tokens import keep_count
from patchprune.video import VideoStream
from test_learned_helpers import tiny_vit

N = 36  # 48 px / 8 px patches -> 6 x 6 grid


def frames(n=3, b=2, size=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, 3, size, size, generator=g)
    return [base + 0.3 * torch.randn(b, 3, size, size, generator=g) for _ in range(n)]


def run_video(pruner, clips, stream=None):
    stream = stream if stream is not None else VideoStream()
    outs = []
    for x in clips:
        stream.start_frame()
        outs.append(pruner(x, stream=stream))
    return outs, stream


@pytest.mark.parametrize("method", ["vpp", "svit", "dynamicvit", "tps"])
def test_gradients_reach_every_pruning_parameter(method):
    # random output layers (init_keep zeroes them, which zeroes the first step's hidden-layer grads)
    pruner = build(method, tiny_vit(), 0.55, init_keep=False).train()
    outs, _ = run_video(pruner, frames(2))
    loss = sum(o.aux[LOSS_KEY] + o.features.square().mean() for o in outs)
    loss.backward()
    for name, p in pruner.runner.policies.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{method}: no gradient for {name}"


@pytest.mark.parametrize("keep_graph", [True, False])
def test_gradient_flows_into_previous_frame_pass(keep_graph):
    pruner = build("vpp", tiny_vit(), 0.55).train()
    x1, x2 = frames(2)
    x1.requires_grad_(True)
    stream = VideoStream(keep_graph=keep_graph)  # a training chain keeps the graph one frame back
    pruner(x1, stream=stream)
    out2 = pruner(x2, stream=stream)
    mapsm = out2.aux["sparsity"][1]
    mapsm.prob_mean.backward()  # depends on frame 1 only through the cache (keys x_1, values x_6)
    if keep_graph:
        assert x1.grad is not None and x1.grad.abs().sum() > 0
    else:  # `train vis --no-chain-graph`: frame 2's losses do not reach frame 1's pass
        assert x1.grad is None


@pytest.mark.parametrize("detach", [False, True])
def test_vpp_detach_input_keeps_the_sparsity_loss_out_of_the_backbone(detach):
    pruner = build("vpp", tiny_vit(), 0.55, init_keep=False, detach_input=detach).train()
    assert pruner.config.options["detach_input"] is detach
    outs, _ = run_video(pruner, frames(2))
    sum(o.aux[LOSS_KEY] for o in outs).backward()  # the sparsity losses alone
    backbone = [p.grad for n, p in pruner.named_parameters() if "policies" not in n and p.requires_grad]
    reached = any(g is not None and g.abs().sum() > 0 for g in backbone)
    assert reached is not detach  # spec: the loss reshapes the ViT; detached: it does not
    for name, p in pruner.runner.policies.named_parameters():  # the modules learn either way
        if "fc" in name or "head" in name:
            assert p.grad is not None, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pruner.runner.policies.parameters())


@pytest.mark.parametrize("target", [0.55, 0.40])
def test_vpp_hard_masks_in_training_match_gathered_inference_without_noise(target):
    vit = tiny_vit()
    pruner = build("vpp", vit, target, noise=False, init_keep=False)
    for pos in (3, 6, 9):  # a keep bias so that the SMs keep a fair share of the tokens
        with torch.no_grad():
            pruner.runner.policy_at(pos).head.fc2.bias.add_(torch.tensor([0.05, -0.05]))
    clips = frames(3, b=2)
    pruner.train()
    stream, train_outs = VideoStream(), []
    for x in clips:
        stream.start_frame()
        train_outs.append(pruner(x, stream=stream))
    pruner.eval()
    with torch.no_grad():
        eval_outs, _ = run_video(pruner, clips)
    for a, b in zip(train_outs, eval_outs):
        for blk in a.keep_masks:
            assert torch.equal(a.keep_masks[blk], b.keep_masks[blk]), f"block {blk}"
        # hard key padding in masking execution (issue 12): equal to gather up to float error
        assert (a.features - b.features).abs().max() <= 1e-4
    # the second frame really prunes (so the comparison is not trivially dense)
    assert int(eval_outs[1].keep_masks[1].sum(1)[0]) == keep_count(N, pruner.config.options["kappa"])


@pytest.mark.parametrize("method", ["vpp", "dynamicvit", "tps"])
@pytest.mark.parametrize("training", [True, False])
def test_cumulative_masks_never_reactivate(method, training):
    pruner = build(method, tiny_vit(), 0.40, init_keep=False).train(training)
    with torch.set_grad_enabled(training):
        outs, _ = run_video(pruner, frames(3))
    for out in outs:
        masks = [out.keep_masks[b] for b in sorted(out.keep_masks)]
        for prev, cur in zip(masks[:-1], masks[1:]):
            assert not bool((cur & ~prev).any())
        assert masks[-1].sum() < masks[0].sum()


def test_svit_decides_on_the_full_grid_each_layer():
    pruner = build("svit", tiny_vit(), 0.55, init_keep=False).eval()
    with torch.no_grad():
        out = pruner(frames(1, b=3)[0])
    assert all(out.keep_masks[b].all() for b in range(3))
    assert torch.isfinite(out.features).all()
    recs = out.aux["sparsity"]
    assert sorted(recs) == list(range(3, 12))
    for pos, rec in recs.items():  # layer-wise independent decisions, relative to all N tokens
        assert torch.allclose(rec.keep_per_sample, out.keep_masks[pos].float().mean(1))


def test_first_frame_resolution_change_and_resets():
    pruner = build("vpp", tiny_vit(), 0.55).eval()
    k48, k64 = keep_count(36, 0.7), keep_count(64, 0.7)  # the library's one ratio -> K rule
    stream = VideoStream()
    g = torch.Generator().manual_seed(0)

    def step(size, ids=None):
        stream.start_frame(ids)
        with torch.no_grad():
            return pruner(torch.randn(2, 3, size, size, generator=g), stream=stream)

    first = step(48)
    assert first.keep_masks[1].all() and first.keep_masks[2].all()  # dense up to position 3
    assert first.aux["sparsity"][1].prob_mean is None
    second = step(48)
    assert second.keep_masks[1].sum(1).tolist() == [k48, k48]
    assert torch.equal(second.keep_masks[1], second.keep_masks[2])
    changed = step(64)  # new resolution: the prior is dropped
    assert changed.keep_masks[1].all()
    assert step(64).keep_masks[1].sum(1).tolist() == [k64, k64]
    partly = step(64, ids=["a", "b"])  # ids seen for the first time: nothing to compare with yet
    assert partly.keep_masks[1].sum(1).tolist() == [k64, k64]
    new_video = step(64, ids=["a", "c"])  # sample 1 starts a new video: dense for it only
    assert new_video.keep_masks[1].sum(1).tolist() == [k64, 64]
    stream.reset()
    assert step(64).keep_masks[1].all()


def test_cache_holds_clones_of_x1_x6_and_block5_mask():
    pruner = build("vpp", tiny_vit(), 0.55, init_keep=False).eval()
    stream = VideoStream()
    clips = frames(3)
    with torch.no_grad():
        pruner(clips[0], stream=stream)
        out = pruner(clips[1], stream=stream, return_layers=(1, 6))
    cache = stream.caches["mapsm"]
    B, C = out.layers[1].shape[:2]
    assert torch.equal(cache.keys, out.layers[1].flatten(2).transpose(1, 2))
    assert torch.equal(cache.values, out.layers[6].flatten(2).transpose(1, 2))
    assert torch.equal(cache.mask, out.keep_masks[5])
    assert not cache.mask.all()  # the mask really is the pruned one
    snapshot = (cache.keys.clone(), cache.values.clone())
    with torch.no_grad():
        pruner(clips[2], stream=stream)
    assert torch.equal(snapshot[0], cache.keys) and torch.equal(snapshot[1], cache.values)
    assert stream.caches["mapsm"] is not cache  # a new prior was committed


def test_no_empty_sample_and_no_nan_when_modules_drop_everything():
    pruner = build("vpp", tiny_vit(), 0.55)
    for pos in (3, 6, 9):
        with torch.no_grad():
            pruner.runner.policy_at(pos).head.fc2.bias.copy_(torch.tensor([-50.0, 50.0]))
    for training in (True, False):
        pruner.train(training)
        with torch.set_grad_enabled(training):
            outs, _ = run_video(pruner, frames(2))
        for out in outs:
            assert torch.isfinite(out.features).all()
            if not training:
                assert (out.keep_masks[11].sum(1) >= 1).all()


def test_evit_with_cls_token_keeps_ceil_of_live_tokens():
    vit = tiny_vit(cls=True)
    pruner = build("evit", vit).eval()  # the authors' keep rate 0.7
    assert pruner.config.options["keep_rate"] == 0.7
    with torch.no_grad():
        out = pruner(frames(1)[0])
    n = 36
    for pos in (3, 6, 9):  # EViT prunes after block pos's attention: block pos + 1 sees the cut
        assert out.keep_masks[pos].sum(1).tolist() == [n, n]
        n = math.ceil(0.7 * n)
        assert out.keep_masks[pos + 1].sum(1).tolist() == [n, n]
    fused = build("evit", vit, keep_rate=0.7, fuse=True).eval()
    with torch.no_grad():
        out_f = fused(frames(1)[0])
    assert torch.isfinite(out_f.features).all()
    assert out_f.keep_masks[4].sum(1).tolist() == [27, 27]  # 26 kept + the fused token (at its anchor)
    pruner.train()
    out_t = pruner(frames(1)[0])
    assert out_t.keep_masks[4].sum(1).tolist() == [26, 26]
    matched = build("evit", vit, 0.55, match_pkr=True).eval()
    with torch.no_grad():
        assert matched(frames(1)[0]).pkr == pytest.approx(0.55, abs=0.03)


@pytest.mark.parametrize("method,expected", [("vpp", [0.8, 0.8, 0.8]), ("dynamicvit", [0.6, 0.6, 0.6])])
def test_init_keep_starts_each_stage_at_its_rate(method, expected):
    torch.manual_seed(0)
    pruner = build(method, tiny_vit(), 0.55, init_keep=True).train()
    x = torch.randn(64, 3, 48, 48)
    with torch.no_grad():
        out = pruner(x)
    prev = out.keep_masks[0].float()
    for pos, rate in zip((3, 6, 9), expected):  # conditional keep rate of each stage (Gumbel-random at first)
        cur = out.keep_masks[pos].float()
        assert float(cur.sum() / prev.sum()) == pytest.approx(rate, abs=0.05)
        prev = cur
