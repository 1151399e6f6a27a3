"""VPP (Video Patch Pruning): Map-SM at position 1 and SM at positions 3, 6, 9 of a 12-block ViT.

Other positions (the paper's Table 4, index 0 = before the first block; no SM = Map-SM only):
`map_position` / `sm_positions`, or a layout string through `patchprune.learned.layout`.

Targets: 55 % PKR -> kappa 0.7, rho 0.8 (SM targets 0.56, 0.448, 0.358); 40 % -> kappa 0.6,
rho 0.7 (0.42, 0.294, 0.206). Loss: `patchprune.learned.losses.vpp_loss`. Streaming: pass a
`patchprune.video.VideoStream` as `stream=` on every frame.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from patchprune.learned.common import target_default
from patchprune.learned.losses import vpp_targets
from patchprune.learned.losses import VPP_FIRST_FRAME_LOSSES
from patchprune.learned.mapsm import MapSM, default_kappa
from patchprune.learned.registry import LearnedPruner, MethodConfig, check_positions, embed_dim, register_method
from patchprune.learned.sm import SM

VPP_MAP_POSITION = 1
VPP_SM_POSITIONS = (3, 6, 9)
VPP_REFERENCE_POSITION = 6


VPP_RHO = {0.55: 0.8, 0.40: 0.7}


def vpp_rho(target: float) -> float:
    """Geometric SM target ratio for a PKR target (0.8 for 55 %, 0.7 for 40 %)."""
    return target_default(VPP_RHO, target, "VPP rho", "rho")


@register_method("vpp")
def build_vpp(
    model: nn.Module,
    target: float = 0.55,
    kappa: float | None = None,
    rho: float | None = None,
    smoothing: bool = True,
    smooth_kernel: int | str = 9,
    noise: bool = True,
    tau: float = 10.0,
    map_position: int = VPP_MAP_POSITION,
    sm_positions: tuple[int, ...] = VPP_SM_POSITIONS,
    reference_position: int = VPP_REFERENCE_POSITION,
    lambda_sm: float = 40.0,
    lambda_map: float = 10.0,
    theta: float = 0.5,
    first_frame_loss: str = "spec",
    init_keep: bool = False,
    detach_input: bool = False,
    execution: str = "auto",
    **unknown: Any,
) -> LearnedPruner:
    """VPP with the paper's configuration for `target` (0.55 or 0.40); every knob can be overridden.

    init_keep: our option (docs/learned/vpp.md): start every SM at its stage's keep rate (rho of
    the live tokens: zero output weights, bias margin logit(rho) / tau). Default: the authors'
    init (SM: PyTorch's default; Map-SM: trunc-normal 0.02, zero bias).
    first_frame_loss: sparsity loss of a pass without the Map-SM prior: "spec" (default), "none"
    or "live" (see `patchprune.learned.losses.vpp_loss`; "spec" settles below the PKR target).
    smooth_kernel: Map-SM's mean-pool window (spec 9, sized for ~22-patch short sides) or "auto"
    (the same share of each frame's grid: 5 on a 12 x 12 grid; `mapsm.grid_smooth_kernel`).
    detach_input: our option (docs/vis.md, "Tenth session"): the modules read the ViT's tokens
    without their gradient, so the sparsity loss and the straight-through masks train the modules
    only and never reshape the backbone's features. Default: the spec's end-to-end gradient.
    """
    if unknown:
        raise ValueError(f"unknown VPP options: {sorted(unknown)}")
    if first_frame_loss not in VPP_FIRST_FRAME_LOSSES:
        raise ValueError(f"first_frame_loss must be one of {VPP_FIRST_FRAME_LOSSES}, got {first_frame_loss!r}")
    kappa = default_kappa(target) if kappa is None else kappa
    rho = vpp_rho(target) if rho is None else rho
    check_positions(model, (map_position, *sm_positions, reference_position), "vpp", first=0)
    if not map_position < reference_position:
        raise ValueError("the Map-SM reference position must come after the Map-SM position")
    if len({map_position, *sm_positions}) != 1 + len(sm_positions):
        raise ValueError(f"vpp: one module per position; got Map-SM {map_position} and SMs {tuple(sm_positions)}")
    dim = embed_dim(model)
    schedule: dict[int, nn.Module] = {
        map_position: MapSM(dim, kappa=kappa, tau=tau, tau_s=tau, smoothing=smoothing, smooth_kernel=smooth_kernel,
                            noise=noise, reference_position=reference_position, detach_input=detach_input)
    }
    for p in sm_positions:
        schedule[p] = SM(dim, tau=tau, noise=noise, init_keep=rho if init_keep else None, detach_input=detach_input)
    config = MethodConfig(
        "vpp", target, vpp_targets(kappa, rho, len(sm_positions)),
        {"lambda_sm": lambda_sm, "lambda_map": lambda_map, "theta": theta, "first_frame": first_frame_loss,
         "kappa": kappa},
        {"kappa": kappa, "rho": rho, "smoothing": smoothing, "smooth_kernel": smooth_kernel, "noise": noise,
         "init_keep": init_keep, "detach_input": detach_input},
    )
    return LearnedPruner(model, schedule, config, execution=execution)
