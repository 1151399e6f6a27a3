"""Reading and writing frame images (JPEG / PNG) with clear errors and atomic writes."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from patchprune.data.io import write_bytes


def _read_with(path: str | Path, what: str, decode: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """decode(opened image) for an image file; FileNotFoundError / ValueError for missing / corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with Image.open(path) as im:
            return decode(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"corrupt {what} {path}: {err}") from err


def read_image(path: str | Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB of an image file; FileNotFoundError / ValueError for missing / corrupt files."""
    return _read_with(path, "image", lambda im: np.asarray(im.convert("RGB")))


def read_index_png(path: str | Path) -> np.ndarray:
    """uint8/uint16 [H, W] object-index map of a palette (DAVIS / Ref-YouTube-VOS style) PNG."""
    return _read_with(path, "annotation image", _index_map)


def _index_map(im: Image.Image) -> np.ndarray:
    if im.mode in ("P", "L", "I", "I;16"):
        return np.asarray(im)
    if im.mode in ("RGB", "RGBA"):
        # An RGB annotation: each distinct colour is one object, black is background.
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        uniq, inv = np.unique(code, return_inverse=True)
        inv = inv.reshape(code.shape)
        if uniq[0] != 0:
            inv = inv + 1
        return inv.astype(np.uint16)
    return np.asarray(im.convert("L"))


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a uint8 [H, W, 3] frame."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_jpeg(path: str | Path, frame: np.ndarray, quality: int = 90) -> Path:
    """Write a frame as JPEG atomically."""
    return write_bytes(path, encode_jpeg(frame, quality))


_DAVIS_PALETTE = None


def davis_palette() -> list[int]:
    """The usual VOC/DAVIS colour palette (768 ints) for index PNGs."""
    global _DAVIS_PALETTE
    if _DAVIS_PALETTE is None:
        pal = []
        for i in range(256):
            r = g = b = 0
            c = i
            for j in range(8):
                r |= ((c >> 0) & 1) << (7 - j)
                g |= ((c >> 1) & 1) << (7 - j)
                b |= ((c >> 2) & 1) << (7 - j)
                c >>= 3
            pal += [r, g, b]
        _DAVIS_PALETTE = pal
    return _DAVIS_PALETTE


def write_index_png(path: str | Path, index: np.ndarray) -> Path:
    """Write an object-index map [H, W] (values < 256) as a palette PNG, atomically."""
    if index.max(initial=0) > 255:
        raise ValueError("index PNGs hold at most 255 objects")
    idx = np.ascontiguousarray(index, dtype=np.uint8)
    im = Image.frombytes("P", (idx.shape[1], idx.shape[0]), idx.tobytes())
    im.putpalette(davis_palette())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return write_bytes(path, buf.getvalue())
