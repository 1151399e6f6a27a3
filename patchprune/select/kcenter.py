"""k-center: greedy farthest-first traversal on the token features (no coordinates).

Minimises (2-approximately) the coverage radius max_i min_{j in S} ||x_i - x_j|| in feature space.
Start: the token farthest from the mean of all tokens ("mean", the spec's step 5) or a plain start.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from patchprune.select.base import SelectInput, register_method, resolve_start
from patchprune.select.evtp import joint_space
from patchprune.select.farthest import DEFAULT_POOL, farthest_first


@register_method("kcenter")
def kcenter(x: Tensor, k: int, inp: SelectInput, *, init: Any = "mean", normalize: bool = False,
            seed: int = 0, pool: int = DEFAULT_POOL, strategy: str = "auto") -> Tensor:
    """Kept slots [B, k] in pick order.

    init: "mean" (farthest from the mean), "first" (first slot, the textbook arbitrary start),
    "random" (seeded), a slot, or a [B] tensor of slots. normalize: L2-normalise the features first
    (then it equals DivPrune after the first pick). pool, strategy: the engine's pool size and
    "auto" | "pool" | "matrix" (`farthest_first`; speed only).
    """
    js = joint_space(x, inp, normalize="l2" if normalize else "none", spatial=False, reuse=True)
    start = resolve_start(init, js.sq, inp.valid, seed)
    return farthest_first(js.z, k, start, valid=inp.valid, sq=js.sq, pool=pool, strategy=strategy)
