"""Samples of a batch that keep different counts: split / pack execution (projections and MLP on
the real tokens only; attention per sample or in one padded call) against the padded, key-masked
one; the pre-norm check that guards running a block in parts."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.models.vision_transformer import ResPostBlock, VisionTransformer

import patchprune as pp
from patchprune.bench.speed import unpadded_pruned_macs
from patchprune.blocks import is_prenorm_block, split_block
from patchprune.metrics.flops import flops_with_output


def make_vit(class_token=True, reg_tokens=0, depth=4, block_fn=None):
    torch.manual_seed(0)
    kw = {} if block_fn is None else {"block_fn": block_fn}
    if block_fn is None:
        return timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=64,
                                 embed_dim=64, depth=depth, num_heads=2, class_token=class_token,
                                 reg_tokens=reg_tokens, global_pool="token" if class_token else "avg").eval()
    return VisionTransformer(img_size=64, patch_size=16, embed_dim=64, depth=depth, num_heads=2, num_classes=0,
                             **kw).eval()


@pytest.mark.parametrize("mode", ["split", "pack"])
@pytest.mark.parametrize("class_token,reg_tokens", [(True, 0), (False, 0), (True, 2)])
def test_split_and_pack_equal_padded_on_every_real_token(mode, class_token, reg_tokens):
    vit = make_vit(class_token, reg_tokens)
    x = torch.randn(5, 3, 64, 64)
    schedule = {1: ("random-bernoulli", 0.6, {"seed": 3}), 2: ("random-bernoulli", 0.5, {"seed": 4})}
    with torch.no_grad():
        split = pp.sparse_vit(vit, schedule, ragged=mode).eval()(x, return_layers=[2, 3, 4])
        pad = pp.sparse_vit(vit, schedule, ragged="pad").eval()(x, return_layers=[2, 3, 4])
    assert split.ragged == {1: mode, 2: mode, 3: mode} and pad.ragged == {1: "pad", 2: "pad", 3: "pad"}
    counts = split.keep_masks[2].sum(1)
    assert len(set(counts.tolist())) > 1  # the batch really is ragged
    for b in split.keep_masks:
        assert torch.equal(split.keep_masks[b], pad.keep_masks[b])
    for pos in (2, 3, 4):
        torch.testing.assert_close(split.layers[pos], pad.layers[pos], atol=1e-5, rtol=0)
    torch.testing.assert_close(split.features, pad.features, atol=1e-5, rtol=0)
    torch.testing.assert_close(split.prefix, pad.prefix, atol=1e-5, rtol=0)


def test_split_runs_no_padding_flops_and_pack_only_the_attention_cores():
    vit = make_vit()
    x = torch.randn(6, 3, 64, 64)
    schedule = {1: ("random-bernoulli", 0.5, {"seed": 0})}
    counted = {}
    with torch.no_grad():
        for mode in ("split", "pack", "pad"):
            runner = pp.sparse_vit(vit, schedule, ragged=mode).eval()
            flops, out = flops_with_output(runner, x)
            counted[mode] = (flops.macs, unpadded_pruned_macs(runner, out, flops.macs))
    assert len(set(out.keep_masks[1].sum(1).tolist())) > 1
    assert counted["split"][0] < counted["pack"][0] < counted["pad"][0]
    # the split run costs what each sample's own tokens cost; the closed form removes exactly the
    # padding each of the other two ran (whole blocks / attention cores)
    assert counted["split"][1] == counted["split"][0]
    for mode in ("pack", "pad"):
        assert counted[mode][1] == pytest.approx(counted["split"][0], rel=1e-9)


def test_split_block_keeps_padding_rows_and_runs_each_sample_alone():
    block = make_vit().blocks[0]
    x = torch.randn(3, 7, 64)
    lengths = [7, 2, 5]
    real = torch.arange(7)[None] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        y = split_block(block, x, lengths, real.flatten().nonzero().squeeze(1))
        for b, n in enumerate(lengths):
            torch.testing.assert_close(y[b, :n], block(x[b:b + 1, :n])[0], atol=1e-5, rtol=0)
    assert torch.equal(y[~real], x[~real])


def test_auto_mode_by_device_and_never_with_compile():
    vit = make_vit()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = pp.sparse_vit(vit, {1: 0.5})
    assert auto.ragged_mode(cpu) == "split" and auto.ragged_mode(cuda) == "pad"
    for mode in ("split", "pack", "pad"):
        assert pp.sparse_vit(vit, {1: 0.5}, ragged=mode).ragged_mode(cuda) == mode
    assert pp.sparse_vit(vit, {1: 0.5}, compile=True).ragged_mode(cpu) == "pad"
    with pytest.raises(ValueError, match="ragged must be one of"):
        pp.sparse_vit(vit, {1: 0.5}, ragged="packed")
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        out = pp.sparse_vit(vit, {1: ("random-bernoulli", 0.5, {"seed": 2})}).eval()(x)
        even = pp.sparse_vit(vit, {1: ("random", 0.5)}).eval()(x)
    assert len(set(out.keep_masks[1].sum(1).tolist())) > 1 and set(out.ragged.values()) == {"split"}
    assert even.ragged == {}  # equal counts: nothing padded, nothing to split


def test_post_norm_blocks_are_not_run_in_parts():
    vit = make_vit(block_fn=ResPostBlock)
    assert not is_prenorm_block(vit.blocks[0]) and is_prenorm_block(make_vit().blocks[0])
    # EViT acts between a block's attention and its MLP: a post-norm block cannot be split there
    with pytest.raises(ValueError, match="needs a timm Block"):
        pp.sparse_vit(vit, {2: ("evit", 0.5)})
    # a ragged batch on post-norm blocks runs padded (the block's own forward), equal to each sample alone
    x = torch.randn(3, 3, 64, 64)
    schedule = {1: ("random-bernoulli", 0.5, {"seed": 1})}
    with torch.no_grad():
        split = pp.sparse_vit(vit, schedule, ragged="split").eval()(x)
        pad = pp.sparse_vit(vit, schedule, ragged="pad").eval()(x)
    assert len(set(split.keep_masks[1].sum(1).tolist())) > 1
    assert set(split.ragged.values()) == {"pad"}
    torch.testing.assert_close(split.features, pad.features, atol=1e-6, rtol=0)


def test_block_subclass_with_its_own_forward_is_not_run_in_parts():
    class Doubled(timm.models.vision_transformer.Block):
        def forward(self, x, attn_mask=None):  # same submodules, different computation
            return super().forward(super().forward(x, attn_mask=attn_mask), attn_mask=attn_mask)

    vit = make_vit(block_fn=Doubled)
    assert not is_prenorm_block(vit.blocks[0])
    with pytest.raises(ValueError, match="pre-norm Block"):
        pp.sparse_vit(vit, {2: ("evit", 0.5)})


@pytest.mark.parametrize("padded_attention", [False, True])
@pytest.mark.parametrize("packed", [True, False])
def test_split_block_every_attention_path_agrees(packed, padded_attention):
    block = make_vit().blocks[1]
    if not packed:
        block.attn.fused_attn = False  # not `reuses_qkv`: the attention module itself runs
    x = torch.randn(4, 9, 64)
    lengths = [9, 1, 4, 6]
    real = torch.arange(9)[None] < torch.tensor(lengths)[:, None]
    mask = real[:, None, None, :]
    with torch.no_grad():
        y = split_block(block, x, lengths, real.flatten().nonzero().squeeze(1), mask if padded_attention else None)
        ref = block(x, attn_mask=mask)
    torch.testing.assert_close(y[real], ref[real], atol=1e-5, rtol=0)
    assert torch.equal(y[~real], x[~real])


def test_bench_ragged_modes_are_checked_before_any_work():
    from patchprune.bench.speed import check_ragged_modes

    assert check_ragged_modes("ragged", ["split", "pad"]) == ("split", "pad")
    for modes, words in ((["nope"], "must be one of"), (["pad", "pad"], "names a mode twice"), ([], "at least one")):
        with pytest.raises(ValueError, match=words):
            check_ragged_modes("ragged", modes)
