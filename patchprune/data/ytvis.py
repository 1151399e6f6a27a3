"""YouTube-VIS (2019 / 2021) layout: write synthetic splits, read real or synthetic ones.

Layout (the detectron2 / Mask2Former-VIS convention):
    ROOT/<split>.json                      annotations: videos, categories, annotations
    ROOT/<split>/JPEGImages/<video>/<frame>.jpg
Each annotation is one instance track: per-frame `segmentations` (RLE or null), `bboxes`
([x, y, w, h] or null) and `areas` (number or null). The 2021 layout with
`ROOT/<split>/instances.json` next to `JPEGImages/` is found too.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patchprune.data import rle as rle_utils
from patchprune.data.images import encode_jpeg, read_image
from patchprune.data.io import atomic_dir, read_json, write_json
from patchprune.data.types import InstanceTrack, VideoSample


def track_annotation(track: InstanceTrack, video_id: int, ann_id: int) -> dict[str, Any]:
    """One YTVIS annotation (instance track) from an InstanceTrack; absent frames are null."""
    T, H, W = track.masks.shape
    present = track.present
    rles = rle_utils.encode_many(track.masks)
    segs, boxes, areas = [], [], []
    for t in range(T):
        if present[t]:
            segs.append(rles[t])
            boxes.append(rle_utils.bbox(track.masks[t]))
            areas.append(float(track.masks[t].sum()))
        else:
            segs.append(None)
            boxes.append(None)
            areas.append(None)
    return {"id": ann_id, "video_id": video_id, "category_id": int(track.category_id), "iscrowd": 0,
            "segmentations": segs, "bboxes": boxes, "areas": areas, "height": H, "width": W, "length": T}


def frame_file_names(sample: VideoSample) -> list[str]:
    """Relative frame paths `<video>/<frame>.jpg` (the sample's own names when it has them)."""
    if sample.file_names:
        return list(sample.file_names)
    return [f"{sample.name}/{t:05d}.jpg" for t in range(sample.num_frames)]


def write_ytvis_split(
    videos: Iterable[VideoSample],
    root: str | Path,
    split: str,
    *,
    info: dict[str, Any] | None = None,
    overwrite: bool = False,
    quality: int = 90,
    categories: dict[int, str] | None = None,
    on_video: Callable[[VideoSample], None] | None = None,
) -> Path:
    """Write `ROOT/<split>/JPEGImages/...` and `ROOT/<split>.json`; returns the JSON path.

    The frame folder is built in a temporary directory and renamed into place when complete, and
    the JSON is written atomically afterwards, so an interrupted run leaves no partial split.
    Video ids are taken from the samples and must be unique.
    """
    root = Path(root)
    json_path = root / f"{split}.json"
    if json_path.exists() and not overwrite:
        raise ValueError(f"{json_path} already exists (pass overwrite / --overwrite to replace it)")
    vids: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    cats: dict[int, str] = dict(categories or {})
    with atomic_dir(root / split, overwrite=overwrite) as tmp:
        for sample in videos:
            if any(v["id"] == sample.video_id for v in vids):
                raise ValueError(f"duplicate video id {sample.video_id}")
            names = frame_file_names(sample)
            for t, name in enumerate(names):
                out = tmp / "JPEGImages" / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(encode_jpeg(sample.frames[t], quality))
            entry = {"id": sample.video_id, "name": sample.name, "width": sample.width,
                     "height": sample.height, "length": sample.num_frames, "file_names": names}
            if sample.seed is not None:
                entry["seed"] = sample.seed
            if sample.cuts:
                entry["cuts"] = list(sample.cuts)
            vids.append(entry)
            for tr in sample.tracks:
                anns.append(track_annotation(tr, sample.video_id, len(anns) + 1))
            if not categories:
                cats.update(sample.categories)
            if on_video is not None:
                on_video(sample)
    data = {
        "info": info or {"description": "patchprune data set"},
        "licenses": [],
        "videos": vids,
        "categories": [{"id": int(k), "name": v, "supercategory": "object"} for k, v in sorted(cats.items())],
        "annotations": anns,
    }
    return write_json(json_path, data)


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


class YTVISDataset(Sequence[VideoSample]):
    """Lazy reader of a YouTube-VIS annotation file: indexing loads one video's frames and masks.

    Splits without annotations (official valid / test) give samples with no tracks.
    """

    def __init__(self, ann_path: str | Path, image_root: str | Path | None = None, load_frames: bool = True):
        self.ann_path = Path(ann_path)
        data = read_json(self.ann_path, "YouTube-VIS annotation file")
        _require(isinstance(data, dict), f"{self.ann_path}: expected a JSON object at the top level")
        for key in ("videos", "categories"):
            _require(isinstance(data.get(key), list), f"{self.ann_path}: missing or invalid '{key}' list")
        self.categories: dict[int, str] = {}
        for c in data["categories"]:
            _require(isinstance(c, dict) and "id" in c and "name" in c,
                     f"{self.ann_path}: a category lacks 'id' or 'name'")
            self.categories[int(c["id"])] = str(c["name"])
        self.videos: list[dict[str, Any]] = []
        by_id: dict[int, dict[str, Any]] = {}
        for v in data["videos"]:
            _require(isinstance(v, dict) and all(k in v for k in ("id", "width", "height", "file_names")),
                     f"{self.ann_path}: a video lacks one of id / width / height / file_names")
            n = len(v["file_names"])
            _require(n > 0, f"{self.ann_path}: video {v['id']} has no frames")
            if "length" in v:
                _require(int(v["length"]) == n, f"{self.ann_path}: video {v['id']} has length {v['length']} "
                                                f"but {n} file_names (mismatched frame counts)")
            _require(int(v["id"]) not in by_id, f"{self.ann_path}: duplicate video id {v['id']}")
            by_id[int(v["id"])] = v
            self.videos.append(v)
        self.annotations: dict[int, list[dict[str, Any]]] = {vid: [] for vid in by_id}
        for a in data.get("annotations") or []:
            _require(isinstance(a, dict) and "video_id" in a and "segmentations" in a,
                     f"{self.ann_path}: an annotation lacks 'video_id' or 'segmentations'")
            vid = int(a["video_id"])
            _require(vid in by_id, f"{self.ann_path}: annotation {a.get('id')} refers to unknown video {vid}")
            n = len(by_id[vid]["file_names"])
            _require(len(a["segmentations"]) == n,
                     f"{self.ann_path}: annotation {a.get('id')} has {len(a['segmentations'])} segmentations "
                     f"for a video of {n} frames (mismatched frame counts)")
            _require(int(a.get("category_id", -1)) in self.categories,
                     f"{self.ann_path}: annotation {a.get('id')} has unknown category {a.get('category_id')}")
            self.annotations[vid].append(a)
        self.image_root = Path(image_root) if image_root is not None else self._find_image_root()
        self.load_frames = load_frames

    def _find_image_root(self) -> Path:
        candidates = [self.ann_path.parent / self.ann_path.stem / "JPEGImages", self.ann_path.parent / "JPEGImages"]
        for c in candidates:
            if c.is_dir():
                return c
        return candidates[0]

    def __len__(self) -> int:
        return len(self.videos)

    def frame_paths(self, index: int) -> list[Path]:
        return [self.image_root / fn for fn in self.videos[index]["file_names"]]

    def __getitem__(self, index: int) -> VideoSample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        v = self.videos[index]
        H, W, T = int(v["height"]), int(v["width"]), len(v["file_names"])
        if self.load_frames:
            frames = np.empty((T, H, W, 3), dtype=np.uint8)
            for t, p in enumerate(self.frame_paths(index)):
                img = read_image(p)
                if img.shape[:2] != (H, W):
                    raise ValueError(f"{p}: frame is {img.shape[1]}x{img.shape[0]}, annotation says {W}x{H}")
                frames[t] = img
        else:
            frames = np.zeros((T, 0, 0, 3), dtype=np.uint8)
        tracks = []
        for a in self.annotations[int(v["id"])]:
            masks = np.stack([rle_utils.decode(s, H, W) for s in a["segmentations"]])
            tracks.append(InstanceTrack(track_id=int(a.get("id", len(tracks) + 1)),
                                        category_id=int(a["category_id"]), masks=masks,
                                        attributes={"iscrowd": int(a.get("iscrowd", 0))}))
        return VideoSample(video_id=int(v["id"]), name=str(v.get("name") or Path(v["file_names"][0]).parent.name),
                           frames=frames, tracks=tracks, categories=dict(self.categories),
                           cuts=list(v.get("cuts", [])), file_names=list(v["file_names"]), seed=v.get("seed"))


def read_ytvis(ann_path: str | Path, image_root: str | Path | None = None, load_frames: bool = True) -> YTVISDataset:
    """Open a YouTube-VIS 2019 / 2021 annotation file (validated now, frames loaded per video)."""
    return YTVISDataset(ann_path, image_root=image_root, load_frames=load_frames)


def gt_as_predictions(ann_path: str | Path, score: float = 1.0) -> list[dict[str, Any]]:
    """Every annotated track as a result entry (official results format) with the given score."""
    ds = read_ytvis(ann_path, load_frames=False)
    out = []
    for v in ds.videos:
        H, W = int(v["height"]), int(v["width"])
        for a in ds.annotations[int(v["id"])]:
            segs = []
            for s in a["segmentations"]:
                if s is None:
                    segs.append(None)
                else:
                    r = rle_utils.to_rle(s, H, W)
                    segs.append({"size": [H, W], "counts": r["counts"].decode("ascii")})
            out.append({"video_id": int(v["id"]), "category_id": int(a["category_id"]),
                        "segmentations": segs, "score": float(score)})
    return out
