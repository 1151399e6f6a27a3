"""Mask <-> RLE conversions on top of the regular pycocotools mask utilities.

Accepts every segmentation form found in COCO / YouTube-VIS files: compressed RLE (counts as a
string), uncompressed RLE (counts as a list of ints) and polygons (a list of flat coordinate lists).
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable

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


def compressed_run_sums(strings: list[bytes]) -> np.ndarray:
    """int64 [S]: pixels covered by the runs of each COCO compressed RLE string, or -1 for a string
    that is not one (characters outside '0'..'o', a run cut off, a negative run).

    Format (pycocotools' rleToString): each run is a little-endian sequence of 6-bit characters
    offset by 48, 5 data bits each, bit 0x20 = "more follows", the last character's bit 0x10 the
    sign; from the fourth run on, a run is stored as the difference to the run two places earlier.
    All strings are decoded together in a few NumPy passes (checking a results file this way costs
    little next to scoring it)."""
    S = len(strings)
    out = np.full(S, -1, dtype=np.int64)
    if S == 0:
        return out
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=S)
    last = np.cumsum(lengths) - 1  # last character of each string
    u = np.frombuffer(b"".join(strings), dtype=np.uint8)
    bad = np.zeros(S, dtype=bool)
    outside = np.flatnonzero((u < 48) | (u > 111))
    bad[np.searchsorted(last, outside)] = True
    nonempty = lengths > 0
    bad[nonempty] |= ((u[last[nonempty]] - 48) & 0x20) != 0  # a run cut off at the end
    c = u - np.uint8(48)  # 6-bit characters (bad ones wrap; their strings are flagged above)
    is_end = (c & 0x20) == 0
    is_end[last[nonempty]] = True  # no run crosses into the next string (a cut-off one is bad above)
    ends = np.flatnonzero(is_end)
    sums = np.zeros(S, dtype=np.int64)
    if ends.size:
        runs = np.diff(np.concatenate([[0], np.cumsum(is_end)[last]]))  # runs per string
        runs[~nonempty] = 0
        gsid = np.repeat(np.arange(S), runs)  # string of each run
        first = np.cumsum(runs) - runs  # index of each string's first run
        starts = np.concatenate([[0], ends[:-1] + 1])
        size = ends - starts + 1
        bad[gsid[size > 12]] = True  # more than 60 bits: not a pixel count
        raw = (c[starts] & 0x1F).astype(np.int64)
        for j in range(1, min(int(size.max()), 12)):  # runs are mostly 1-2 characters long
            idx = np.flatnonzero(size > j)
            raw[idx] |= (c[starts[idx] + j] & 0x1F).astype(np.int64) << (5 * j)
        sign = np.where((c[ends] & 0x10) != 0, np.int64(1) << (5 * np.minimum(size, 12)), 0)
        raw -= sign
        r = np.arange(gsid.size) - first[gsid]  # run index inside its string
        # run r >= 3 is stored minus the decoded run r - 2: decoded = running sum over the runs of
        # the same parity from run 1 (odd) or 2 (even) on, within the string; run 0 stands alone
        odd = (r & 1).astype(bool)
        decoded = raw
        for sel in (odd, ~odd & (r > 0)):
            csum = np.cumsum(np.where(sel, raw, 0))
            before = np.where(first > 0, csum[np.maximum(first - 1, 0)], 0)  # running sum before each string
            decoded = np.where(sel, csum - before[gsid], decoded)
        bad[gsid[decoded < 0]] = True
        sums = np.bincount(gsid, weights=decoded.astype(np.float64), minlength=S).astype(np.int64)
    out[~bad] = sums[~bad]
    return out


def check_segmentations(items: Iterable[tuple[Any, int, int, str]], chunk: int = 50_000) -> None:
    """Validate (segmentation, height, width, label) items before anything is scored: each is None,
    a polygon list (lists of numbers), or an RLE dict of size [height, width] whose runs cover the
    mask exactly (uncompressed counts, or a compressed string decoded in batches of `chunk`).
    Raises ValueError naming the item's label (e.g. "result 3, frame 7") and what is wrong."""
    pending: list[tuple[bytes, int, str]] = []

    def flush() -> None:
        if not pending:
            return
        sums = compressed_run_sums([p[0] for p in pending])
        wrong = np.flatnonzero(sums != np.array([p[1] for p in pending], dtype=np.int64))
        if wrong.size:
            counts, pixels, label = pending[int(wrong[0])]
            shown = counts[:24].decode("ascii", errors="replace") + ("..." if len(counts) > 24 else "")
            got = "malformed" if sums[wrong[0]] < 0 else f"its runs cover {int(sums[wrong[0]])} pixels"
            raise ValueError(f"{label}: corrupt compressed RLE {shown!r} ({got}; the mask has {pixels})")
        pending.clear()

    for seg, height, width, label in items:
        if seg is None:
            continue
        if isinstance(seg, list):
            if not all(isinstance(p, list) and all(isinstance(v, (int, float)) for v in p) for p in seg):
                raise ValueError(f"{label}: a polygon segmentation must be lists of numbers")
            continue
        if not isinstance(seg, dict) or "counts" not in seg:
            raise ValueError(f"{label}: a segmentation must be an RLE {{size, counts}}, a polygon list or null, "
                             f"got {type(seg).__name__}")
        size = seg.get("size")
        if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
            raise ValueError(f"{label}: RLE size {size!r} does not match the video size {[height, width]}")
        counts = seg["counts"]
        if isinstance(counts, str):
            counts = counts.encode("utf-8", errors="replace")
        if isinstance(counts, bytes):
            pending.append((counts, height * width, label))
            if len(pending) >= chunk:
                flush()
        elif isinstance(counts, list):
            if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != height * width:
                raise ValueError(f"{label}: uncompressed RLE counts must be non-negative ints summing to "
                                 f"{height * width}")
        else:
            raise ValueError(f"{label}: RLE counts must be a string or a list of ints, got {type(counts).__name__}")
    flush()


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
