"""Synthetic video generator: determinism, scene properties, difficulty options, split seeds."""
from __future__ import annotations

import numpy as np
import pytest

from patchprune.data.synth import (
    CATEGORIES,
    DISTRACTOR_PAIRS,
    Difficulty,
    generate_video,
    split_seed,
)
from patchprune.data.types import InstanceTrack, VideoSample


def test_same_seed_same_video_and_different_seed_differs():
    a = generate_video(7, frames=6, size=64)
    b = generate_video(7, frames=6, size=64)
    c = generate_video(8, frames=6, size=64)
    assert np.array_equal(a.frames, b.frames)
    assert [t.category_id for t in a.tracks] == [t.category_id for t in b.tracks]
    assert all(np.array_equal(x.masks, y.masks) for x, y in zip(a.tracks, b.tracks))
    assert not np.array_equal(a.frames, c.frames)


def test_sample_types_shapes_and_track_ids():
    v = generate_video(3, frames=5, size=(48, 80))
    assert isinstance(v, VideoSample)
    assert v.frames.shape == (5, 48, 80, 3) and v.frames.dtype == np.uint8
    assert v.tracks, "default difficulty always places instances"
    assert [t.track_id for t in v.tracks] == list(range(1, len(v.tracks) + 1))
    for t in v.tracks:
        assert isinstance(t, InstanceTrack)
        assert t.masks.shape == (5, 48, 80) and t.masks.dtype == bool
        assert t.category_id in {c.id for c in CATEGORIES}
        assert t.masks.any()
    assert v.categories == {c.id: c.name for c in CATEGORIES}


def test_visible_masks_are_disjoint_and_respect_min_area():
    d = dict(min_objects=5, max_objects=5, min_radius=0.2, max_radius=0.3)
    for seed in range(3):
        v = generate_video(seed, frames=4, size=64, min_area=10, **d)
        stack = np.stack([t.masks for t in v.tracks]).sum(0)
        assert stack.max() <= 1  # occlusion-aware: one owner per pixel
        for t in v.tracks:
            areas = t.areas[t.present]
            assert (areas >= 10).all()


def test_categories_are_shape_texture_pairs_not_colours():
    pairs = {(c.shape, c.texture) for c in CATEGORIES}
    assert len(pairs) == len(CATEGORIES)
    shapes = {c.shape for c in CATEGORIES}
    textures = {c.texture for c in CATEGORIES}
    # Some category shares its shape and some its texture with another category.
    assert len(shapes) < len(CATEGORIES) and len(textures) < len(CATEGORIES)
    assert not (set(DISTRACTOR_PAIRS) & pairs)
    # Distractors reuse category shapes and textures.
    assert {s for s, _ in DISTRACTOR_PAIRS} >= shapes
    assert {t for _, t in DISTRACTOR_PAIRS} >= textures
    colours: dict[int, set[str]] = {}
    for seed in range(12):
        for t in generate_video(seed, frames=1, size=48).tracks:
            colours.setdefault(t.category_id, set()).add(t.attributes["colour"])
    assert any(len(c) >= 2 for c in colours.values())


def test_distractors_are_drawn_and_optional():
    a = generate_video(4, frames=3, size=64, min_distractors=3, max_distractors=3)
    b = generate_video(4, frames=3, size=64, min_distractors=3, max_distractors=3, keep_distractors=True)
    assert np.array_equal(a.frames, b.frames)
    assert a.distractors == [] and len(b.distractors) >= 1
    for d in b.distractors:
        assert d.category_id == 0
        assert (d.attributes["shape"], d.attributes["texture"]) in DISTRACTOR_PAIRS
    ids = [t.track_id for t in b.tracks + b.distractors]
    assert ids == list(range(1, len(ids) + 1))


def test_camera_pans_over_a_textured_background():
    v = generate_video(11, frames=6, size=64, min_objects=0, max_objects=0, min_distractors=0, max_distractors=0,
                       noise=0.0, pan_speed=0.05)
    assert v.tracks == []
    f0, f5 = v.frames[0].astype(int), v.frames[5].astype(int)
    assert f0.std() > 5  # textured, not flat
    assert np.abs(f0 - f5).mean() > 2  # the view changed
    # Some non-zero integer shift maps frame 5 onto frame 0 (up to JPEG-free rounding: exact here).
    best = min(((dx, dy) for dx in range(-16, 17) for dy in range(-16, 17)),
               key=lambda s: np.abs(np.roll(f5, s, axis=(1, 0))[16:-16, 16:-16] - f0[16:-16, 16:-16]).mean())
    err = np.abs(np.roll(f5, best, axis=(1, 0))[16:-16, 16:-16] - f0[16:-16, 16:-16]).mean()
    assert best != (0, 0) and err < 1.0


def test_objects_enter_and_leave_the_frame():
    seen_partial = 0
    for seed in range(6):
        v = generate_video(seed, frames=12, size=64, enter_leave=1.0)
        for t in v.tracks:
            p = t.present
            if not (p[0] and p[-1]):
                seen_partial += 1
            assert t.attributes["motion"] in ("enter", "leave")
    assert seen_partial >= 3


