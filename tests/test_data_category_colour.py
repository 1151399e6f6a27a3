"""Difficulty.category_colour: "fixed" colours instances by category, leaves distractors random and
the scene geometry unchanged; validation."""
from __future__ import annotations

import numpy as np
import pytest

from patchprune.data.synth import COLOURS, Difficulty, generate_video

SCENE = dict(min_objects=2, max_objects=3, min_radius=0.2, max_radius=0.25, min_distractors=1, max_distractors=2,
             noise=0.0, clutter=0)


def _share_in_colour(video, track, colour: np.ndarray) -> float:
    """Share of a track's visible pixels (first visible frame) within 0.2 of `colour` (RGB in [0, 1])."""
    t = int(np.flatnonzero(track.masks.reshape(track.masks.shape[0], -1).any(1))[0])
    px = video.frames[t][track.masks[t]].astype(np.float32) / 255.0
    return float(np.mean(np.linalg.norm(px - colour, axis=1) < 0.2))


def test_fixed_colours_follow_the_category_with_the_same_geometry() -> None:
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    shares = {"random": [], "fixed": []}
    for seed in range(6):
        videos = {rule: generate_video(seed, frames=2, size=96, category_colour=rule, **SCENE) for rule in shares}
        rand, fixed = videos["random"], videos["fixed"]
        assert [t.category_id for t in rand.tracks] == [t.category_id for t in fixed.tracks]
        assert all(np.array_equal(a.masks, b.masks) for a, b in zip(rand.tracks, fixed.tracks))
        for rule, video in videos.items():
            shares[rule] += [_share_in_colour(video, tr, palette[(tr.category_id - 1) % len(palette)])
                             for tr in video.tracks]
    # every instance wears its category's colour (a texture's other colour is a shade of it) ...
    assert min(shares["fixed"]) > 0.2
    # ... which random colouring does not do
    assert np.mean(np.array(shares["random"]) > 0.2) < 0.5


def test_category_colour_is_validated() -> None:
    with pytest.raises(ValueError, match="category_colour"):
        Difficulty.from_kwargs({"category_colour": "hue"})
    with pytest.raises(ValueError, match="cue"):
        Difficulty.from_kwargs({"category_colour": "fixed", "foreground": "cue"})
