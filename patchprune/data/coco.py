"""COCO instance JSON: read images with their instances as one-frame VideoSamples; write the layout.

Image folder found automatically for `ROOT/annotations/instances_<split>.json` (images in
`ROOT/<split>/`) and for `ROOT/<name>.json` (images in `ROOT/<name>/` or `ROOT/images/`); any other
layout takes image_root explicitly.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patchprune.data import rle as rle_utils
from patchprune.data.images import encode_jpeg, read_image
from patchprune.data.io import atomic_dir, read_json, write_json
from patchprune.data.types import InstanceTrack, VideoSample


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


class CocoDataset(Sequence[VideoSample]):
    """Lazy reader of a COCO instances file; each image is a VideoSample with T = 1.

    Each annotation becomes an InstanceTrack (masks [1, H, W]); annotations without a segmentation
    use their filled box. attributes keep iscrowd, bbox and the annotation id.
    """

    def __init__(self, ann_path: str | Path, image_root: str | Path | None = None, load_images: bool = True):
        self.ann_path = Path(ann_path)
        data = read_json(self.ann_path, "COCO annotation file")
        _require(isinstance(data, dict) and isinstance(data.get("images"), list),
                 f"{self.ann_path}: not a COCO instances file (no 'images' list)")
        self.categories = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
        self.images = data["images"]
        self.by_image: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in self.images}
        for a in data.get("annotations", []):
            iid = int(a.get("image_id", -1))
            _require(iid in self.by_image, f"{self.ann_path}: annotation {a.get('id')} refers to unknown image {iid}")
            _require(int(a.get("category_id", -1)) in self.categories,
                     f"{self.ann_path}: annotation {a.get('id')} has unknown category {a.get('category_id')}")
            self.by_image[iid].append(a)
        self.anns = {int(a["id"]): a for anns in self.by_image.values() for a in anns if "id" in a}
        self.image_root = Path(image_root) if image_root is not None else self._find_image_root()
        self.load_images = load_images

    def _find_image_root(self) -> Path:
        stem = self.ann_path.stem
        cands = []
        if stem.startswith("instances_"):
            cands.append(self.ann_path.parent.parent / stem[len("instances_"):])
        cands += [self.ann_path.parent / stem, self.ann_path.parent / "images", self.ann_path.parent]
        for c in cands:
            if c.is_dir() and any((c / im["file_name"]).is_file() for im in self.images[:1]):
                return c
        return cands[0]

    def __len__(self) -> int:
        return len(self.images)

    def image_index(self, image_id: int) -> int:
        for i, im in enumerate(self.images):
            if int(im["id"]) == image_id:
                return i
        raise KeyError(f"image {image_id} not in {self.ann_path}")

    def __getitem__(self, index: int) -> VideoSample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        im = self.images[index]
        H, W = int(im["height"]), int(im["width"])
        if self.load_images:
            path = self.image_root / im["file_name"]
            img = read_image(path)
            if img.shape[:2] != (H, W):
                raise ValueError(f"{path}: image is {img.shape[1]}x{img.shape[0]}, annotation says {W}x{H}")
            frames = img[None]
        else:
            frames = np.zeros((1, 0, 0, 3), dtype=np.uint8)
        tracks = []
        for a in self.by_image[int(im["id"])]:
            if a.get("segmentation"):
                mask = rle_utils.decode(a["segmentation"], H, W)
            else:
                mask = np.zeros((H, W), dtype=bool)
                x, y, w, h = (int(round(v)) for v in a["bbox"])
                mask[max(y, 0):y + h, max(x, 0):x + w] = True
            tracks.append(InstanceTrack(track_id=int(a.get("id", len(tracks) + 1)), category_id=int(a["category_id"]),
                                        masks=mask[None],
                                        attributes={"iscrowd": int(a.get("iscrowd", 0)), "bbox": a.get("bbox")}))
        return VideoSample(video_id=int(im["id"]), name=Path(im["file_name"]).stem, frames=frames, tracks=tracks,
                           categories=dict(self.categories), file_names=[im["file_name"]])


def read_coco(ann_path: str | Path, image_root: str | Path | None = None, load_images: bool = True) -> CocoDataset:
    """Open a COCO instances file (validated now, images loaded per item)."""
    return CocoDataset(ann_path, image_root, load_images)


def coco_dict(samples: Iterable[VideoSample], categories: dict[int, str]) -> tuple[dict[str, Any], list[VideoSample]]:
    """COCO instances dict of one-frame samples (file names `<name>.jpg`); annotation ids 1..n."""
    images, anns, kept = [], [], []
    for s in samples:
        if s.num_frames != 1:
            raise ValueError(f"COCO samples must have one frame, {s.name} has {s.num_frames}")
        fn = s.file_names[0] if s.file_names else f"{s.name}.jpg"
        images.append({"id": s.video_id, "file_name": fn, "height": s.height, "width": s.width})
        for tr in s.tracks:
            m = tr.masks[0]
            if not m.any():
                continue
            anns.append({"id": len(anns) + 1, "image_id": s.video_id, "category_id": int(tr.category_id),
                         "segmentation": rle_utils.encode(m), "area": float(m.sum()), "bbox": rle_utils.bbox(m),
                         "iscrowd": 0})
            tr.attributes["ann_id"] = len(anns)
        kept.append(s)
    cats = [{"id": k, "name": v, "supercategory": "object"} for k, v in sorted(categories.items())]
    return {"info": {"description": "patchprune data set"}, "images": images, "annotations": anns,
            "categories": cats}, kept


def write_coco(samples: Sequence[VideoSample], root: str | Path, name: str, categories: dict[int, str],
               overwrite: bool = False, quality: int = 90, image_dir: str | None = None) -> Path:
    """Write ROOT/<name>.json and the images in ROOT/<image_dir or name>/ (atomically); returns the JSON path.

    Sets `attributes["ann_id"]` on every written track (used by the referring writer).
    """
    root = Path(root)
    json_path = root / f"{name}.json"
    if json_path.exists() and not overwrite:
        raise ValueError(f"{json_path} already exists (pass overwrite / --overwrite to replace it)")
    data, kept = coco_dict(samples, categories)
    with atomic_dir(root / (image_dir or name), overwrite=overwrite) as tmp:
        for s, im in zip(kept, data["images"]):
            out = tmp / im["file_name"]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(encode_jpeg(s.frames[0], quality))
    return write_json(json_path, data)