def test_scene_cuts_start_new_scenes():
    v = generate_video(5, frames=16, size=48, cut_prob=0.5)
    assert v.cuts and all(0 < c < 16 for c in v.cuts)
    bounds = [0, *v.cuts, 16]
    for t in v.tracks:
        frames = np.flatnonzero(t.present)
        shot = [i for i in range(len(bounds) - 1) if bounds[i] <= frames[0] < bounds[i + 1]][0]
        assert frames[-1] < bounds[shot + 1]  # a track never crosses a cut
    no_cut = generate_video(5, frames=16, size=48)
    assert no_cut.cuts == []


def test_objects_move_rotate_and_scale():
    v = generate_video(2, frames=10, size=96, enter_leave=0.0)
    speeds = [t.attributes["speed"] for t in v.tracks]
    assert max(speeds) > 0
    radii = np.array([t.attributes["radii"] for t in v.tracks])
    assert (np.abs(radii[:, -1] / radii[:, 0] - 1) > 0.01).any()
    assert any(abs(t.attributes["rotation"]) > 0 for t in v.tracks)


def test_difficulty_validation():
    with pytest.raises(ValueError, match="unknown difficulty"):
        generate_video(0, frames=2, size=32, wobble=1.0)
    with pytest.raises(ValueError):
        generate_video(0, frames=2, size=32, min_objects=4, max_objects=2)
    with pytest.raises(ValueError):
        generate_video(0, frames=2, size=32, cut_prob=1.5)
    with pytest.raises(ValueError):
        generate_video(0, frames=0, size=32)
    with pytest.raises(ValueError):
        generate_video(0, frames=2, size=8)
    assert Difficulty.from_kwargs({"max_speed": 0.1}).max_speed == 0.1


def test_split_seeds_are_disjoint():
    train = {split_seed(3, "train", i) for i in range(500)}
    valid = {split_seed(3, "valid", i) for i in range(500)}
    refer = {split_seed(3, "train", i, stream="refer-videos") for i in range(500)}
    assert len(train) == len(valid) == 500
    assert not (train & valid) and not (train & refer)
    with pytest.raises(ValueError):
        split_seed(0, "test", 0)


# foreground="cue": foreground needs context (the beacon's colour), not local appearance

CUE = dict(foreground="cue", min_objects=1, max_objects=3, min_distractors=2, max_distractors=4)


def test_cue_mode_is_deterministic_per_seed():
    a = generate_video(11, frames=4, size=64, keep_distractors=True, **CUE)
    b = generate_video(11, frames=4, size=64, keep_distractors=True, **CUE)
    c = generate_video(12, frames=4, size=64, keep_distractors=True, **CUE)
    assert np.array_equal(a.frames, b.frames)
    assert [t.masks.tolist() == u.masks.tolist() for t, u in zip(a.tracks, b.tracks)] == [True] * len(a.tracks)
    assert [t.attributes["colour"] for t in a.tracks] == [t.attributes["colour"] for t in b.tracks]
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.frames, generate_video(11, frames=4, size=64).frames)  # not the default rule


def test_cue_mode_labels_follow_the_rule():
    from patchprune.data.synth import CATEGORY_PAIRS, COLOURS, CUE_COLOURS

    as_instance, as_distractor = set(), set()
    for seed in range(16):
        v = generate_video(seed, frames=3, size=64, keep_distractors=True, cut_prob=0.3, **CUE)
        for t in v.tracks:  # instances: a category pair in the shot's cue colour
            assert t.category_id > 0
            assert t.attributes["colour"] == t.attributes["cue_colour"]
            assert t.attributes["colour"] in CUE_COLOURS
            pair = (t.attributes["shape"], t.attributes["texture"])
            assert pair == CATEGORY_PAIRS[t.category_id - 1]
            as_instance.add(pair)
        for d in v.distractors:  # distractors: category pairs too, in another colour
            assert d.category_id == 0
            assert d.attributes["colour"] != d.attributes["cue_colour"]
            assert d.attributes["colour"] in CUE_COLOURS
            pair = (d.attributes["shape"], d.attributes["texture"])
            assert pair in CATEGORY_PAIRS
            as_distractor.add(pair)
        # the beacon: a ring in the cue colour, drawn on top and never part of a track
        fg = np.zeros(v.frames.shape[:3], dtype=bool)
        for t in v.tracks + v.distractors:
            fg |= t.masks
        cue = v.tracks[0].attributes["cue_colour"] if v.tracks else (
            v.distractors[0].attributes["cue_colour"] if v.distractors else None)
        if cue is not None and not v.cuts:
            rgb = np.asarray(COLOURS[cue]) * 255
            near = (np.abs(v.frames[0].astype(float) - rgb).max(-1) < 60) & ~fg[0]
            assert near.sum() >= 20, "the beacon should be visible outside every object"
    # every category pair shows up both as foreground and as background: appearance alone is ambiguous
    assert as_instance & as_distractor


def test_cue_mode_validation():
    with pytest.raises(ValueError, match="foreground"):
        generate_video(0, frames=2, size=32, foreground="motion")
    with pytest.raises(ValueError, match="cue_radius"):
        generate_video(0, frames=2, size=32, foreground="cue", cue_radius=0.7)
