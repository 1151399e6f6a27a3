"""Coverage radius of a token subset: how far the worst-represented token is from its nearest kept one.

r(S) = max_i min_{j in S} ||x_i - x_j||, per frame, in one of three spaces (EVTP paper, Defs. 1-3):
"feature" (L2-normalised features x^), "joint" (x~ = [x^ ; lambda p] with EVTP's adaptive lambda,
or a fixed `lam`) or "spatial" (grid coordinates p = (row / (H-1), col / (W-1))). Smaller is better.
A kept token covers itself exactly, so the full set has radius 0.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from patchprune.select.base import SelectInput, grid_coordinates, l2_normalize, take_rows
from patchprune.select.evtp import joint_space
from patchprune.select.farthest import sq_distances, squared_norms
from patchprune.tokens import check_grid

SPACES = ("feature", "joint", "spatial")


def coverage_radius(tokens: Tensor, index: Tensor, space: str = "feature", grid: tuple[int, int] | None = None, *,
                    lam: float | None = None, normalize: bool = True, valid: Tensor | None = None) -> Tensor:
    """Coverage radius [B] of the kept positions `index` [B, K] among the grid tokens [B, N, C].

    grid defaults to a square; `normalize=False` measures raw features (feature / joint spaces);
    `valid` [B, N] excludes padding tokens from the max.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    if tokens.dim() != 3 or index.dim() != 2 or index.shape[0] != tokens.shape[0]:
        raise ValueError(f"expected tokens [B, N, C] and index [B, K], got {tuple(tokens.shape)} and {tuple(index.shape)}")
    B, N, _ = tokens.shape
    if grid is None:
        side = math.isqrt(N)
        grid = (side, side)
    check_grid(N, grid)
    index = index.long()
    if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= N:
        raise ValueError(f"index must hold at least one position in [0, {N})")
    with torch.no_grad():
        z = _space(tokens.detach().float(), grid, space, lam, normalize)
        sq = squared_norms(z)
        d2 = sq_distances(z, sq, take_rows(z, index), sq.gather(1, index)).clamp_min_(0)
        d2.scatter_(1, index[:, None, :], 0.0)  # exact zero for a kept token to itself
        nearest = d2.amin(2)
        if valid is not None:
            nearest = nearest.masked_fill(~valid, 0.0)
        return nearest.amax(1).sqrt()


def _space(x: Tensor, grid: tuple[int, int], space: str, lam: float | None, normalize: bool) -> Tensor:
    B, N, _ = x.shape
    positions = torch.arange(N, device=x.device).expand(B, N)
    if space == "spatial":
        return grid_coordinates(positions, grid)
    if space == "feature":
        return l2_normalize(x) if normalize else x
    inp = SelectInput(tokens=x, grid=grid, index=positions)
    return joint_space(x, inp, normalize="l2" if normalize else "none", spatial=True, lam=lam).z
