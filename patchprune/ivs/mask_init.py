"""Start the IVS mask branch from a dense VIS run (`train ivs --mask-init VIS_RUN`).

Why: InstructSeg's mask branch starts from an instance-segmentation checkpoint (Mask2Former), so its
queries are object proposals before the referring choice is learnt. Here nothing can be downloaded,
but `train vis` trains exactly those parts (timm ViT -> simple pyramid -> HF Mask2Former pixel
decoder + masked-attention decoder) on generated scenes of the same engine. The VIS backbone maps to
the branch's encoder, pyramid and head parts by name; the VIS class and semantic heads are not used
(the IVS model has no class vocabulary); the decoder's learned query positions are taken for the
first `seg_queries` queries (the VIS run must have at least that many). The learned query *content*
(`queries_features`) is not used by the IVS decoder either way: the language model's <seg> states
replace it. The branch takes the VIS run's shape (`shape_overrides`): encoder width / depth / heads /
stem, pyramid and decoder sizes; image and patch size must already agree.
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

UNUSED_VIS_PARTS = ("head.class_head.", "head.semantic.")
PER_QUERY = ("transformer.queries_embedder.weight", "transformer.queries_features.weight")


# IVS config field <- VIS config field: what the branch's tensor shapes depend on
SHAPE_FIELDS = {"mask_dim": "dim", "mask_depth": "depth", "mask_heads": "heads", "mask_stem": "stem",
                "fpn_dim": "fpn_dim", "hidden_dim": "hidden_dim", "decoder_layers": "decoder_layers",
                "decoder_heads": "decoder_heads", "decoder_ffn": "decoder_ffn", "pixel_layers": "pixel_layers",
                "pixel_ffn": "pixel_ffn"}


def shape_overrides(vis_run: str | Path, img_size: int, patch_size: int) -> dict[str, object]:
    """IVS config overrides giving the mask branch a VIS run's shape; ValueError when the run's image or
    patch size differs from the IVS config's (the grids would not match) or its backbone is not a ViT."""
    from patchprune.vis.config import VISConfig

    vis = VISConfig.load(Path(vis_run))
    if (vis.img_size, vis.patch_size) != (img_size, patch_size):
        raise ValueError(f"--mask-init {vis_run}: the VIS run is {vis.img_size} px / patch {vis.patch_size}, "
                         f"this IVS config {img_size} px / patch {patch_size}")
    if vis.backbone != "vit":
        raise ValueError(f"--mask-init {vis_run}: needs a `train vis` run of a named config (ViT backbone)")
    return {ivs: getattr(vis, v) for ivs, v in SHAPE_FIELDS.items()}


def vis_name(branch_key: str) -> str:
    """The VIS model's parameter name for a mask-branch parameter."""
    if branch_key.startswith("encoder."):
        return "backbone." + branch_key[len("encoder."):]
    if branch_key.startswith("pyramid."):
        return branch_key
    return "head." + branch_key


def mapped_state(branch: nn.Module, vis_state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """The branch's state dict filled from a VIS model's; raises ValueError naming every mismatch."""
    own = branch.state_dict()
    out: dict[str, Tensor] = {}
    problems: list[str] = []
    for key, mine in own.items():
        theirs = vis_state.get(vis_name(key))
        if theirs is None:
            problems.append(f"{vis_name(key)} missing")
            continue
        if key in PER_QUERY and theirs.shape[0] >= mine.shape[0] and theirs.shape[1:] == mine.shape[1:]:
            theirs = theirs[: mine.shape[0]]
        if theirs.shape != mine.shape:
            problems.append(f"{key}: {tuple(theirs.shape)} in the VIS run, {tuple(mine.shape)} here")
            continue
        out[key] = theirs.clone()
    if problems:
        shown = "; ".join(problems[:4]) + (f"; ... ({len(problems)} in all)" if len(problems) > 4 else "")
        raise ValueError(f"--mask-init {source}: the VIS run's parts do not fit this config's mask branch ({shown}); "
                         "the branch takes the VIS run's shape unless TrainSettings.overrides change it, and needs "
                         "seg_queries <= the run's num_queries")
    return out


def init_mask_branch(branch: nn.Module, vis_run: str | Path, class_head: nn.Linear | None = None) -> int:
    """Load a dense VIS run's last checkpoint into `branch` (an `ivs.mask_branch.MaskBranch`); returns
    the VIS run's step. `class_head` (the instance loss's, `IVSModel.class_head`) takes the VIS class
    head's weights when their shapes agree (same category count; the VIS semantic map is not used),
    else keeps its initialisation."""
    from patchprune.vis.run import load_run

    loaded = load_run(vis_run, method="dense")
    full = loaded.model.state_dict()
    vis_state = {k: v for k, v in full.items() if not k.startswith(UNUSED_VIS_PARTS)}
    branch.load_state_dict(mapped_state(branch, vis_state, str(vis_run)))
    if class_head is not None and full["head.class_head.weight"].shape == class_head.weight.shape:
        class_head.load_state_dict({"weight": full["head.class_head.weight"].clone(),
                                    "bias": full["head.class_head.bias"].clone()})
    return loaded.step
