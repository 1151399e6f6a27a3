"""Synthetic video instance segmentation scenes, generated in memory (deterministic per seed).

Why synthetic: training and evaluating token pruning needs videos with instance tracks on a machine
without data sets. The scenes are built so that foreground selection is not trivial:
- categories are (shape, texture) pairs, colours are drawn independently of the category, and
  category shapes / textures also appear in non-category pairs (distractors), so neither shape,
  texture nor colour alone identifies an instance;
- textured backgrounds (smooth colour noise, a background pattern, faded static clutter shapes);
- moving distractor shapes that occlude and are occluded;
- objects move at varied speeds, rotate, scale, occlude each other, enter and leave the frame;
- the camera pans over the background, and optional scene cuts start a new scene mid-video.

`foreground="cue"` (see `Difficulty`) makes local appearance ambiguous on purpose: distractors are
drawn with the categories' own (shape, texture) pairs, and an object is an instance (foreground)
only when its colour equals the colour of a cue drawn elsewhere in the frame (the "beacon": by
default a solid swatch in the top-left corner, or a solid ring anywhere with cue_position="random";
static on screen, never occluded, its pixels are background). A patch alone cannot tell
an instance from a distractor; the decision needs context from another part of the frame (or the
previous frame). The default `foreground="appearance"` keeps the original scenes bit for bit.

Everything is vectorised numpy over pixel bounding boxes; a 20-frame 192 px video takes a few
tens of milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from patchprune.data.shapes import SHAPES, TEXTURES, rasterise, texture_pattern
from patchprune.data.types import InstanceTrack, VideoSample
from patchprune.validate import check_known_fields


@dataclass(frozen=True)
class Category:
    """A synthetic category: a (shape, texture) pair; its colour is random unless
    `Difficulty.category_colour` is "fixed"."""

    id: int
    name: str
    shape: str
    texture: str


CATEGORIES: list[Category] = [
    Category(1, "striped_triangle", "triangle", "striped"),
    Category(2, "dotted_circle", "circle", "dotted"),
    Category(3, "checkered_square", "square", "checkered"),
    Category(4, "striped_circle", "circle", "striped"),
    Category(5, "dotted_star", "star", "dotted"),
    Category(6, "wavy_hexagon", "hexagon", "wavy"),
]
CATEGORY_NAMES: dict[int, str] = {c.id: c.name for c in CATEGORIES}
CATEGORY_PAIRS: list[tuple[str, str]] = [(c.shape, c.texture) for c in CATEGORIES]
# Distractors: every (shape, texture) pair that is not a category, category shapes included.
DISTRACTOR_PAIRS: list[tuple[str, str]] = [
    (s, t) for s in SHAPES for t in TEXTURES if (s, t) not in CATEGORY_PAIRS
]

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.16, 0.14),
    "green": (0.20, 0.68, 0.24),
    "blue": (0.16, 0.32, 0.90),
    "yellow": (0.95, 0.85, 0.15),
    "orange": (0.98, 0.55, 0.10),
    "purple": (0.56, 0.22, 0.76),
    "cyan": (0.16, 0.80, 0.86),
    "pink": (0.96, 0.48, 0.72),
    "white": (0.95, 0.95, 0.93),
}
_COLOUR_NAMES = list(COLOURS)
_COLOUR_ARR = np.array([COLOURS[n] for n in _COLOUR_NAMES], dtype=np.float32)

FOREGROUND_RULES = ("appearance", "cue")
CATEGORY_COLOUR_RULES = ("random", "fixed")
# foreground="cue": colours of instances, distractors and the beacon (well separated, so the rule is
# about matching colours, not about telling pink from red under shading).
CUE_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
_CUE_IDX = [_COLOUR_NAMES.index(c) for c in CUE_COLOURS]
CUE_SHAPE, CUE_TEXTURE = "ring", "solid"  # the beacon with cue_position="random": no category uses this pair
CUE_POSITIONS = ("corner", "random")
_CLUTTER_PAIRS_CUE = [p for p in DISTRACTOR_PAIRS if p != (CUE_SHAPE, CUE_TEXTURE)]


@dataclass
class Difficulty:
    """Knobs of the scene generator (all sizes are fractions of the frame's shorter side).

    cut_prob is a per-frame probability that a new shot (new scene, new objects) starts there.
    min_area: visible pixels below which an instance counts as absent on a frame (None: 0.04 % of
    the frame area, at least 4).
    foreground: "appearance" (default: instances are the category (shape, texture) pairs, distractors
    use other pairs) or "cue" (distractors use the category pairs too, in other colours; an object is
    an instance iff its colour equals the colour of the shot's beacon, drawn elsewhere in the frame;
    see the module docstring). cue_radius: the beacon's size (fraction of the shorter side);
    cue_position: "corner" (a solid square in the top-left corner) or "random" (a solid ring).
    texture_scale: multiplies the texture period of instances and distractors (default 1: a period of
    radius / U(2, 3), at least 3.5 px); > 1 makes stripes / dots / checks coarser than a ViT patch at
    small frame sizes, so a model trained briefly from scratch can tell the categories apart.
    Background clutter keeps its own fine period (it is decoration).
    category_colour: "random" (default: an object's colour is independent of its category) or
    "fixed" (an instance of category k is drawn in colour k of `COLOURS`, each with its own
    texture shading; distractors keep random colours, so a colour alone still does not make an
    instance): a recognition cue a model trained briefly from scratch can pick up (docs/vis.md).
    """

    min_objects: int = 2
    max_objects: int = 5
    min_distractors: int = 2
    max_distractors: int = 5
    clutter: int = 8
    min_radius: float = 0.08
    max_radius: float = 0.16
    max_speed: float = 0.035
    max_rotation: float = 0.12
    scale_change: float = 0.5
    pan_speed: float = 0.015
    enter_leave: float = 0.3
    cut_prob: float = 0.0
    noise: float = 0.02
    bg_contrast: float = 0.35
    min_area: int | None = None
    foreground: str = "appearance"
    cue_radius: float = 0.13
    cue_position: str = "corner"
    texture_scale: float = 1.0
    category_colour: str = "random"

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> "Difficulty":
        check_known_fields("difficulty option", cls, kwargs)
        d = cls(**kwargs)
        d.validate()
        return d

    def validate(self) -> None:
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not 0 <= self.min_distractors <= self.max_distractors:
            raise ValueError("need 0 <= min_distractors <= max_distractors")
        if not 0 < self.min_radius <= self.max_radius:
            raise ValueError("need 0 < min_radius <= max_radius")
        for name in ("enter_leave", "cut_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.foreground not in FOREGROUND_RULES:
            raise ValueError(f"foreground must be one of {FOREGROUND_RULES}, got {self.foreground!r}")
        if not 0 < self.cue_radius < 0.5:
            raise ValueError(f"cue_radius must be in (0, 0.5), got {self.cue_radius}")
        if self.cue_position not in CUE_POSITIONS:
            raise ValueError(f"cue_position must be one of {CUE_POSITIONS}, got {self.cue_position!r}")
        if self.category_colour not in CATEGORY_COLOUR_RULES:
            raise ValueError(f"category_colour must be one of {CATEGORY_COLOUR_RULES}, got {self.category_colour!r}")
        if self.category_colour == "fixed" and self.foreground == "cue":
            raise ValueError("category_colour 'fixed' and foreground 'cue' both set instance colours; pick one")
        if not self.texture_scale > 0:
            raise ValueError(f"texture_scale must be > 0, got {self.texture_scale}")
        for name in ("max_speed", "max_rotation", "scale_change", "pan_speed", "noise", "bg_contrast", "clutter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class _Sprite:
    """One drawn object (instance or distractor) and its screen-space trajectory."""

    shape: str
    texture: str
    colour_idx: int
    colour2: np.ndarray
    period: float
    q0: np.ndarray  # screen centre (x, y) at t = 0
    vel: np.ndarray  # screen velocity (x, y) per frame
    r0: float
    growth: float
    theta0: float
    omega: float
    category_id: int  # 0 for distractors
    motion: str
    cue: str | None = None  # foreground="cue": the shot's beacon colour

    def centre(self, t: int) -> tuple[float, float]:
        p = self.q0 + self.vel * t
        return float(p[0]), float(p[1])

    def radius(self, t: int, length: int) -> float:
        return float(self.r0 * np.exp(self.growth * (t / max(length - 1, 1) - 0.5)))


def _smooth_field(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """float32 [h, w, 3] in [0, 1]: random colours on a coarse grid, bicubic-upsampled."""
    gh, gw = max(2, int(round(h / cell)) + 1), max(2, int(round(w / cell)) + 1)
    small = (rng.random((gh, gw, 3)) * 255).astype(np.uint8)
    big = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


def _second_colour(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Texture's second colour: a dark or a light version of the main colour (dark for light colours,
    so the pattern stays visible on white or yellow)."""
    luminance = float(c[0] * 0.299 + c[1] * 0.587 + c[2] * 0.114)
    if rng.random() < 0.6 or luminance > 0.6:
        return (c * rng.uniform(0.2, 0.4)).astype(np.float32)
    return (c + (1.0 - c) * rng.uniform(0.55, 0.75)).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int, s: float, d: Difficulty) -> np.ndarray:
    """Textured world background [h, w, 3]: colour noise, a global pattern, faded static clutter shapes."""
    bg = 0.15 + 0.65 * _smooth_field(rng, h, w, cell=0.5 * s)
    bg += 0.25 * (_smooth_field(rng, h, w, cell=0.08 * s) - 0.5)
    tex = ("striped", "dotted", "checkered", "wavy", "noisy", None)[rng.integers(6)]
    if tex is not None and d.bg_contrast > 0:
        ang = rng.uniform(0, np.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        a = np.cos(ang) * xs + np.sin(ang) * ys
        b = -np.sin(ang) * xs + np.cos(ang) * ys
        pat = texture_pattern(tex, a, b, period=rng.uniform(0.03, 0.08) * s)
        bg *= 1.0 - rng.uniform(0.1, max(d.bg_contrast, 0.1)) * pat[..., None]
    n_clutter = int(rng.integers(d.clutter // 2, d.clutter + 1)) if d.clutter > 0 else 0
    pairs = DISTRACTOR_PAIRS if d.foreground == "appearance" else _CLUTTER_PAIRS_CUE
    for _ in range(n_clutter):
        shape, texture = pairs[rng.integers(len(pairs))]
        c = _COLOUR_ARR[rng.integers(len(_COLOUR_ARR))] * rng.uniform(0.6, 1.0)
        res = rasterise(shape, texture, c.astype(np.float32), _second_colour(rng, c),
                        period=rng.uniform(0.025, 0.05) * s,
                        centre=(rng.uniform(0, w), rng.uniform(0, h)),
                        radius=rng.uniform(0.04, 0.12) * s, theta=rng.uniform(0, 2 * np.pi),
                        canvas_hw=(h, w))
        if res is not None:  # clutter is faded into the background: decoration, not an object
            sl, m, rgb = res
            alpha = rng.uniform(0.4, 0.7)
            bg[sl][m] = alpha * rgb[m] + (1.0 - alpha) * bg[sl][m]
    return np.clip(bg, 0.0, 1.0)


def _make_sprite(rng: np.random.Generator, category: Category | None, length: int, hw: tuple[int, int],
                 s: float, cam_v: np.ndarray, d: Difficulty, cue: int | None = None) -> _Sprite:
    """cue: the shot's beacon colour index (foreground="cue"): an instance takes that colour, a
    distractor a category's (shape, texture) pair in another cue colour."""
    H, W = hw
    if category is None:
        pairs = DISTRACTOR_PAIRS if cue is None else CATEGORY_PAIRS
        shape, texture = pairs[rng.integers(len(pairs))]
        cid = 0
    else:
        shape, texture, cid = category.shape, category.texture, category.id
    if cue is None and category is not None and d.category_colour == "fixed":
        ci = (category.id - 1) % len(_COLOUR_ARR)
        rng.integers(len(_COLOUR_ARR))  # keep the draw: the rest of the scene is as with random colours
    elif cue is None:
        ci = int(rng.integers(len(_COLOUR_ARR)))
    elif category is not None:
        ci = cue
    else:
        others = [i for i in _CUE_IDX if i != cue]
        ci = others[int(rng.integers(len(others)))]
    r0 = rng.uniform(d.min_radius, d.max_radius) * s
    ang = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(ang), np.sin(ang)])
    size = np.array([W, H], dtype=np.float64)
    if rng.random() < d.enter_leave and length > 2:
        # Cross the border: leave by t_exit, or (time-reversed) enter after length-1-t_exit.
        start = rng.uniform(0.25, 0.75, size=2) * size
        with np.errstate(divide="ignore", invalid="ignore"):
            tx = np.where(direction > 0, (size - start) / direction,
                          np.where(direction < 0, -start / direction, np.inf))
        dist = float(tx.min()) + 1.1 * r0  # distance along `direction` until fully outside
        t_exit = rng.uniform(length / 3.0, length - 1)
        speed = min(dist / t_exit, 0.12 * s)
        vel = direction * speed
        if rng.random() < 0.5:
            motion, q0 = "leave", start
        else:
            motion, vel = "enter", -vel
            q0 = start - vel * (length - 1)
    else:
        world_v = np.zeros(2) if rng.random() < 0.2 else direction * rng.uniform(0.1, 1.0) * d.max_speed * s
        vel = world_v - cam_v
        q0 = rng.uniform(0.12, 0.88, size=2) * size - vel * rng.uniform(0, 0.5) * (length - 1)
        motion = "stay"
    return _Sprite(
        shape=shape, texture=texture, colour_idx=ci,
        colour2=_second_colour(rng, _COLOUR_ARR[ci]),
        period=max(3.5, d.texture_scale * r0 / rng.uniform(2.0, 3.0)),
        q0=q0.astype(np.float64), vel=vel.astype(np.float64), r0=float(r0),
        growth=float(rng.uniform(-d.scale_change, d.scale_change)),
        theta0=float(rng.uniform(0, 2 * np.pi)),
        omega=float(rng.uniform(-d.max_rotation, d.max_rotation)),
        category_id=cid, motion=motion, cue=None if cue is None else _COLOUR_NAMES[cue],
    )


def _render_shot(rng: np.random.Generator, length: int, hw: tuple[int, int], d: Difficulty
                 ) -> tuple[np.ndarray, list[tuple[_Sprite, np.ndarray]]]:
    """Render one shot: uint8 frames [length, H, W, 3] and (sprite, visible masks) per object.

    Instances come first in the list, then distractors (category_id 0)."""
    H, W = hw
    s = float(min(H, W))
    pan_ang = rng.uniform(0, 2 * np.pi)
    cam_v = np.array([np.cos(pan_ang), np.sin(pan_ang)]) * rng.uniform(0.3, 1.0) * d.pan_speed * s
    span = np.abs(cam_v) * max(length - 1, 0)
    Hb, Wb = H + int(np.ceil(span[1])) + 2, W + int(np.ceil(span[0])) + 2
    bg = _background(rng, Hb, Wb, s, d)
    origin = np.where(cam_v >= 0, 0.0, span)

    n_obj = int(rng.integers(d.min_objects, d.max_objects + 1))
    n_dis = int(rng.integers(d.min_distractors, d.max_distractors + 1))
    cue = None if d.foreground == "appearance" else _CUE_IDX[int(rng.integers(len(_CUE_IDX)))]
    sprites = [_make_sprite(rng, CATEGORIES[rng.integers(len(CATEGORIES))], length, hw, s, cam_v, d, cue)
               for _ in range(n_obj)]
    sprites += [_make_sprite(rng, None, length, hw, s, cam_v, d, cue) for _ in range(n_dis)]
    order = rng.permutation(len(sprites))  # back to front
    beacon = None
    if cue is not None:  # static on screen, drawn last (never occluded); its pixels stay background
        r = d.cue_radius * s
        if d.cue_position == "corner":  # a solid square swatch filling the top-left corner
            half = 0.8 * r  # the square's half side (shape_mask: |u|, |v| <= 0.8)
            shape, texture, centre = "square", "solid", (half, half)
        else:  # a solid ring anywhere in the frame
            shape, texture = CUE_SHAPE, CUE_TEXTURE
            centre = (float(rng.uniform(r, W - r)), float(rng.uniform(r, H - r)))
        beacon = rasterise(shape, texture, _COLOUR_ARR[cue], _COLOUR_ARR[cue], 4.0, centre, r, 0.0, (H, W))

    frames = np.empty((length, H, W, 3), dtype=np.uint8)
    owners = np.empty((length, H, W), dtype=np.int16)
    for t in range(length):
        ox, oy = np.rint(origin + cam_v * t).astype(int)
        img = bg[oy:oy + H, ox:ox + W].copy()
        owner = np.full((H, W), -1, dtype=np.int16)
        for k in order:
            sp = sprites[k]
            res = rasterise(sp.shape, sp.texture, _COLOUR_ARR[sp.colour_idx], sp.colour2, sp.period,
                            sp.centre(t), sp.radius(t, length), sp.theta0 + sp.omega * t, (H, W))
            if res is None:
                continue
            sl, m, rgb = res
            img[sl][m] = rgb[m]
            owner[sl][m] = k
        if beacon is not None:
            sl, m, rgb = beacon
            img[sl][m] = rgb[m]
            owner[sl][m] = -1
        if d.noise > 0:
            img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(d.noise)
        frames[t] = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        owners[t] = owner
    return frames, [(sprites[k], owners == k) for k in range(len(sprites))]


def _attributes(sp: _Sprite, start: int, length: int, total: int) -> dict[str, Any]:
    """Generator facts kept on the track (for referring expressions); per-frame lists span the video."""
    centres = [[float("nan")] * 2 for _ in range(total)]
    radii = [float("nan")] * total
    for t in range(length):
        centres[start + t] = list(sp.centre(t))
        radii[start + t] = sp.radius(t, length)
    return {
        "shape": sp.shape, "texture": sp.texture, "colour": _COLOUR_NAMES[sp.colour_idx],
        "motion": sp.motion, "velocity": [float(sp.vel[0]), float(sp.vel[1])],
        "speed": float(np.hypot(*sp.vel)), "rotation": sp.omega, "growth": sp.growth,
        "centres": centres, "radii": radii, "shot": [start, start + length],
        **({"cue_colour": sp.cue} if sp.cue is not None else {}),
    }


def generate_video(seed: int, frames: int = 20, size: int | tuple[int, int] = 192, *,
                   video_id: int = 1, name: str | None = None, keep_distractors: bool = False,
                   **difficulty: Any) -> VideoSample:
    """Generate one synthetic video (deterministic per seed and arguments).

    size: int (square frames) or (height, width). difficulty: fields of `Difficulty`.
    Returns a VideoSample whose tracks are the visible (occlusion-aware) masks of the instances;
    an instance covering fewer than `min_area` pixels on a frame is absent there, and instances
    absent on every frame are dropped. Track ids are 1..K in the order of the tracks.
    keep_distractors: also return the distractors' visible masks in `sample.distractors`
    (category_id 0, track ids after the instances'); the pixels drawn are the same either way.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    H, W = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if H < 16 or W < 16:
        raise ValueError(f"size must be at least 16 pixels, got {(H, W)}")
    d = Difficulty.from_kwargs(difficulty)
    min_area = d.min_area if d.min_area is not None else max(4, int(0.0004 * H * W))
    rng = np.random.default_rng(seed)

    cuts: list[int] = []
    start = 0
    for t in range(2, frames - 1):
        if t - start >= 2 and rng.random() < d.cut_prob:
            cuts.append(t)
            start = t
    bounds = [0, *cuts, frames]

    all_frames = np.empty((frames, H, W, 3), dtype=np.uint8)
    tracks: list[InstanceTrack] = []
    distractors: list[InstanceTrack] = []
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        shot_frames, objects = _render_shot(rng, b1 - b0, (H, W), d)
        all_frames[b0:b1] = shot_frames
        for sp, vis in objects:
            if sp.category_id == 0 and not keep_distractors:
                continue
            vis = vis & (vis.reshape(vis.shape[0], -1).sum(1) >= min_area)[:, None, None]
            if not vis.any():
                continue
            masks = np.zeros((frames, H, W), dtype=bool)
            masks[b0:b1] = vis
            out = tracks if sp.category_id else distractors
            out.append(InstanceTrack(track_id=0, category_id=sp.category_id, masks=masks,
                                     attributes=_attributes(sp, b0, b1 - b0, frames)))
    for i, tr in enumerate(tracks + distractors, start=1):
        tr.track_id = i
    return VideoSample(video_id=video_id, name=name or f"synth_{seed:08d}", frames=all_frames, tracks=tracks,
                       categories=dict(CATEGORY_NAMES), cuts=cuts, seed=int(seed), distractors=distractors)


SEED_STREAMS = {"vis": 0, "refer-images": 1, "refer-videos": 2}


def split_seed(seed: int, split: str, index: int, stream: str = "vis") -> int:
    """Per-video seed of video `index` of a split.

    Train seeds are even and valid seeds odd, so the splits never share a scene; each data set kind
    (`stream`) has its own seed range, so synthetic VIS and referring data do not repeat each other.
    """
    offset = {"train": 0, "valid": 1}.get(split)
    if offset is None:
        raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
    if stream not in SEED_STREAMS:
        raise ValueError(f"stream must be one of {sorted(SEED_STREAMS)}, got {stream!r}")
    if index < 0 or index >= 5_000_000:
        raise ValueError(f"video index out of range: {index}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return (int(seed) * len(SEED_STREAMS) + SEED_STREAMS[stream]) * 10_000_000 + 2 * int(index) + offset
