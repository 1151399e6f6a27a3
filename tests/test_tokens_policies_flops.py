"""Token state helpers, built-in policies and the FLOP counter."""
from __future__ import annotations

import pytest
import timm
import torch

import patchprune as pp
from patchprune.metrics import flops, vit_macs
from patchprune.metrics.pkr import keep_ratio_per_block, pkr
from patchprune.tokens import TokenState, add_rows, mask_to_slots, pad_sequences, row_max, scatter_tokens, unpad_sequences


def test_mask_to_slots_orders_and_pads():
    keep = torch.tensor([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    slots, valid = mask_to_slots(keep)
    assert slots[0].tolist() == [1, 3, 4]
    assert valid.tolist() == [[True, True, True], [True, False, False]]
    assert slots[1, 0].item() == 0
    same, none = mask_to_slots(torch.ones(2, 3, dtype=torch.bool))
    assert none is None and same.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_scatter_never_lets_padding_overwrite():
    base = torch.zeros(1, 4, 1)
    tokens = torch.tensor([[[5.0], [9.0]]])
    index = torch.tensor([[2, 2]])
    out = scatter_tokens(tokens, index, 4, base=base, valid=torch.tensor([[True, False]]))
    assert out.flatten().tolist() == [0, 0, 5, 0]


def test_token_state_gather_and_restore_round_trip():
    x = torch.randn(2, 6, 3)
    st = TokenState.from_grid(x, (2, 3))
    sub = st.gather(torch.tensor([[0, 4], [1, 5]]))
    restored = sub.to_grid(base=torch.zeros_like(x))
    assert torch.equal(restored[0, 4], x[0, 4]) and torch.equal(restored[1, 1], x[1, 1])
    assert restored[0, 1].abs().sum() == 0


def test_token_state_validation():
    with pytest.raises(ValueError, match="does not match"):
        TokenState.from_grid(torch.randn(1, 6, 3), (2, 2))
    with pytest.raises(ValueError, match="index shape"):
        TokenState(tokens=torch.randn(1, 4, 2), index=torch.zeros(1, 3, dtype=torch.long), grid=(2, 2))


def test_pad_unpad_round_trip():
    seqs = [torch.randn(3, 2), torch.randn(1, 2)]
    padded, valid = pad_sequences(seqs)
    back = unpad_sequences(padded, valid)
    assert all(torch.equal(a, b) for a, b in zip(seqs, back))


def test_random_policies_counts_and_seed():
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=64,
                            embed_dim=32, depth=3, num_heads=2).eval()
    x = torch.randn(6, 3, 64, 64)
    fixed = pp.sparse_vit(vit, {1: ("random", 0.5, {"seed": 3})}).eval()
    out = fixed(x)
    assert out.keep_masks[1].sum(1).tolist() == [8] * 6
    again = pp.sparse_vit(vit, {1: ("random", 0.5, {"seed": 3})}).eval()(x)
    assert torch.equal(out.keep_masks[1], again.keep_masks[1])
    bern = pp.sparse_vit(vit, {1: ("random-bernoulli", 0.5, {"seed": 0})}).eval()(x)
    counts = bern.keep_masks[1].sum(1)
    assert len(set(counts.tolist())) > 1 and bool((counts >= 1).all())


def test_topk_norm_keeps_largest_norms():
    from patchprune.policies.base import PolicyContext
    from patchprune.policies.topk_norm import TopKNorm

    tokens = torch.tensor([[[1.0], [5.0], [3.0], [4.0]]])
    ctx = PolicyContext(position=1, num_blocks=2, tokens=tokens, index=torch.arange(4)[None], grid=(2, 2),
                        prefix=tokens[:, :0], training=False, alive=torch.ones(1, 4, dtype=torch.bool))
    assert TopKNorm(0.5)(ctx).keep.tolist() == [[False, True, False, True]]


def test_pkr_is_a_ratio_of_sums_over_frames():
    a = {0: torch.ones(1, 4, dtype=torch.bool), 1: torch.tensor([[1, 0, 0, 0]], dtype=torch.bool)}
    b = {0: torch.ones(1, 4, dtype=torch.bool), 1: torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)}
    assert keep_ratio_per_block([a, b]) == [1.0, 0.5]
    assert pkr([a, b]) == pytest.approx(0.75)
    assert pkr(a) == pytest.approx((1 + 0.25) / 2)


@pytest.mark.parametrize("img_size,patch,class_token", [(96, 16, True), (112, 8, False)])
def test_flop_counter_matches_closed_form_dense_and_pruned(img_size, patch, class_token):
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=img_size,
                            patch_size=patch, depth=4, class_token=class_token,
                            global_pool="token" if class_token else "avg").eval()
    x = torch.randn(1, 3, img_size, img_size)
    grid = (img_size // patch, img_size // patch)
    dense = flops(vit.forward_features, x)
    assert dense.macs == pytest.approx(vit_macs(vit, grid), rel=0.01)
    assert dense.flops == 2 * dense.macs
    runner = pp.sparse_vit(vit, "1:0.5,3:0.5", default_policy="topk-norm").eval()
    out = runner(x)
    pruned = flops(runner, x)
    assert pruned.macs == pytest.approx(vit_macs(vit, grid, out.tokens_per_block), rel=0.01)
    assert pruned.macs < 0.7 * dense.macs


def test_metric_functions_are_exported_by_name():
    import patchprune.metrics as metrics

    for name in ("flops", "pkr", "ioi", "fgs", "coverage_radius", "ytvis_eval"):
        assert callable(getattr(metrics, name)), name


def test_row_max_matches_torch_max_with_first_index_on_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (3, 5, 7), generator=g).float()  # many ties
    x[0, 1] = float("-inf")  # an all -inf row: index 0, as torch.max
    for t in (x, x.double(), x.transpose(1, 2), x.half()):
        values, index = row_max(t)
        ref_v, ref_i = t.max(-1)
        assert torch.equal(values, ref_v) and torch.equal(index, ref_i)
    w = torch.randn(2, 4, requires_grad=True)
    row_max(w)[0].sum().backward()  # the values carry the gradient to the maximum, as torch.max's
    assert torch.equal(w.grad, torch.nn.functional.one_hot(w.argmax(-1), 4).float())


def test_add_rows_accumulates_repeated_slots_like_scatter_add():
    g = torch.Generator().manual_seed(1)
    x, rows = torch.randn(2, 6, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    before = x.clone()
    slots = torch.tensor([[0, 2, 2, 5, 0], [1, 1, 1, 4, 3]])
    out = add_rows(x, slots, rows)
    assert torch.equal(out, x.scatter_add(1, slots[..., None].expand(-1, -1, 3), rows))
    assert not torch.equal(out, x) and torch.equal(x, before)  # a new tensor; x is untouched


def test_ivs_component_meter_counts_sdpa_attention():
    """eval ivs's GMACs per component count fused attention (torch has no formula for the CPU SDPA
    kernel; the project's `flop_counter` adds it): QK^T and AV are B * heads * n * n * d MACs each."""
    from patchprune.ivs.evaluate import ComponentMeter

    B, H, n, d = 2, 3, 10, 8
    q, k, v = (torch.randn(B, H, n, d) for _ in range(3))
    meter = ComponentMeter(count=True)
    with meter("vision"):
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert meter.macs["vision"] == 2 * B * H * n * n * d
