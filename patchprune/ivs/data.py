"""Training / evaluation samples of instructed segmentation, held in memory at model size.

Layouts found under DIR (a `patchprune data synth-refer` folder holds both kinds):
    images (RefCOCO-style): DIR/refcoco/ or DIR itself with refs.json | refs(unc).p + instances.json
        + images/ (splits "train", "val"; "valid" is read as "val")
    videos (Ref-YouTube-VOS): DIR/ref-ytvos/ or DIR itself with meta_expressions/<split>/meta_expressions.json
        (splits "train", "valid"; "val" is read as "valid")
Frames are resized to the model's square input and masks with them. A sample = one expression and
its object's masks; `source` groups the samples of one image / video (the instruction-swap control
draws the other object's expression from there). Batches are pure functions of (seed, step).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from patchprune.ivs.model import IVSBatch, normalise
from patchprune.vis.data import resize_frames, resize_masks

KINDS = ("image", "video")


@dataclass
class ReferItem:
    """frames uint8 [T, S, S, 3] (shared by the items of one source); masks bool [T, S, S]; text;
    source (image / video name); track (the referred object's id); instances: every annotated object
    of the source (`SceneInstances`, images only; None for videos and inputs without annotations)."""

    frames: Tensor
    masks: Tensor
    text: str
    source: str
    track: int
    instances: "SceneInstances | None" = None


@dataclass
class SceneInstances:
    """Every annotated object of one image at model size: masks bool [M, S, S], labels long [M] (index
    into the data set's sorted category ids), categories: how many the data set lists. The auxiliary
    instance loss (`train ivs --instance-weight`) trains the <seg> queries on them, as Mask2Former's
    instance segmentation does."""

    masks: Tensor
    labels: Tensor
    categories: int


def scene_instances(coco, image: dict, size: int) -> SceneInstances:
    """The `SceneInstances` of one image (its entry of `coco.images`) of a `data.coco.CocoDataset`
    (crowd annotations left out)."""
    from patchprune.data import rle as rle_utils

    H, W = int(image["height"]), int(image["width"])
    order = sorted(coco.categories)
    anns = [a for a in coco.by_image[int(image["id"])] if not a.get("iscrowd", 0) and "segmentation" in a]
    if not anns:
        return SceneInstances(torch.zeros(0, size, size, dtype=torch.bool), torch.zeros(0, dtype=torch.long), len(order))
    masks = resize_masks(np.stack([rle_utils.decode(a["segmentation"], H, W) for a in anns]), size)
    labels = torch.tensor([order.index(int(a["category_id"])) for a in anns], dtype=torch.long)
    return SceneInstances(masks, labels, len(order))


def category_count(items: list[ReferItem]) -> int:
    """Categories the items' data set lists (0 when no item has instances)."""
    return max((it.instances.categories for it in items if it.instances is not None), default=0)


def _refcoco_files(root: Path) -> tuple[Path, Path, Path] | None:
    for base in (root / "refcoco", root):
        refs = next((p for p in (base / "refs.json", base / "refs(unc).p", base / "refs.p") if p.is_file()), None)
        inst = base / "instances.json"
        if refs is not None and inst.is_file():
            return refs, inst, base / "images"
    return None


def _ytvos_root(root: Path) -> Path | None:
    for base in (root / "ref-ytvos", root):
        if (base / "meta_expressions").is_dir():
            return base
    return None


def available_kinds(root: str | Path) -> list[str]:
    """Which kinds (image / video) the folder holds; FileNotFoundError naming the layouts otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} not found (give a `patchprune data synth-refer` output, a "
                                "RefCOCO-style or a Ref-YouTube-VOS folder)")
    kinds = [k for k, found in (("image", _refcoco_files(root)), ("video", _ytvos_root(root))) if found]
    if not kinds:
        raise FileNotFoundError(f"{root}: no referring data found; expected refcoco/refs.json + instances.json + "
                                "images/ (RefCOCO-style) or ref-ytvos/meta_expressions/<split>/ (Ref-YouTube-VOS), "
                                "or those files directly in the folder")
    return kinds


def load_items(root: str | Path, kind: str, split: str, size: int, limit: int | None = None) -> list[ReferItem]:
    """Every expression of `split` of one kind, at `size` x `size` (ValueError for an unknown kind,
    FileNotFoundError when the layout or split is missing)."""
    from patchprune.data.refer import RefCocoDataset, RefYTVOSDataset

    root = Path(root)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind not in available_kinds(root):
        raise FileNotFoundError(f"{root}: no {kind} data (found only {available_kinds(root)})")
    if kind == "image":
        refs, inst, images = _refcoco_files(root)  # type: ignore[misc]
        ds = RefCocoDataset(refs, inst, images, split={"valid": "val"}.get(split, split))
    else:
        base = _ytvos_root(root)
        split = {"val": "valid"}.get(split, split)
        if not (base / "meta_expressions" / split / "meta_expressions.json").is_file():  # type: ignore[operator]
            raise FileNotFoundError(f"{base}: no split {split!r} (meta_expressions/{split}/meta_expressions.json)")
        ds = RefYTVOSDataset(base, split)
    if len(ds) == 0:
        raise ValueError(f"{root}: split {split!r} of the {kind} data holds no expression")
    n = len(ds) if limit is None else min(limit, len(ds))
    cache: dict[str, Tensor] = {}
    scenes: dict[str, SceneInstances] = {}
    items = []
    for i in range(n):
        s = ds[i]
        source = s.name.split("/")[0] if kind == "video" else s.name
        if source not in cache:
            cache[source] = resize_frames(s.frames, size)
            if kind == "image":
                scenes[source] = scene_instances(ds.coco, ds.coco.images[ds.image_index[int(s.source_id)]], size)
        items.append(ReferItem(cache[source], resize_masks(s.masks, size), s.expression, source, int(s.track_id or 0),
                               scenes.get(source)))
    return items


def instance_targets(items: list[ReferItem], device: torch.device | str = "cpu") -> list | None:
    """Per item, `vis.loss.FrameTargets` of every annotated object (float masks [M, S, S], labels) on
    `device` (the model's), or None when any item has no `SceneInstances` (videos): the auxiliary
    instance loss then skips the batch."""
    from patchprune.vis.loss import FrameTargets

    if any(it.instances is None for it in items):
        return None
    return [FrameTargets(it.instances.masks.float().to(device), it.instances.labels.to(device)) for it in items]


def reference_indices(t: int, frames: int, count: int) -> list[int]:
    """The `count` neighbours of key frame t (half before, half after; clamped to the clip): InstructSeg
    evaluates each frame with 2 before and 2 after."""
    before = count // 2
    offsets = [o for o in range(-before, 0)] + [o for o in range(1, count - before + 1)]
    return [min(max(t + o, 0), frames - 1) for o in offsets]


def swap_texts(items: list[ReferItem]) -> list[str | None]:
    """For each item, the expression of another object of the same source (the first such in data
    order), or None when its source has no other object's expression."""
    by_source: dict[str, list[ReferItem]] = {}
    for it in items:
        by_source.setdefault(it.source, []).append(it)
    out: list[str | None] = []
    for it in items:
        other = next((o.text for o in by_source[it.source] if o.track != it.track), None)
        out.append(other)
    return out


def make_batch(items: list[ReferItem], keys: list[int], tokenizer, ref_frames: int,
               texts: list[str] | None = None) -> tuple[IVSBatch, Tensor, Tensor]:
    """(batch, target masks bool [B, S, S] of the key frames, present [B]) for items at key frames `keys`.
    All items must be of one kind (frames T = 1: images, no reference frames)."""
    from patchprune.ivs.tokenizer import encode_prompt

    video = items[0].frames.shape[0] > 1
    key = torch.stack([it.frames[t] for it, t in zip(items, keys)])
    refs = None
    if video:
        refs = torch.stack([it.frames[reference_indices(t, it.frames.shape[0], ref_frames)] for it, t in zip(items, keys)])
    enc = [encode_prompt(tokenizer, txt) for txt in (texts or [it.text for it in items])]
    T = max(len(ids) for ids, _ in enc)
    B = len(items)
    ids = torch.zeros(B, T, dtype=torch.long)
    text_mask = torch.zeros(B, T, dtype=torch.bool)
    refer = torch.zeros(B, T, dtype=torch.bool)
    for b, (i, r) in enumerate(enc):
        ids[b, :len(i)] = torch.tensor(i)
        text_mask[b, :len(i)] = True
        refer[b, :len(r)] = torch.tensor(r)
    masks = torch.stack([it.masks[t] for it, t in zip(items, keys)])
    present = masks.flatten(1).any(1)
    batch = IVSBatch(normalise(key), None if refs is None else normalise(refs), ids, text_mask, refer,
                     frame_ids(items, keys, ref_frames if video else 0))
    return batch, masks, present


def frame_ids(items: list[ReferItem], keys: list[int], ref_frames: int) -> Tensor:
    """[B * (1 + R)] ids of the batch's frames in the model's order (keys, then each key's references):
    equal for the same frame of the same frames tensor (`load_items` shares one tensor per source, so
    the expressions of one image and the key frames of one video, each other's references, share ids)."""
    seen: dict[tuple[int, int], int] = {}
    order = [(it, t) for it, t in zip(items, keys)]
    if ref_frames:
        order += [(it, r) for it, t in zip(items, keys) for r in reference_indices(t, it.frames.shape[0], ref_frames)]
    return torch.tensor([seen.setdefault((id(it.frames), t), len(seen)) for it, t in order], dtype=torch.long)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random generator of one training step (batches do not depend on resumes)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def sample_batch(pools: dict[str, list[ReferItem]], batch: int, gen: torch.Generator, video_share: float,
                 group: int = 1) -> tuple[str, list[int], list[int]]:
    """(kind, item indices, key frames) of one global batch: the kind is video with probability
    `video_share` when both kinds are loaded; no flips (they would swap "left of" / "right of").
    `group` > 1: batch / group sources, each with `group` of its expressions (see `grouped_indices`)."""
    kinds = [k for k in KINDS if pools.get(k)]
    kind = kinds[0]
    if len(kinds) == 2:
        kind = "video" if float(torch.rand((), generator=gen)) < video_share else "image"
    pool = pools[kind]
    if group > 1:
        idx, keys = grouped_indices(pool, batch, group, gen)
        return kind, idx, keys
    idx = torch.randint(0, len(pool), (batch,), generator=gen).tolist()
    keys = [int(torch.randint(0, pool[i].frames.shape[0], (), generator=gen)) for i in idx]
    return kind, idx, keys


def items_by_source(pool: list[ReferItem]) -> list[list[int]]:
    """Item indices of each source (image / video), sources in data order."""
    by_source: dict[str, list[int]] = {}
    for i, it in enumerate(pool):
        by_source.setdefault(it.source, []).append(i)
    return list(by_source.values())


def check_group(batch: int, group: int) -> None:
    """ValueError unless `group` (expressions per scene) is >= 1 and divides `batch`."""
    if group < 1 or batch % group:
        raise ValueError(f"--group must divide --batch ({batch}), got {group}")


def grouped_indices(pool: list[ReferItem], batch: int, group: int, gen: torch.Generator
                    ) -> tuple[list[int], list[int]]:
    """(item indices, key frames) of a batch of batch / group sources with `group` expressions each,
    other objects first (one per object in random order, then the rest; repeats only when the source
    has fewer expressions) and one key frame per source: only the text differs inside a group, a
    direct signal for the choice of the referred object."""
    check_group(batch, group)
    sources = items_by_source(pool)
    idx: list[int] = []
    keys: list[int] = []
    for s in torch.randint(0, len(sources), (batch // group,), generator=gen).tolist():
        members = [sources[s][j] for j in torch.randperm(len(sources[s]), generator=gen).tolist()]
        first: dict[int, int] = {}
        for i in members:
            first.setdefault(pool[i].track, i)
        firsts = set(first.values())
        order = list(first.values()) + [i for i in members if i not in firsts]
        picked = [order[j % len(order)] for j in range(group)]
        key = int(torch.randint(0, pool[picked[0]].frames.shape[0], (), generator=gen))
        idx += picked
        keys += [key] * group
    return idx, keys
