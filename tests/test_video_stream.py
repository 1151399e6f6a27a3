"""VideoStream bookkeeping: staging / commit, per-sample resets, new ids, grid and batch changes."""
import pytest
import torch

from patchprune.video import VideoStream


def _commit(stream, b=2, n=4, c=3, grid=(2, 2), value=0.0):
    stream.stage("m", keys=torch.full((b, n, c), value), grid=grid)
    stream.stage("m", values=torch.full((b, n, c), value + 1), mask=torch.ones(b, n, dtype=torch.bool))
    stream.commit("m")


def test_staged_entries_are_invisible_until_commit():
    s = VideoStream()
    s.start_frame()
    assert s.read("m", (2, 2), 2) is None
    s.stage("m", keys=torch.zeros(2, 4, 3), grid=(2, 2))
    assert s.read("m", (2, 2), 2) is None
    with pytest.raises(ValueError, match="missing"):
        s.commit("m")
    _commit(s)
    cache = s.read("m", (2, 2), 2)
    assert cache is not None and cache.valid.all() and cache.mask.dtype == torch.bool


def test_resets_by_sample_by_video_id_and_all():
    s = VideoStream()
    s.start_frame(["a", "b"])
    _commit(s)
    s.start_frame(["a", "b"])
    assert s.read("m", (2, 2), 2).valid.tolist() == [True, True]
    s.start_frame(["a", "z"])
    assert s.read("m", (2, 2), 2).valid.tolist() == [True, False]
    s.reset([0])
    assert s.read("m", (2, 2), 2) is None  # no valid sample left
    _commit(s)
    s.start_frame(["a", "z", "q"])  # batch layout changed: everything is reset
    assert not s.caches and s.read("m", (2, 2), 3) is None
    with pytest.raises(ValueError, match="3 ids but the batch has 2"):  # ids must be one per sample
        s.read("m", (2, 2), 2)
    s.start_frame(["a", "z"])
    _commit(s)
    s.reset()
    assert s.read("m", (2, 2), 2) is None and s.resets >= 3
    _commit(s)
    with pytest.raises(ValueError, match="out of range"):
        s.reset([5])


def test_grid_or_batch_change_drops_the_prior_and_detach():
    s = VideoStream(keep_graph=True)  # a training chain's stream: detach_() truncates its graph
    _commit(s)
    assert s.read("m", (4, 1), 2) is None  # same N, other grid
    _commit(s)
    assert s.read("m", (2, 2), 3) is None
    keys = torch.zeros(2, 4, 3, requires_grad=True)
    s.stage("m", keys=keys * 2, values=keys * 3, mask=torch.ones(2, 4, dtype=torch.bool), grid=(2, 2))
    s.commit("m")
    assert s.caches["m"].keys.requires_grad
    s.detach_()
    assert not s.caches["m"].keys.requires_grad
