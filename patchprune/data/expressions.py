"""Referring expressions and reasoning instructions for synthetic scenes, checked to be unambiguous.

Every object in the scene (instances and moving distractors) is known with its shape, texture,
colour, visible masks and motion, so an expression is only emitted when exactly one object fits it:
- referring: attributes ("the dotted star", "the blue circle", "the red wavy hexagon") and spatial
  relations to an anchor ("the striped triangle left of the blue circle");
- reasoning: facts that need looking at the whole scene or clip ("the largest object", "the object
  closest to the left edge", "the shape with the same pattern as the red cross", "the object that
  is about to leave the frame", "the fastest-moving object").
Targets are always instances (tracks), so every expression points at an annotated mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patchprune.data.types import InstanceTrack, VideoSample

TEXTURE_WORDS = {"striped": "striped", "dotted": "dotted", "checkered": "checkered", "wavy": "wavy",
                 "solid": "plain", "noisy": "speckled"}
SHAPE_WORDS = {"circle": "circle", "square": "square", "triangle": "triangle", "hexagon": "hexagon",
               "star": "star", "ring": "ring", "cross": "cross", "bar": "bar", "ellipse": "oval"}
RELATIONS = ("left of", "right of", "above", "below")


@dataclass
class Expression:
    """One expression and the track it refers to."""

    text: str
    track_id: int
    kind: str  # "referring" | "reasoning"


@dataclass
class _Obj:
    track: InstanceTrack
    instance: bool
    attrs: tuple[str, str, str]  # colour, texture, shape
    present: np.ndarray  # bool [T]
    centroid: np.ndarray  # float [T, 2] (x, y), nan where absent
    area: float  # mean visible area over present frames


def _objects(video: VideoSample) -> list[_Obj]:
    objs = []
    H, W = video.height, video.width
    ys, xs = np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64)
    for tr, inst in [(t, True) for t in video.tracks] + [(t, False) for t in video.distractors]:
        a = tr.attributes
        if not {"colour", "texture", "shape"} <= set(a):
            raise ValueError("expressions need synthetic tracks with shape / texture / colour attributes")
        areas = tr.areas.astype(np.float64)
        present = areas > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            cx = (tr.masks.sum(1) * xs).sum(1) / areas
            cy = (tr.masks.sum(2) * ys).sum(1) / areas
        cen = np.stack([cx, cy], 1)
        cen[~present] = np.nan
        objs.append(_Obj(tr, inst, (a["colour"], a["texture"], a["shape"]), present, cen,
                         float(areas[present].mean()) if present.any() else 0.0))
    return objs


# Descriptions: which attributes (colour, texture, shape) to name, as index tuples.
_DESC_FORMS = ((1, 2), (0, 2), (0, 1, 2))


def _words(o: _Obj, form: tuple[int, ...]) -> str:
    colour, texture, shape = o.attrs
    parts = {0: colour, 1: TEXTURE_WORDS[texture], 2: SHAPE_WORDS[shape]}
    return " ".join(parts[i] for i in form)


def _matches(o: _Obj, ref: _Obj, form: tuple[int, ...]) -> bool:
    return all(o.attrs[i] == ref.attrs[i] for i in form)


def _unique_desc(o: _Obj, objs: list[_Obj]) -> str | None:
    for form in _DESC_FORMS:
        if sum(_matches(x, o, form) for x in objs) == 1:
            return _words(o, form)
    return None


def _offset(o: _Obj, a: _Obj) -> np.ndarray | None:
    """Mean (dx, dy) of o relative to a over the frames where both are visible."""
    both = o.present & a.present
    if not both.any():
        return None
    return (o.centroid[both] - a.centroid[both]).mean(0)


def _holds(rel: str, d: np.ndarray | None, margin: float) -> bool:
    if d is None:
        return False
    dx, dy = d
    if rel == "left of":
        return dx < -margin and abs(dx) > abs(dy)
    if rel == "right of":
        return dx > margin and abs(dx) > abs(dy)
    if rel == "above":
        return dy < -margin and abs(dy) > abs(dx)
    return dy > margin and abs(dy) > abs(dx)  # below


def _relational(target: _Obj, objs: list[_Obj], margin: float) -> list[str]:
    """'the <desc> <relation> the <anchor>' forms that single out the target."""
    out = []
    for form in _DESC_FORMS[:2]:
        same = [x for x in objs if _matches(x, target, form)]
        for anchor in objs:
            if anchor is target:
                continue
            anchor_desc = _unique_desc(anchor, objs)
            if anchor_desc is None:
                continue
            for rel in RELATIONS:
                if not _holds(rel, _offset(target, anchor), margin):
                    continue
                if any(_holds(rel, _offset(x, anchor), 0.0) for x in same if x is not target and x is not anchor):
                    continue
                out.append(f"the {_words(target, form)} {rel} the {anchor_desc}")
    return out


def _extreme(objs: list[_Obj], key, ratio: float | None = None, gap: float | None = None) -> _Obj | None:
    """The object with the largest key if it wins clearly (by a ratio or an absolute gap)."""
    vals = [(key(o), o) for o in objs]
    vals = [(v, o) for v, o in vals if np.isfinite(v)]
    if len(vals) < 2:
        return vals[0][1] if vals and len(objs) == 1 else None
    vals.sort(key=lambda vo: -vo[0])
    (v1, o1), (v2, _) = vals[0], vals[1]
    if ratio is not None and not v1 >= ratio * max(v2, 1e-9):
        return None
    if gap is not None and not v1 - v2 >= gap:
        return None
    return o1


def _reasoning(objs: list[_Obj], video: VideoSample, rng: np.random.Generator) -> list[tuple[str, _Obj]]:
    T, H, W = video.num_frames, video.height, video.width
    out: list[tuple[str, _Obj]] = []
    big = _extreme(objs, lambda o: o.area, ratio=1.5)
    if big is not None:
        out.append((str(rng.choice(["the largest object", "the biggest shape in the scene"])), big))
    small = _extreme(objs, lambda o: -o.area if o.area > 0 else -np.inf)
    if small is not None and sorted(o.area for o in objs)[1] >= 1.8 * small.area:
        out.append(("the smallest object", small))
    mean_c = {id(o): np.nanmean(o.centroid, 0) if o.present.any() else np.array([np.nan, np.nan]) for o in objs}
    edges = {"left": lambda o: -mean_c[id(o)][0], "right": lambda o: mean_c[id(o)][0],
             "top": lambda o: -mean_c[id(o)][1], "bottom": lambda o: mean_c[id(o)][1]}
    edge = str(rng.choice(list(edges)))
    near = _extreme(objs, edges[edge], gap=0.12 * (W if edge in ("left", "right") else H))
    if near is not None:
        out.append((f"the object closest to the {edge} edge", near))
    # Same pattern as an anchor: the target is the only other object with the anchor's texture.
    for anchor in objs:
        desc = _unique_desc(anchor, objs)
        same = [o for o in objs if o is not anchor and o.attrs[1] == anchor.attrs[1]]
        if desc is not None and len(same) == 1 and anchor.attrs[2] != same[0].attrs[2]:
            out.append((f"the shape with the same pattern as the {desc}", same[0]))
    if T >= 3:
        def gone_at_end(o: _Obj) -> bool:
            a = o.track.attributes
            c = a["centres"][T - 1]
            outside = not (0 <= c[0] < W and 0 <= c[1] < H) if np.isfinite(c[0]) else False
            return bool(o.present[: T // 2].any() and not o.present[-1] and outside)

        def arrives(o: _Obj) -> bool:
            c = o.track.attributes["centres"][0]
            outside = not (0 <= c[0] < W and 0 <= c[1] < H) if np.isfinite(c[0]) else False
            return bool(o.present[-1] and not o.present[0] and outside)

        for pred, texts in ((gone_at_end, ["the object that is about to leave the frame",
                                           "the shape that moves out of view"]),
                            (arrives, ["the object that enters the frame", "the shape that comes into view"])):
            hits = [o for o in objs if pred(o)]
            if len(hits) == 1:
                out.append((str(rng.choice(texts)), hits[0]))
        fast = _extreme([o for o in objs if o.present.sum() >= 2],
                        lambda o: o.track.attributes["speed"], ratio=1.6, gap=1.0)
        if fast is not None:
            out.append(("the fastest-moving object", fast))
        grow = [o for o in objs if o.track.attributes["growth"] > 0.3]
        if len(grow) == 1 and all(o.track.attributes["growth"] < 0.1 for o in objs if o is not grow[0]):
            out.append(("the object that keeps growing", grow[0]))
    return [(text, o) for text, o in out if o.instance]


def scene_expressions(video: VideoSample, rng: np.random.Generator, per_target: int = 2,
                      reasoning: int = 2) -> list[Expression]:
    """Unambiguous expressions about `video` (made with keep_distractors=True).

    per_target: at most this many referring expressions per instance (attribute and relational
    forms mixed); reasoning: at most this many reasoning instructions for the scene.
    """
    objs = _objects(video)
    margin = 0.06 * max(video.width, video.height)
    out: list[Expression] = []
    for target in objs:
        if not target.instance or not target.present.any():
            continue
        simple = []
        for form in _DESC_FORMS:
            if sum(_matches(x, target, form) for x in objs) == 1:
                simple.append(f"the {_words(target, form)}")
        rel = _relational(target, objs, margin)
        pool = []
        if simple:
            pool.append(simple[int(rng.integers(len(simple)))])
        if rel:
            pool.append(rel[int(rng.integers(len(rel)))])
        pool += [s for s in simple if s not in pool]
        for text in pool[:per_target]:
            out.append(Expression(text, target.track.track_id, "referring"))
    reas = _reasoning(objs, video, rng)
    seen = set()
    order = rng.permutation(len(reas)) if reas else []
    for i in order:
        text, o = reas[int(i)]
        if text in seen or len(seen) >= reasoning:
            continue
        seen.add(text)
        out.append(Expression(text, o.track.track_id, "reasoning"))
    return out
