"""Map-SM's logit smoothing: the mean-pool window, and `smooth_kernel="auto"` scaled to the grid."""
import pytest
import torch

from patchprune.learned import MapSM, build
from patchprune.learned.mapsm import grid_smooth_kernel, smooth_logits
from test_learned_helpers import tiny_vit


@pytest.mark.parametrize("grid,kernel", [((12, 12), 5), ((22, 40), 9), ((32, 32), 13), ((6, 6), 3), ((2, 9), 1)])
def test_auto_kernel_is_the_specs_share_of_the_short_side(grid, kernel):
    assert grid_smooth_kernel(grid) == kernel


def test_smoothing_is_a_replicate_padded_mean_pool():
    z = torch.randn(1, 5 * 6, 2)
    img = z[0].T.reshape(2, 5, 6)
    out = smooth_logits(z, (5, 6), 3)[0].T.reshape(2, 5, 6)
    assert torch.allclose(out[:, 2, 3], img[:, 1:4, 2:5].mean(dim=(1, 2)), atol=1e-6)  # interior window
    corner = img[:, [0, 0, 1], :][:, :, [0, 0, 1]].mean(dim=(1, 2))  # edge rows / cols repeated
    assert torch.allclose(out[:, 0, 0], corner, atol=1e-6)
    assert torch.equal(smooth_logits(z, (5, 6), 1), z)


def _keep_probability(kernel, grid=(12, 12), seed=0):
    torch.manual_seed(seed)
    sm = MapSM(16, smooth_kernel=kernel, noise=False)
    g = torch.Generator().manual_seed(1)
    n = grid[0] * grid[1]
    x, keys, values = (torch.randn(2, n, 16, generator=g) for _ in range(3))
    return sm.keep_probability(x, keys, values, torch.ones(2, n, dtype=torch.bool), grid, differentiable=False)


def test_auto_resolves_per_grid_at_run_time():
    assert torch.allclose(_keep_probability("auto"), _keep_probability(5))
    assert not torch.allclose(_keep_probability("auto"), _keep_probability(9))
    assert torch.allclose(_keep_probability("auto", grid=(6, 8)), _keep_probability(3, grid=(6, 8)))


@pytest.mark.parametrize("bad", [4, 0, "wide", True])
def test_bad_kernels_are_refused_when_built(bad):
    with pytest.raises(ValueError, match="smooth_kernel"):
        build("vpp", tiny_vit(), 0.55, smooth_kernel=bad)


def test_vpp_records_the_option_as_given():
    pruner = build("vpp", tiny_vit(), 0.55, smooth_kernel="auto")
    assert pruner.config.options["smooth_kernel"] == "auto"
