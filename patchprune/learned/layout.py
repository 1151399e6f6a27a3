"""VPP module layouts (the paper's Table 4): where the Map-SM and the SMs sit, and their keep rates.

A layout string names the positions, index i = the input of block i (0 = before the first block):
"map:1;sm:3,6,9" (VPP's default), "sm:0,3,6,9" (no Map-SM: `vpp-sm-only`, no video context),
"map:1" (Map-SM only: a constant keep ratio after it).

Rates, one rule for every layout: the first module keeps a fraction k of the tokens and each later
SM keeps VPP's rho of the live ones (cumulative targets k, k rho, k rho^2, ...); k is chosen so
that the layout's nominal PKR (mean over blocks of the scheduled keep ratio) equals the nominal PKR
of VPP's default layout at the same target (0.5416 at 55 %, 0.4133 at 40 % on 12 blocks). The
default layout keeps VPP's own kappa (0.7 / 0.6); "map:1" gets k = 0.50 at 55 %.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from patchprune.learned.mapsm import default_kappa
from patchprune.learned.registry import LearnedPruner, build, depth
from patchprune.learned.vpp import VPP_MAP_POSITION, VPP_REFERENCE_POSITION, VPP_SM_POSITIONS, vpp_rho

LAYOUT_HELP = "e.g. 'map:1;sm:3,6,9' (VPP's default), 'sm:0,3,6,9' (no Map-SM) or 'map:1' (no SM)"


@dataclass(frozen=True)
class ModuleLayout:
    """Positions of VPP's modules: the Map-SM (None: none) and the SMs (ascending)."""

    map_position: int | None
    sm_positions: tuple[int, ...]

    def __str__(self) -> str:
        parts = [] if self.map_position is None else [f"map:{self.map_position}"]
        if self.sm_positions:
            parts.append("sm:" + ",".join(str(p) for p in self.sm_positions))
        return ";".join(parts)

    @property
    def slug(self) -> str:
        """File-name form of `str(self)`: map1_sm3-6-9, sm0-3-6-9, map1."""
        return str(self).replace(":", "").replace(",", "-").replace(";", "_")

    @property
    def positions(self) -> tuple[int, ...]:
        """Every module position in order (Map-SM first)."""
        return ((self.map_position,) if self.map_position is not None else ()) + self.sm_positions


DEFAULT_LAYOUT = ModuleLayout(VPP_MAP_POSITION, VPP_SM_POSITIONS)


def _ints(text: str, what: str, layout: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--vpp-layout {layout!r}: {what} positions must be integers ({LAYOUT_HELP})") from None
    return values


def parse_layout(text: str, num_blocks: int | None = None,
                 reference_position: int = VPP_REFERENCE_POSITION) -> ModuleLayout:
    """A `ModuleLayout` from "map:I;sm:J,K,..." or a ValueError naming what is wrong and the fix.

    Checks: known keys, integer positions, each in 0..num_blocks-1 (when given), no position twice,
    the Map-SM before its reference position (where it reads the previous frame's features) and
    every SM after the Map-SM.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"--vpp-layout must not be empty ({LAYOUT_HELP})")
    found: dict[str, list[int]] = {}
    for part in text.replace(" ", "").split(";"):
        if not part:
            continue
        key, sep, values = part.partition(":")
        if key not in ("map", "sm") or not sep or not values:
            raise ValueError(f"--vpp-layout {text!r}: bad item {part!r}; expected map:I and/or sm:J,K,... ({LAYOUT_HELP})")
        if key in found:
            raise ValueError(f"--vpp-layout {text!r}: {key} appears twice; give each key once ({LAYOUT_HELP})")
        found[key] = _ints(values, "Map-SM" if key == "map" else "SM", text)
    maps, sms = found.get("map", []), found.get("sm", [])
    if len(maps) > 1:
        raise ValueError(f"--vpp-layout {text!r}: VPP has one Map-SM; give one map position")
    if not maps and not sms:
        raise ValueError(f"--vpp-layout {text!r}: no module; {LAYOUT_HELP}")
    every = maps + sms
    bad = [p for p in every if p < 0 or (num_blocks is not None and p >= num_blocks)]
    if bad:
        span = "0.." + (str(num_blocks - 1) if num_blocks is not None else "depth-1")
        raise ValueError(f"--vpp-layout {text!r}: positions {bad} are outside {span} "
                         f"(index i = the input of block i, 0 = before the first block)")
    twice = sorted({p for p in every if every.count(p) > 1})
    if twice:
        raise ValueError(f"--vpp-layout {text!r}: positions {twice} appear twice; one module per position")
    if sms != sorted(sms):
        raise ValueError(f"--vpp-layout {text!r}: give the SM positions in ascending order")
    if maps:
        if maps[0] >= reference_position:
            raise ValueError(f"--vpp-layout {text!r}: the Map-SM at {maps[0]} must come before its reference "
                             f"position {reference_position} (where it reads the previous frame); use map:0..."
                             f"{reference_position - 1}")
        early = [p for p in sms if p < maps[0]]
        if early:
            raise ValueError(f"--vpp-layout {text!r}: SM positions {early} come before the Map-SM at {maps[0]}; "
                             "SMs refine the Map-SM's mask, put them after it")
    return ModuleLayout(maps[0] if maps else None, tuple(sms))


def nominal_pkr(layout: ModuleLayout, first_rate: float, rho: float, num_blocks: int) -> float:
    """Mean over blocks of the scheduled keep ratio: the first module keeps `first_rate`, each later
    one rho of the live tokens (blocks before the first module run dense)."""
    rates = {p: (first_rate if i == 0 else rho) for i, p in enumerate(layout.positions)}
    keep, total = 1.0, 0.0
    for block in range(num_blocks):
        keep *= rates.get(block, 1.0)
        total += keep
    return total / num_blocks


def layout_rates(layout: ModuleLayout, target: float, num_blocks: int = 12) -> tuple[float, float]:
    """(first module's keep rate k, rho of the later SMs) for a PKR target (0.55 or 0.40): the rule
    of this module's docstring. ValueError when no k <= 1 reaches the default layout's PKR."""
    kappa, rho = default_kappa(target), vpp_rho(target)
    if layout == DEFAULT_LAYOUT:
        return kappa, rho
    goal = nominal_pkr(DEFAULT_LAYOUT, kappa, rho, num_blocks)
    dense = layout.positions[0] / num_blocks  # blocks before the first module
    per_k = nominal_pkr(layout, 1.0, rho, num_blocks) - dense  # the PKR is linear in k
    k = round((goal - dense) / per_k, 4)
    if not 0.0 < k <= 1.0:
        raise ValueError(f"--vpp-layout {layout}: no first keep rate <= 1 reaches VPP's nominal PKR {goal:.3f} at "
                         f"target {target:g} (it needs {k:.3f}); put the first module earlier")
    return k, rho


def build_layout(model: nn.Module, target: float, layout: ModuleLayout | str, **options: Any) -> LearnedPruner:
    """VPP on a timm ViT with its modules at `layout`: `vpp` with a Map-SM, `vpp-sm-only` without."""
    n = depth(model)
    if isinstance(layout, str):
        layout = parse_layout(layout, n)
    else:
        parse_layout(str(layout), n)  # the same checks for a hand-made ModuleLayout
    first, rho = layout_rates(layout, target, n)
    if layout.map_position is None:
        return build("vpp-sm-only", model, target, sm_positions=layout.sm_positions, first_rate=first, rho=rho,
                     **options)
    return build("vpp", model, target, map_position=layout.map_position, sm_positions=layout.sm_positions,
                 kappa=first, rho=rho, **options)
