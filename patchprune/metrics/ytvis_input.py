"""Input validation of `ytvis_eval`: the ground truth and the results are checked whole before
anything is scored, so a malformed file gives one ValueError naming the entry and the field
(never a KeyError, never a silently scored garbage mask or unknown category).

Checked: the layout ({videos, categories, annotations?} and a results list), every video's id,
height, width and length (file_names or length), every category id, and for each annotation /
result its video_id (known), category_id (a ground-truth category), segmentations (one per frame,
each null, a polygon list or an RLE of the video's size whose runs cover the frame exactly) and, for
results, a finite score.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

from patchprune.data.rle import check_segmentations

RESULT_KEYS = ("video_id", "category_id", "segmentations", "score")


def _int(value: Any, what: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float)
                                                                          and not value.is_integer()):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if minimum is not None and int(value) < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return int(value)


def _need(entry: Any, keys: tuple[str, ...], what: str) -> dict:
    if not isinstance(entry, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(entry).__name__}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(repr(k) for k in missing)}")
    return entry


def video_sizes(gt: dict) -> dict[int, tuple[int, int, int]]:
    """{video id: (height, width, frames)} of a ground truth, validating every video entry."""
    sizes: dict[int, tuple[int, int, int]] = {}
    for i, v in enumerate(gt["videos"]):
        what = f"ground-truth video {i}"
        _need(v, ("id", "height", "width"), what)
        vid = _int(v["id"], f"{what} 'id'")
        what = f"ground-truth video {vid}"
        if vid in sizes:
            raise ValueError(f"{what} appears twice in 'videos'")
        if "file_names" in v:
            if not isinstance(v["file_names"], list):
                raise ValueError(f"{what} 'file_names' must be a list")
            frames = len(v["file_names"])
        elif "length" in v:
            frames = _int(v["length"], f"{what} 'length'", 0)
        else:
            raise ValueError(f"{what} has neither 'file_names' nor 'length'")
        sizes[vid] = (_int(v["height"], f"{what} 'height'", 1), _int(v["width"], f"{what} 'width'", 1), frames)
    return sizes


def check_ytvis_inputs(gt: Any, results: Any) -> None:
    """Raise ValueError on the first malformed entry of a YouTube-VIS ground truth / results pair."""
    if not isinstance(gt, dict) or not isinstance(gt.get("videos"), list) or not isinstance(gt.get("categories"), list):
        raise ValueError("ground truth must be a YouTube-VIS dict with 'videos' and 'categories' lists")
    if gt.get("annotations") is not None and not isinstance(gt["annotations"], list):
        raise ValueError("ground truth 'annotations' must be a list")
    if not isinstance(results, list):
        raise ValueError("results must be a JSON list of {video_id, category_id, segmentations, score}")
    sizes = video_sizes(gt)
    categories = {_int(_need(c, ("id",), f"ground-truth category {i}")["id"], f"ground-truth category {i} 'id'")
                  for i, c in enumerate(gt["categories"])}

    def entries() -> Iterator[tuple[Any, int, int, str]]:
        for kind, items in (("ground-truth annotation", gt.get("annotations") or []), ("result", results)):
            for i, a in enumerate(items):
                what = f"{kind} {a.get('id', i) if isinstance(a, dict) and kind != 'result' else i}"
                _need(a, RESULT_KEYS if kind == "result" else RESULT_KEYS[:3], what)
                vid = _int(a["video_id"], f"{what} 'video_id'")
                if vid not in sizes:
                    raise ValueError(f"{what} refers to video {vid}, which is not in the ground truth")
                cat = _int(a["category_id"], f"{what} 'category_id'")
                if cat not in categories:
                    raise ValueError(f"{what} has category_id {cat}, which is not a ground-truth category "
                                     f"(known: {sorted(categories)})")
                if kind == "result":
                    score = a["score"]
                    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                        raise ValueError(f"{what} 'score' must be a finite number, got {score!r}")
                H, W, T = sizes[vid]
                segs = a["segmentations"]
                if not isinstance(segs, list) or len(segs) != T:
                    got = f"{len(segs)} segmentations" if isinstance(segs, list) else type(segs).__name__
                    raise ValueError(f"{what}: {got} for a video of {T} frames (video {vid}); give one "
                                     "segmentation (RLE, polygons or null) per frame")
                for t, s in enumerate(segs):
                    yield s, H, W, f"{what}, frame {t}"

    check_segmentations(entries())


__all__ = ["check_ytvis_inputs", "video_sizes"]
