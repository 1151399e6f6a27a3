"""coverage_radius: max over tokens of the distance to the nearest kept token, in three spaces."""
import pytest
import torch

from patchprune.select.coverage import coverage_radius
from patchprune.select import select

GRID = (6, 8)
N = 48


def _tokens(seed=0):
    return torch.randn(2, N, 12, generator=torch.Generator().manual_seed(seed))


def _brute_force(points, index):
    return torch.stack([torch.cdist(p, p[i]).amin(1).amax() for p, i in zip(points, index)])


def test_full_set_has_zero_radius():
    x = _tokens()
    full = torch.arange(N).expand(2, N)
    for space in ("feature", "joint", "spatial"):
        assert torch.equal(coverage_radius(x, full, space, GRID), torch.zeros(2))


def test_radius_matches_a_brute_force_computation():
    x = _tokens(1)
    index = torch.tensor([[0, 5, 17, 30], [2, 3, 40, 47]])
    xh = torch.nn.functional.normalize(x, dim=-1)
    assert torch.allclose(coverage_radius(x, index, "feature", GRID), _brute_force(xh, index), atol=1e-5)
    assert torch.allclose(coverage_radius(x, index, "feature", GRID, normalize=False), _brute_force(x, index), atol=1e-5)
    rows, cols = torch.arange(N) // 8, torch.arange(N) % 8
    p = torch.stack([rows / 5, cols / 7], -1).expand(2, N, 2)
    assert torch.allclose(coverage_radius(x, index, "spatial", GRID), _brute_force(p, index), atol=1e-6)
    joint = torch.cat([xh, 3.0 * p], -1)
    assert torch.allclose(coverage_radius(x, index, "joint", GRID, lam=3.0), _brute_force(joint, index), atol=1e-5)


def test_corner_pick_has_the_grid_diagonal_as_spatial_radius():
    x = _tokens()
    assert torch.allclose(coverage_radius(x, torch.zeros(2, 1, dtype=torch.long), "spatial", GRID),
                          torch.full((2,), 2 ** 0.5))


@pytest.mark.parametrize("method,space", [("kcenter", "feature"), ("evtp", "joint"), ("divprune", "feature")])
def test_radius_does_not_grow_with_k_for_greedy_methods(method, space):
    x = _tokens(2)
    opts = {"normalize": True} if method == "kcenter" else {}
    order = select(x, N, method=method, grid=GRID, **opts).order  # greedy picks are nested: K picks = a prefix
    for k in (3, 11, 30):
        assert torch.equal(select(x, k, method=method, grid=GRID, **opts).order, order[:, :k])
    radii = [coverage_radius(x, order[:, :k], space, GRID) for k in range(1, N + 1)]
    for a, b in zip(radii, radii[1:]):
        assert bool((b <= a + 1e-6).all())
    assert torch.equal(radii[-1], torch.zeros(2))


def test_padding_tokens_do_not_count():
    x = _tokens(3)
    index = torch.tensor([[0, 1], [0, 1]])
    valid = torch.zeros(2, N, dtype=torch.bool)
    valid[:, :2] = True
    assert torch.equal(coverage_radius(x, index, "feature", GRID, valid=valid), torch.zeros(2))


def test_bad_arguments_raise():
    x = _tokens()
    with pytest.raises(ValueError, match="space"):
        coverage_radius(x, torch.zeros(2, 1, dtype=torch.long), "pixels", GRID)
    with pytest.raises(ValueError, match="index"):
        coverage_radius(x, torch.full((2, 1), N), "feature", GRID)
    with pytest.raises(ValueError, match="does not match"):
        coverage_radius(x, torch.zeros(2, 1, dtype=torch.long), "feature", (5, 5))
