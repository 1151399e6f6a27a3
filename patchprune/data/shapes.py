"""Vectorised shape and texture rasterisation for the synthetic scenes.

Shapes are inside-tests on object-local coordinates (u, v) in units of the object radius, so a
shape rotates and scales with its object; textures are binary patterns on the same coordinates
measured in pixels, so stripes and dots stay attached to the object as it moves.
"""
from __future__ import annotations

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "hexagon", "star", "ring", "cross", "bar", "ellipse")
TEXTURES: tuple[str, ...] = ("striped", "dotted", "checkered", "wavy", "solid", "noisy")

_TRI_NORMALS = np.array([[np.cos(a), np.sin(a)] for a in np.deg2rad([270.0, 30.0, 150.0])], dtype=np.float32)
_HEX_NORMALS = np.array([[np.cos(a), np.sin(a)] for a in np.deg2rad([0.0, 60.0, 120.0])], dtype=np.float32)
_NOISE = np.random.default_rng(12345).random((64, 64)).astype(np.float32) > 0.5


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """bool mask of the points (u, v) inside `shape` (radius 1, centred at the origin)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "triangle":
        # Equilateral, circumradius 1: inradius 0.5 along each outward edge normal.
        d = np.maximum(np.maximum(u * _TRI_NORMALS[0, 0] + v * _TRI_NORMALS[0, 1],
                                  u * _TRI_NORMALS[1, 0] + v * _TRI_NORMALS[1, 1]),
                       u * _TRI_NORMALS[2, 0] + v * _TRI_NORMALS[2, 1])
        return d <= 0.55
    if shape == "hexagon":
        d = np.maximum(np.maximum(np.abs(u * _HEX_NORMALS[0, 0] + v * _HEX_NORMALS[0, 1]),
                                  np.abs(u * _HEX_NORMALS[1, 0] + v * _HEX_NORMALS[1, 1])),
                       np.abs(u * _HEX_NORMALS[2, 0] + v * _HEX_NORMALS[2, 1]))
        return d <= 0.87
    if shape == "star":
        r = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u) * (5.0 / (2.0 * np.pi)) + 0.25
        tri = np.abs(phi - np.floor(phi) - 0.5) * 2.0  # 1 at the tips, 0 between them
        return r <= 0.42 + 0.63 * tri
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.36)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == "bar":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.28)
    if shape == "ellipse":
        return u * u + (v / 0.55) ** 2 <= 1.0
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def texture_pattern(texture: str, a: np.ndarray, b: np.ndarray, period: float) -> np.ndarray:
    """bool pattern of `texture` at pixel-unit local coordinates (a, b) with the given period."""
    pa, pb = a / period, b / period
    if texture == "striped":
        return (pa - np.floor(pa)) < 0.5
    if texture == "dotted":
        fa, fb = pa - np.floor(pa) - 0.5, pb - np.floor(pb) - 0.5
        return fa * fa + fb * fb < 0.09
    if texture == "checkered":
        return ((np.floor(pa) + np.floor(pb)) % 2) == 0
    if texture == "wavy":
        w = pa + 0.35 * np.sin(pb * 2.0 * np.pi * 0.5)
        return (w - np.floor(w)) < 0.5
    if texture == "solid":
        return np.ones(np.broadcast(a, b).shape, dtype=bool)
    if texture == "noisy":
        ia = np.floor(a / 2.0).astype(np.int64) % 64
        ib = np.floor(b / 2.0).astype(np.int64) % 64
        return _NOISE[ia, ib]
    raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")


def rasterise(
    shape: str,
    texture: str,
    colour: np.ndarray,
    colour2: np.ndarray,
    period: float,
    centre: tuple[float, float],
    radius: float,
    theta: float,
    canvas_hw: tuple[int, int],
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Draw one object: returns (bbox slices, bool mask [h, w], float32 colours [h, w, 3]) or None.

    centre is (x, y) in pixels on the canvas; theta the rotation in radians. Only the bounding box
    of the object is evaluated, so the cost is proportional to the object's size.
    """
    H, W = canvas_hw
    cx, cy = centre
    ext = radius * 1.1
    x0, x1 = max(int(np.floor(cx - ext)), 0), min(int(np.ceil(cx + ext)) + 1, W)
    y0, y1 = max(int(np.floor(cy - ext)), 0), min(int(np.ceil(cy + ext)) + 1, H)
    if x0 >= x1 or y0 >= y1 or radius <= 0:
        return None
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    a = c * xs + s * ys  # rotated pixel-unit coordinates
    b = -s * xs + c * ys
    inv = np.float32(1.0 / radius)
    mask = shape_mask(shape, a * inv, b * inv)
    if not mask.any():
        return None
    pat = texture_pattern(texture, a, b, period)
    shade = (1.0 + 0.18 * (a * inv)).astype(np.float32)[..., None]  # soft lighting from one side
    rgb = np.where(pat[..., None], colour[None, None, :], colour2[None, None, :]) * shade
    return (slice(y0, y1), slice(x0, x1)), mask, rgb.astype(np.float32)
