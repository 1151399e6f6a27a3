"""Difficulty.texture_scale: default scenes unchanged, coarser textures with the same geometry, validation."""
from __future__ import annotations

import numpy as np
import pytest

from patchprune.data.synth import Difficulty, generate_video

SCENE = dict(min_objects=2, max_objects=2, min_radius=0.2, max_radius=0.25, min_distractors=0, max_distractors=0, noise=0.0)


def _edge_density(video) -> float:
    """Mean absolute horizontal colour change between neighbouring pixels inside the instances."""
    f = video.frames.astype(np.float32)
    inside = np.stack([tr.masks for tr in video.tracks]).any(0)
    both = inside[:, :, 1:] & inside[:, :, :-1]
    diff = np.abs(f[:, :, 1:] - f[:, :, :-1]).sum(-1)
    return float(diff[both].mean())


def test_default_scale_keeps_the_scenes_bit_for_bit() -> None:
    a = generate_video(11, frames=3, size=96, **SCENE)
    b = generate_video(11, frames=3, size=96, texture_scale=1.0, **SCENE)
    assert np.array_equal(a.frames, b.frames)


def test_larger_scale_coarsens_textures_with_the_same_geometry() -> None:
    fine = [generate_video(s, frames=2, size=96, **SCENE) for s in range(6)]
    coarse = [generate_video(s, frames=2, size=96, texture_scale=2.5, **SCENE) for s in range(6)]
    for f, c in zip(fine, coarse):  # the same random draws: same objects, same masks, other pixels
        assert [t.category_id for t in f.tracks] == [t.category_id for t in c.tracks]
        assert all(np.array_equal(a.masks, b.masks) for a, b in zip(f.tracks, c.tracks))
    assert not all(np.array_equal(f.frames, c.frames) for f, c in zip(fine, coarse))
    # fewer stripe / dot / check edges per pixel inside the objects
    assert np.mean([_edge_density(c) for c in coarse]) < 0.8 * np.mean([_edge_density(f) for f in fine])


def test_texture_scale_is_validated() -> None:
    with pytest.raises(ValueError, match="texture_scale"):
        Difficulty.from_kwargs({"texture_scale": 0})
