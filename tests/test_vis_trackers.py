"""Tracker units: MinVIS ids stable under permuted queries, resets on cuts / new resolutions,
ROVIS thresholds, NMS and memory expiry."""
from __future__ import annotations

import torch

from patchprune.vis.trackers import (FrameOutput, MinVISTracker, ROVISTracker, TrackingStream, align,
                                     is_scene_cut, make_tracker)


def frame(emb: torch.Tensor, masks: torch.Tensor, logits: torch.Tensor) -> FrameOutput:
    return FrameOutput(class_logits=logits, mask_logits=masks, queries=emb, hidden=emb)


def scene(Q: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(Q, 16, generator=g)
    masks = -torch.ones(Q, 8, 8) * 5
    for q in range(Q):  # query q owns row q
        masks[q, q % 8] = 5.0
    logits = torch.randn(Q, 4, generator=g)
    logits[:, -1] = -5
    return emb, masks, logits


def test_align_recovers_a_permutation() -> None:
    emb, _, _ = scene()
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    p = align(emb, emb[perm])
    assert torch.equal(emb[perm][p], emb)


def test_minvis_ids_stable_under_permuted_queries() -> None:
    emb, masks, logits = scene()
    tr = MinVISTracker(top_k=6)
    g = torch.Generator().manual_seed(1)
    for t in range(4):
        perm = torch.randperm(6, generator=g) if t else torch.arange(6)
        noisy = emb[perm] + 0.01 * torch.randn(6, 16, generator=g)
        dets = tr.update(t, frame(noisy, masks[perm], logits[perm]))
        for d in dets:  # the track that started as query q keeps mask row q
            assert int(d.mask.argmax() // 8) == d.track_id % 8
    tracks = tr.finish(4)
    assert len(tracks) == 6
    for trk in tracks:
        rows = {int(m.float().argmax() // 8) for m in trk.masks}
        assert rows == {trk.track_id}


def test_minvis_reset_starts_new_tracks() -> None:
    emb, masks, logits = scene()
    stream = TrackingStream(tracker=MinVISTracker(top_k=3))
    for t in range(4):
        stream.observe_frame((32, 32), cut=(t == 2))
        stream.tracker.update(t, frame(emb, masks, logits))
    assert stream.cuts == 1
    tracks = stream.tracker.finish(4)
    assert len(tracks) == 6  # top 3 per segment
    first = [t for t in tracks if t.track_id < 6]
    second = [t for t in tracks if t.track_id >= 6]
    assert all(t.masks[2] is None and t.masks[0] is not None for t in first)
    assert all(t.masks[0] is None and t.masks[3] is not None for t in second)
    stream.observe_frame((64, 32))  # a new resolution resets too
    assert stream.cuts == 2 and stream.tracker.prev is None


def test_scene_cut_detector() -> None:
    a = torch.full((32, 32, 3), 30, dtype=torch.uint8)
    b = torch.full((32, 32, 3), 220, dtype=torch.uint8)
    assert is_scene_cut(a, b)
    assert not is_scene_cut(a, a.clone())
    assert not is_scene_cut(None, a)


def rovis_frame(Q: int, E: int, scores: list[float], rows: list[int]) -> FrameOutput:
    """Q + E outputs; output i has mask row rows[i] and class probability ~ scores[i]."""
    n = Q + E
    masks = -torch.ones(n, 8, 8) * 8
    for i, r in enumerate(rows):
        masks[i, r] = 8.0
    logits = torch.full((n, 3), -20.0)
    for i, s in enumerate(scores):
        logits[i, 0] = torch.log(torch.tensor(s))
        logits[i, 2] = torch.log(torch.tensor(1 - s))  # no-object takes the rest
    hidden = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 4)
    return FrameOutput(logits, masks, hidden, hidden)


def idle(tr: ROVISTracker, t: int) -> None:
    """A frame where nothing scores above the thresholds."""
    tr.track_queries()
    n = 3 + len(tr.order)
    tr.update(t, rovis_frame(3, len(tr.order), [0.01] * n, [7] * n))


def test_rovis_thresholds_nms_and_memory_expiry() -> None:
    tr = ROVISTracker(num_queries=3, memory=2)
    assert tr.track_queries() is None
    # frame 0: a duplicate of the best new output (same mask, IoU 1 > 0.4) is suppressed; 0.2 < 0.3 is dropped
    assert len(tr.update(0, rovis_frame(3, 0, [0.9, 0.85, 0.2], [0, 0, 5]))) == 1
    tr = ROVISTracker(num_queries=3, memory=2)
    dets = tr.update(0, rovis_frame(3, 0, [0.9, 0.8, 0.2], [0, 3, 5]))
    assert sorted(d.track_id for d in dets) == [0, 1]
    assert tr.track_queries().shape == (2, 4)
    # frame 1: track 0 seen (0.5 > 0.25), track 1 not (0.1); a new output on track 0's mask is suppressed
    dets = tr.update(1, rovis_frame(3, 2, [0.9, 0.05, 0.05, 0.5, 0.1], [0, 6, 6, 0, 3]))
    assert [d.track_id for d in dets] == [0]
    idle(tr, 2)  # track 1 (last seen 0) was queried on frames 1 and 2, then dropped
    assert set(tr.live) == {0}
    idle(tr, 3)
    assert not tr.live
    tracks = {t.track_id: t for t in tr.finish(4)}
    assert set(tracks) == {0, 1}
    assert tracks[0].masks[1] is not None and tracks[0].masks[2] is None and tracks[1].masks[1] is None
    assert tracks[0].label == 0 and 0.5 < tracks[0].score < 0.9


def test_rovis_low_score_track_keeps_its_old_query() -> None:
    tr = ROVISTracker(num_queries=2)
    tr.update(0, rovis_frame(2, 0, [0.9, 0.01], [0, 5]))
    old = tr.live[0]["query"].clone()
    tr.track_queries()
    tr.update(1, rovis_frame(2, 1, [0.01, 0.01, 0.28], [5, 5, 0]))  # 0.25 < score < 0.3
    assert 0 in tr.live and torch.equal(tr.live[0]["query"], old)
    tr.track_queries()
    tr.update(2, rovis_frame(2, 1, [0.01, 0.01, 0.9], [5, 5, 0]))
    assert not torch.equal(tr.live[0]["query"], old)


def test_make_tracker() -> None:
    assert isinstance(make_tracker("minvis", 5), MinVISTracker)
    assert isinstance(make_tracker("rovis", 5), ROVISTracker)
    import pytest

    with pytest.raises(ValueError):
        make_tracker("sort", 5)
