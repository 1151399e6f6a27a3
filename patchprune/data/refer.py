"""Referring segmentation formats: RefCOCO-style refs (images) and Ref-YouTube-VOS (videos).

RefCOCO-style:  refs file (the official `refs(unc).p` pickle, or the same list as JSON) + a COCO
instances file. Each ref = {ref_id, image_id, ann_id, category_id, split, sentences: [{sent, ...}]};
one ReferSample per sentence. Pickles are read with an unpickler that refuses every class, so only
plain data (dicts, lists, strings, numbers) can load: no code runs.

Ref-YouTube-VOS:
    ROOT/meta_expressions/<split>/meta_expressions.json
        {"videos": {vid: {"expressions": {"0": {"exp": ..., "obj_id": "1"}}, "frames": ["00000", ...]}}}
    ROOT/<split>/JPEGImages/<vid>/<frame>.jpg
    ROOT/<split>/Annotations/<vid>/<frame>.png   palette PNG, pixel value = obj_id (train only)
One ReferSample per expression; without annotations (valid / test) the target masks are empty.
"""
from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patchprune.data import rle as rle_utils
from patchprune.data.coco import CocoDataset
from patchprune.data.images import encode_jpeg, read_image, read_index_png, write_index_png
from patchprune.data.io import atomic_dir, read_json, write_json
from patchprune.data.types import ReferSample, VideoSample


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler that loads only builtin containers and scalars (no class lookups at all)."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is allowed")


