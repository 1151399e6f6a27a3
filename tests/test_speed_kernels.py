"""Issue 10: the faster in-ViT kernels give what the plain computations give (old vs new, same picks)."""
import pytest
import timm
import torch

import patchprune
from patchprune.blocks import attention_part, attention_part_scored, reuses_qkv
from patchprune.learned.evit import EViT
from patchprune.select.base import l2_normalize
from patchprune.select.policies import SelectPolicy, tome_schedule
from patchprune.select.vispruner import deduplicate, deduplicate_reference
from patchprune.vit import block_attention, block_keys, block_scores


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=0).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _masks(out):
    return {b: m.tolist() for b, m in out.keep_masks.items()}


@pytest.mark.parametrize("mask", ["none", "bool", "bias"])
def test_cls_rows_equal_the_full_attention_rows(vit, mask):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 17, 192, generator=g)
    m = {"none": None, "bool": torch.rand(2, 1, 1, 17, generator=g) > 0.3,
         "bias": torch.log(1 + 3 * torch.rand(2, 1, 1, 17, generator=g))}[mask]
    if m is not None and m.dtype == torch.bool:
        m[..., 0] = True
    blk = vit.blocks[1]
    with torch.no_grad():
        full = block_attention(blk, x, m)
        rows, keys = block_scores(blk, x, m, attention=True, rows=1, keys=True)
    assert full.shape == (2, 3, 17, 17) and rows.shape == (2, 3, 1, 17)
    torch.testing.assert_close(rows, full[:, :, :1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(keys, block_keys(blk, x), rtol=1e-5, atol=1e-6)


def test_mid_block_branch_reusing_qkv_is_bitwise_the_blocks_branch(vit):
    x = torch.randn(2, 17, 192, generator=torch.Generator().manual_seed(4))
    bias = torch.log(1 + 3 * torch.rand(2, 1, 1, 17, generator=torch.Generator().manual_seed(5)))
    blk = vit.blocks[2]
    assert reuses_qkv(blk)
    with torch.no_grad():
        for m in (None, bias):
            y, w, k = attention_part_scored(blk, x, m, rows=17, keys=True)
            assert torch.equal(y, attention_part(blk, x, m))
            assert torch.equal(k, block_keys(blk, x))
            torch.testing.assert_close(w, block_attention(blk, x, m), rtol=1e-5, atol=1e-7)


class _FullRows(SelectPolicy):
    """The same policy, scoring on the full attention matrix (the path before issue 10)."""

    def attention_queries(self, num_prefix):
        return None


@pytest.mark.parametrize("method", ["attention", "visionzip", "vispruner", "tome"])
def test_runner_picks_with_cls_rows_equal_picks_with_full_attention(vit, images, method):
    with torch.no_grad():
        new = patchprune.sparse_vit(vit, {1: SelectPolicy(method, 0.6), 2: SelectPolicy(method, 0.7)}).eval()(images)
        old = patchprune.sparse_vit(vit, {1: _FullRows(method, 0.6), 2: _FullRows(method, 0.7)}).eval()(images)
    assert _masks(new) == _masks(old)
    torch.testing.assert_close(new.features, old.features)


def test_mid_block_policies_equal_their_separate_scoring_pass(vit, images, monkeypatch):
    import patchprune.vit as runner_module

    schedules = {"evit": lambda: {1: EViT(0.6), 2: EViT(0.7, fuse=True)}, "tome-block": lambda: tome_schedule(3, 4)}
    for name, schedule in schedules.items():
        with torch.no_grad():
            new = patchprune.sparse_vit(vit, schedule()).eval()(images)
            monkeypatch.setattr(runner_module, "reuses_qkv", lambda block: False)  # the separate pass
            old = patchprune.sparse_vit(vit, schedule()).eval()(images)
            monkeypatch.undo()
        assert _masks(new) == _masks(old), name
        torch.testing.assert_close(new.features, old.features)


@pytest.mark.parametrize("order", ["authors", "raster"])
@pytest.mark.parametrize("near", [1, 2, 16])
def test_deduplicate_shortcut_equals_the_plain_rounds(order, near):
    g = torch.Generator().manual_seed(7)
    for B, R, keep, rounding in [(2, 120, 30, False), (3, 97, 40, False), (2, 150, 20, True), (1, 111, 35, False),
                                 (1, 150, 20, True)]:  # "authors": frame by frame; "raster": batched rounds
        x = torch.randn(B, R, 16, generator=g) + 0.5 * torch.randn(B, 1, 16, generator=g)
        if rounding:  # duplicates and ties
            x = x.round()
        m = l2_normalize(x)
        sim = torch.bmm(m, m.transpose(1, 2))
        assert torch.equal(deduplicate(sim, keep, order=order, near=near),
                           deduplicate_reference(sim, keep, order=order))


@pytest.mark.parametrize("share", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("pool", [3, 16, 128])
def test_compacting_engine_equals_the_textbook_loop_at_in_vit_ratios(monkeypatch, share, pool):
    from patchprune.select import farthest

    monkeypatch.setattr(farthest, "COMPACT_SHARE", share)  # 0: compact before every round
    g = torch.Generator().manual_seed(11)
    for B, N, k, padded in [(1, 256, 154, False), (3, 200, 160, False), (2, 180, 100, True), (2, 64, 63, False)]:
        z = torch.randn(B, N, 8, generator=g) + torch.randn(B, 1, 8, generator=g)
        valid = None
        if padded:
            valid = torch.rand(B, N, generator=g) > 0.3
            valid[:, 0] = True
            k = min(k, int(valid.sum(1).min()))
        start = torch.zeros(B, dtype=torch.long)
        ref = farthest.farthest_first_reference(z, k, start, valid=valid)
        assert torch.equal(farthest.farthest_first(z, k, start, valid=valid, pool=pool), ref)
