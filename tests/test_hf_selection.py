"""`select_visual_tokens`: the selection step shared by the Hugging Face wrapper and patchprune.ivs."""
from __future__ import annotations

import pytest
import torch

from patchprune.hf.selection import select_visual_tokens
from patchprune.select import select


@pytest.fixture
def feats():
    g = torch.Generator().manual_seed(0)
    scored = torch.randn(2, 16, 8, generator=g)  # the features a method judges (4 x 4 grid)
    values = torch.randn(2, 16, 5, generator=g)  # what the language model receives
    return scored, values


@pytest.mark.parametrize("method", ["evtp", "kcenter", "divprune", "random"])
def test_a_selection_judges_scored_and_gathers_values(feats, method):
    scored, values = feats
    kept, index = select_visual_tokens(scored, 6, method, values=values, seed=3) if method == "random" else \
        select_visual_tokens(scored, 6, method, values=values)
    ref = select(scored, 6, method, seed=3) if method == "random" else select(scored, 6, method)
    assert torch.equal(index, ref.index)
    assert torch.equal(kept, torch.stack([values[b, ref.slots[b]] for b in range(2)]))
    alone, alone_index = select_visual_tokens(scored, 6, method, seed=3) if method == "random" else \
        select_visual_tokens(scored, 6, method)
    assert torch.equal(alone, ref.tokens) and torch.equal(alone_index, ref.index)


def test_a_merging_method_merges_the_values(feats):
    scored, values = feats
    kept, index = select_visual_tokens(scored, 6, "tome", values=values)
    ref = select(values, 6, "tome")
    assert kept.shape == (2, 6, 5) and torch.allclose(kept, ref.tokens) and torch.equal(index, ref.index)


def test_keeping_every_token_returns_the_values_in_grid_order(feats):
    scored, values = feats
    kept, index = select_visual_tokens(scored, 16, "evtp", values=values)
    assert kept is values and torch.equal(index, torch.arange(16).expand(2, 16))


def test_values_of_other_tokens_are_refused(feats):
    scored, values = feats
    with pytest.raises(ValueError, match="must have the tokens of scored"):
        select_visual_tokens(scored, 6, "evtp", values=values[:, :10])
