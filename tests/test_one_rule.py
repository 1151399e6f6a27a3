"""One rule each (issue 13, item 5): ratio -> K, the empty-sample rescue, the row gather, PKR."""
from __future__ import annotations

import pytest
import timm
import torch

import patchprune as pp
from patchprune.metrics import pkr
from patchprune.policies.base import keep_count as policy_keep_count
from patchprune.select import budget
from patchprune.tokens import gather_tokens, keep_at_least_one, keep_count


def test_one_ratio_gives_one_k_everywhere():
    assert policy_keep_count is keep_count
    for n in (1, 5, 36, 100, 144, 196, 729):
        for r in (0.05, 0.1, 0.2, 0.29, 0.4, 0.5, 0.55, 0.7, 1.0):
            k = keep_count(n, r)
            assert k == budget(n, r) == int(keep_count(torch.tensor([n]), r)[0])
            assert k == max(1, int(n * r + 0.5 + 1e-9))  # round, halves up


def test_rounding_examples_and_bad_ratios():
    assert [budget(729, r) for r in (0.05, 0.1, 0.2)] == [36, 73, 146]  # the EVTP budgets
    assert keep_count(5, 0.5) == 3 and keep_count(100, 0.29) == 29 and keep_count(144, 0.7) == 101
    assert keep_count(3, 0.01) == 1
    assert keep_count(torch.tensor([0, 3, 10]), 0.25).tolist() == [1, 1, 3]
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="keep ratio"):
            keep_count(10, bad)


def test_runner_and_select_keep_the_same_k():
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=80, patch_size=16,
                            embed_dim=32, depth=3, num_heads=2, class_token=False, global_pool="avg").eval()
    out = pp.sparse_vit(vit, {1: ("evtp", 0.3)})(torch.randn(2, 3, 80, 80))  # N = 25, 0.3 * 25 = 7.5
    assert out.keep_masks[1].sum(1).tolist() == [budget(25, 0.3)] * 2 == [8, 8]


def test_keep_at_least_one_rescues_only_empty_samples():
    keep = torch.tensor([[False, False, False], [True, False, False], [False, False, False]])
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.0, 5.0, 0.0], [3.0, 2.0, 1.0]])
    eligible = torch.tensor([[True, True, True], [True, True, True], [False, True, True]])
    out = keep_at_least_one(keep, scores, eligible)
    assert out.tolist() == [[False, True, False], [True, False, False], [False, True, False]]
    assert keep_at_least_one(keep).tolist() == [[True, False, False], [True, False, False], [True, False, False]]
    assert keep_at_least_one(keep, eligible=eligible)[2].tolist() == [False, True, False]


def test_gather_tokens_matches_indexing_and_is_differentiable():
    x = torch.randn(3, 7, 5, requires_grad=True)
    slots = torch.tensor([[6, 0], [3, 3], [1, 2]])
    expected = torch.stack([x[b, slots[b]] for b in range(3)])
    assert torch.equal(gather_tokens(x, slots), expected)
    gather_tokens(x, slots).sum().backward()
    assert x.grad[1, 3].eq(2).all() and x.grad[0, 1].eq(0).all()
    xt = torch.randn(2, 5, 7).transpose(1, 2)  # non-contiguous [2, 7, 5]
    assert torch.equal(gather_tokens(xt, slots[:2]), torch.stack([xt[b, slots[b]] for b in range(2)]))


def test_runner_pkr_equals_the_metric_and_runner_needs_no_metrics_module():
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=64, patch_size=16,
                            embed_dim=32, depth=4, num_heads=2, class_token=False, global_pool="avg").eval()
    out = pp.sparse_vit(vit, {1: ("random", 0.5), 2: ("random-bernoulli", 0.5)})(torch.randn(3, 3, 64, 64))
    assert out.pkr == pytest.approx(pkr(out.keep_masks), abs=1e-12)
    import ast
    import inspect

    import patchprune.vit as vit_module

    imported = [n.module for n in ast.walk(ast.parse(inspect.getsource(vit_module)))
                if isinstance(n, ast.ImportFrom) and n.module]
    assert not [m for m in imported if m.startswith("patchprune.metrics")]