def load_refs(path: str | Path) -> list[dict[str, Any]]:
    """RefCOCO refs from a JSON list or a pickle of plain data; validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"refs file not found: {path}")
    if path.suffix.lower() in (".p", ".pkl", ".pickle"):
        try:
            with open(path, "rb") as f:
                refs = _PlainDataUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as err:
            raise ValueError(f"corrupt or unsafe refs pickle {path}: {err}") from err
    else:
        refs = read_json(path, "refs file")
    if not isinstance(refs, list):
        raise ValueError(f"{path}: refs must be a list")
    for r in refs:
        if not isinstance(r, dict) or not all(k in r for k in ("ref_id", "image_id", "ann_id", "sentences")):
            raise ValueError(f"{path}: a ref lacks one of ref_id / image_id / ann_id / sentences")
    return refs


class RefCocoDataset(Sequence[ReferSample]):
    """One ReferSample (T = 1) per sentence of the refs of a split (all splits when split is None)."""

    def __init__(self, refs_path: str | Path, instances_path: str | Path, image_root: str | Path | None = None,
                 split: str | None = None):
        self.refs = load_refs(refs_path)
        self.coco = CocoDataset(instances_path, image_root, load_images=True)
        self.image_index = {int(im["id"]): i for i, im in enumerate(self.coco.images)}
        self.entries: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for r in self.refs:
            if split is not None and r.get("split") != split:
                continue
            if int(r["ann_id"]) not in self.coco.anns:
                raise ValueError(f"ref {r['ref_id']} points to annotation {r['ann_id']}, not in {instances_path}")
            if int(r["image_id"]) not in self.image_index:
                raise ValueError(f"ref {r['ref_id']} points to image {r['image_id']}, not in {instances_path}")
            for s in r["sentences"]:
                self.entries.append((r, s))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> ReferSample:  # type: ignore[override]
        ref, sent = self.entries[index]
        im = self.coco.images[self.image_index[int(ref["image_id"])]]
        H, W = int(im["height"]), int(im["width"])
        path = self.coco.image_root / im["file_name"]
        img = read_image(path)
        if img.shape[:2] != (H, W):
            raise ValueError(f"{path}: image is {img.shape[1]}x{img.shape[0]}, annotation says {W}x{H}")
        ann = self.coco.anns[int(ref["ann_id"])]
        mask = rle_utils.decode(ann["segmentation"], H, W)
        text = sent.get("sent") or sent.get("raw") or ""
        return ReferSample(ref_id=int(sent.get("sent_id", ref["ref_id"])), name=Path(im["file_name"]).stem,
                           frames=img[None], expression=str(text), masks=mask[None],
                           kind=str(sent.get("kind", "referring")), source_id=int(ref["image_id"]),
                           track_id=int(ref["ann_id"]), category_id=int(ann["category_id"]),
                           split=str(ref.get("split", "")))


class RefYTVOSDataset(Sequence[ReferSample]):
    """One ReferSample per expression of a Ref-YouTube-VOS split (frames listed in the meta file)."""

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        meta_path = self.root / "meta_expressions" / split / "meta_expressions.json"
        meta = read_json(meta_path, "Ref-YouTube-VOS meta_expressions file")
        if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
            raise ValueError(f"{meta_path}: expected an object with a 'videos' mapping")
        self.split = split
        self.image_dir = self.root / split / "JPEGImages"
        self.ann_dir = self.root / split / "Annotations"
        self.entries: list[tuple[str, str, dict[str, Any], list[str]]] = []
        for vid, v in sorted(meta["videos"].items()):
            frames = v.get("frames")
            if not isinstance(frames, list) or not frames:
                raise ValueError(f"{meta_path}: video {vid} has no frames")
            exps = v.get("expressions")
            if not isinstance(exps, dict):
                raise ValueError(f"{meta_path}: video {vid} has no expressions mapping")
            for eid, e in sorted(exps.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0):
                if not isinstance(e, dict) or "exp" not in e:
                    raise ValueError(f"{meta_path}: expression {vid}/{eid} lacks 'exp'")
                self.entries.append((vid, str(eid), e, [str(f) for f in frames]))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> ReferSample:  # type: ignore[override]
        vid, eid, e, names = self.entries[index]
        frames = np.stack([read_image(self.image_dir / vid / f"{n}.jpg") for n in names])
        T, H, W = frames.shape[:3]
        masks = np.zeros((T, H, W), dtype=bool)
        obj = e.get("obj_id")
        adir = self.ann_dir / vid
        if obj is not None and adir.is_dir():
            pngs = sorted(adir.glob("*.png"))
            if len(pngs) < T:
                missing = [n for n in names if not (adir / f"{n}.png").is_file()]
                if missing:
                    raise ValueError(f"{adir}: {len(names)} frames listed but annotations missing for "
                                     f"{missing[:3]} (mismatched frame counts)")
            for t, n in enumerate(names):
                lab = read_index_png(adir / f"{n}.png")
                if lab.shape != (H, W):
                    raise ValueError(f"{adir / (n + '.png')}: annotation is {lab.shape[1]}x{lab.shape[0]}, "
                                     f"frames are {W}x{H}")
                masks[t] = lab == int(obj)
        return ReferSample(ref_id=index, name=f"{vid}/{eid}", frames=frames, expression=str(e["exp"]), masks=masks,
                           kind=str(e.get("kind", "referring")), source_id=0,
                           track_id=int(obj) if obj is not None else None,
                           category_id=int(e["category_id"]) if "category_id" in e else None, split=self.split)


def write_ref_ytvos(videos: Sequence[VideoSample], expressions: Sequence[Sequence[Any]], root: str | Path,
                    split: str, overwrite: bool = False) -> Path:
    """Write videos + expressions in the Ref-YouTube-VOS layout; returns the meta_expressions path.

    expressions[i] lists objects with .text, .track_id and .kind for videos[i]; annotation PNGs hold
    the track ids (the tracks' visible masks are disjoint). Frames folder first (atomic), then JSON.
    """
    if len(videos) != len(expressions):
        raise ValueError("need one expression list per video")
    root = Path(root)
    meta_path = root / "meta_expressions" / split / "meta_expressions.json"
    if meta_path.exists() and not overwrite:
        raise ValueError(f"{meta_path} already exists (pass overwrite / --overwrite to replace it)")
    meta: dict[str, Any] = {"videos": {}}
    objects: dict[str, Any] = {"videos": {}}
    with atomic_dir(root / split, overwrite=overwrite) as tmp:
        for v, exps in zip(videos, expressions):
            names = [f"{t:05d}" for t in range(v.num_frames)]
            labels = np.zeros(v.frames.shape[:3], dtype=np.uint8)
            for tr in v.tracks:
                if tr.track_id > 255:
                    raise ValueError("Ref-YouTube-VOS annotation PNGs hold at most 255 objects")
                labels[tr.masks] = tr.track_id
            fdir, adir = tmp / "JPEGImages" / v.name, tmp / "Annotations" / v.name
            fdir.mkdir(parents=True)
            adir.mkdir(parents=True)
            for t, n in enumerate(names):
                (fdir / f"{n}.jpg").write_bytes(encode_jpeg(v.frames[t]))
                write_index_png(adir / f"{n}.png", labels[t])
            cats = {tr.track_id: tr.category_id for tr in v.tracks}
            meta["videos"][v.name] = {
                "expressions": {str(i): {"exp": e.text, "obj_id": str(e.track_id), "kind": e.kind,
                                         "category_id": int(cats[e.track_id])}
                                for i, e in enumerate(exps)},
                "frames": names,
            }
            objects["videos"][v.name] = {"objects": {
                str(tr.track_id): {"category": v.categories.get(tr.category_id, str(tr.category_id)),
                                   "frames": [names[t] for t in np.flatnonzero(tr.present)]}
                for tr in v.tracks}}
        write_json(tmp / "meta.json", objects)
    return write_json(meta_path, meta)


def refcoco_refs(samples: Sequence[VideoSample], expressions: Sequence[Sequence[Any]],
                 splits: Sequence[str]) -> list[dict[str, Any]]:
    """RefCOCO-style refs for one-frame samples whose tracks carry `attributes["ann_id"]` (see write_coco)."""
    refs: list[dict[str, Any]] = []
    sent_id = 0
    for s, exps, split in zip(samples, expressions, splits):
        by_track = {tr.track_id: tr for tr in s.tracks}
        grouped: dict[int, list[Any]] = {}
        for e in exps:
            grouped.setdefault(e.track_id, []).append(e)
        for tid, es in grouped.items():
            tr = by_track[tid]
            if "ann_id" not in tr.attributes:
                raise ValueError(f"track {tid} of {s.name} has no COCO annotation id")
            sents = []
            for e in es:
                sent_id += 1
                sents.append({"sent_id": sent_id, "sent": e.text, "raw": e.text, "tokens": e.text.split(),
                              "kind": e.kind})
            refs.append({"ref_id": len(refs) + 1, "image_id": s.video_id, "ann_id": int(tr.attributes["ann_id"]),
                         "category_id": int(tr.category_id), "split": split,
                         "file_name": s.file_names[0] if s.file_names else f"{s.name}.jpg",
                         "sent_ids": [x["sent_id"] for x in sents], "sentences": sents})
    return refs
