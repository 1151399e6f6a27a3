"""The farthest-first engine: same picks as the textbook loop, 2-approximation of k-center."""
from itertools import combinations

import pytest
import torch

from patchprune.select import farthest
from patchprune.select.farthest import farthest_first, farthest_first_reference


@pytest.fixture(params=[0, 3, 16], ids=lambda p: f"plain{p}")
def plain_steps(request, monkeypatch):
    """Exercise the pool rounds from the first pick on, and the default plain warm-up."""
    monkeypatch.setattr(farthest, "PLAIN_STEPS", request.param)
    return request.param


@pytest.mark.parametrize("pool", [1, 2, 5, 64])
def test_engine_matches_textbook_loop(pool, plain_steps):
    g = torch.Generator().manual_seed(0)
    for trial in range(8):
        B, N, E = 1 + trial % 3, 5 + 8 * trial, 1 + trial % 7
        z = torch.randn(B, N, E, generator=g)
        k = 1 + (trial * 7) % N
        start = torch.randint(0, N, (B,), generator=g)
        ref = farthest_first_reference(z, k, start)
        got = farthest_first(z, k, start, pool=pool)
        assert torch.equal(got, ref), (trial, pool)


def test_engine_respects_padding(plain_steps):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 60, 4, generator=g)
    valid = torch.rand(3, 60, generator=g) > 0.4
    valid[:, 0] = True
    k = int(valid.sum(1).min())
    start = torch.zeros(3, dtype=torch.long)
    got = farthest_first(z, k, start, valid=valid, pool=4)
    assert torch.equal(got, farthest_first_reference(z, k, start, valid=valid))
    assert bool(valid.gather(1, got).all())  # never a padding slot
    assert all(len(set(row.tolist())) == k for row in got)  # never twice the same token


def test_engine_handles_duplicate_tokens(plain_steps):
    z = torch.tensor([[[0.0], [0.0], [1.0], [1.0], [5.0]]])
    got = farthest_first(z, 5, torch.tensor([0]), pool=2)
    assert sorted(got[0].tolist()) == [0, 1, 2, 3, 4]
    assert torch.equal(got, farthest_first_reference(z, 5, torch.tensor([0])))


def _radius(points: torch.Tensor, subset) -> float:
    return float(torch.cdist(points, points[list(subset)]).amin(1).amax())


def test_greedy_radius_is_within_twice_the_optimum():
    g = torch.Generator().manual_seed(2)
    for trial in range(6):
        n, k = 9 + trial, 2 + trial % 3
        pts = torch.randn(1, n, 2, generator=g)
        picks = farthest_first(pts, k, torch.tensor([trial % n]), pool=3)[0].tolist()
        greedy = _radius(pts[0], picks)
        optimum = min(_radius(pts[0], s) for s in combinations(range(n), k))
        assert greedy <= 2 * optimum + 1e-6
        assert greedy >= optimum - 1e-6


def test_engine_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        farthest_first(torch.randn(1, 4, 2), 5, torch.tensor([0]))


@pytest.mark.parametrize("strategy", ["pool", "matrix"])
def test_both_strategies_match_the_textbook_loop(strategy):
    """Matrix mode (one N x N GEMM + a chain) and the pool rounds are speed choices: same picks."""
    g = torch.Generator().manual_seed(3)
    for trial in range(8):
        B, N, E = 1 + trial % 3, 6 + 9 * trial, 2 + trial % 5
        z = torch.randn(B, N, E, generator=g)
        valid = torch.rand(B, N, generator=g) > 0.3 if trial % 2 else None
        start = torch.zeros(B, dtype=torch.long)
        if valid is not None:
            valid[:, 0] = True
        k = max(1, int((valid.sum(1).min() if valid is not None else N) * (0.3 + 0.1 * trial)) - 1)
        ref = farthest_first_reference(z, k, start, valid=valid)
        assert torch.equal(farthest_first(z, k, start, valid=valid, strategy=strategy), ref), (trial, strategy)


def test_auto_strategy_takes_the_matrix_at_in_vit_keep_ratios():
    cpu = torch.device("cpu")
    assert farthest.use_matrix(614, (1, 1024), cpu)  # keep 60 % of a 512 px ViT-S grid
    assert not farthest.use_matrix(146, (4, 729), cpu)  # EVTP's 20 % before an MLLM: pool rounds
    assert not farthest.use_matrix(900, (512, 1024), cpu)  # the matrix would not fit MATRIX_BYTES
    cuda = torch.device("cuda")  # a device object only: no GPU is needed to ask
    assert farthest.use_matrix(614, (1, 1024), cuda) and farthest.use_matrix(146, (4, 729), cuda)  # host chain
    assert farthest.use_matrix(3, (8, 144), cuda)  # even for a handful of picks: each plain step costs launches
    assert not farthest.use_matrix(900, (512, 1024), cuda)  # too large to copy: plain steps on the device
    assert not farthest.use_matrix(614, (1, 1024), torch.device("meta"))  # other devices: plain steps
    assert farthest.use_matrix(14, (8, 144), cpu)  # a small grid (ivs frames at 10 %): the matrix is cheaper
    assert not farthest.use_matrix(7, (8, 144), cpu)  # ... but not for a handful of picks
    with pytest.raises(ValueError, match="strategy"):
        farthest.use_matrix(1, (1, 2), cpu, "fast")


def test_matrix_mode_reuses_a_given_distance_matrix():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(2, 30, 3, generator=g)
    start = torch.tensor([3, 7])
    dist = farthest.pairwise_sq(z, farthest.squared_norms(z))
    assert torch.equal(farthest_first(z, 20, start, dist=dist), farthest_first_reference(z, 20, start))
    # the chain reads only the matrix: a different one changes the picks
    assert not torch.equal(farthest_first(z, 20, start, dist=dist.flip(2)), farthest_first_reference(z, 20, start))
