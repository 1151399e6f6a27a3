"""Mask <-> RLE conversions on top of the regular pycocotools mask utilities.

Accepts every segmentation form found in COCO / YouTube-VIS files: compressed RLE (counts as a
string), uncompressed RLE (counts as a list of ints) and polygons (a list of flat coordinate lists).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of a bool [H, W] mask, JSON-ready (counts as str)."""
    if mask.ndim != 2:
        raise ValueError(f"encode expects a 2-D mask, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def encode_many(masks: np.ndarray) -> list[dict[str, Any]]:
    """Compressed RLEs of bool [T, H, W] masks (one call into pycocotools)."""
    if masks.ndim != 3:
        raise ValueError(f"encode_many expects [T, H, W] masks, got shape {masks.shape}")
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


def to_rle(segm: Any, height: int, width: int) -> dict[str, Any]:
    """pycocotools RLE (counts as bytes) of any segmentation form; validates the size."""
    if isinstance(segm, dict) and "counts" in segm:
        size = segm.get("size")
        if size is None or len(size) != 2:
            raise ValueError("RLE segmentation without a valid 'size'")
        if (int(size[0]), int(size[1])) != (height, width):
            raise ValueError(f"RLE size {list(size)} does not match the image size {[height, width]}")
        counts = segm["counts"]
        if isinstance(counts, list):
            if sum(counts) != height * width:
                raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, expected {height * width}")
            return mask_utils.frPyObjects(segm, height, width)
        if isinstance(counts, str):
            return {"size": [height, width], "counts": counts.encode("ascii")}
        if isinstance(counts, bytes):
            return {"size": [height, width], "counts": counts}
        raise ValueError(f"unsupported RLE counts of type {type(counts).__name__}")
    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    raise ValueError(f"unsupported segmentation of type {type(segm).__name__}")


def decode(segm: Any, height: int, width: int) -> np.ndarray:
    """bool [H, W] mask of any segmentation form (None -> all False)."""
    if segm is None:
        return np.zeros((height, width), dtype=bool)
    rle = to_rle(segm, height, width)
    with warnings.catch_warnings():  # pycocotools' decoder trips a numpy-2 copy-keyword deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode([rle])[:, :, 0].astype(bool)


def bbox(mask: np.ndarray) -> list[float] | None:
    """[x, y, w, h] box of a bool mask (COCO convention), None when empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return None
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]
