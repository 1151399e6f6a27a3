"""Video file reader (PyAV): round trips for mp4 / avi / webm and every clear-error path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchprune.data.synth import generate_video
from patchprune.data.video import VideoWriter, iter_video_frames, probe_video, read_video, video_sample, write_video


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return generate_video(1, frames=6, size=(48, 64)).frames


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".webm"])
def test_round_trip(tmp_path: Path, frames: np.ndarray, suffix: str):
    path = write_video(tmp_path / f"v{suffix}", frames, fps=5)
    info = probe_video(path)
    assert (info.width, info.height) == (64, 48) and info.fps == pytest.approx(5.0)
    back = read_video(path, expected_frames=6)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 25  # lossy codecs
    # The decoded frames follow the source order: each is closest to its own source frame.
    err = np.abs(back[:, None].astype(int) - frames[None].astype(int)).mean(axis=(2, 3, 4))
    assert (err.argmin(1) == np.arange(6)).all()


def test_streaming_stride_and_limits(tmp_path: Path, frames: np.ndarray):
    path = write_video(tmp_path / "v.mp4", frames)
    it = iter_video_frames(path, stride=2)
    first = next(it)
    assert first.shape == (48, 64, 3)
    assert len(list(it)) == 2  # frames 2 and 4
    assert read_video(path, max_frames=4).shape[0] == 4
    s = video_sample(path)
    assert s.name == "v" and s.num_frames == 6 and s.tracks == []
    with pytest.raises(ValueError):
        read_video(path, stride=0)


def test_errors(tmp_path: Path, frames: np.ndarray):
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "junk.webm").write_bytes(b"\x00garbage" * 200)
    with pytest.raises(ValueError, match="corrupt"):
        read_video(tmp_path / "junk.webm")
    good = write_video(tmp_path / "v.mp4", frames)
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        read_video(tmp_path / "cut.mp4")
    with pytest.raises(ValueError, match="mismatched frame counts"):
        read_video(good, expected_frames=7)
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", frames[:, :47])
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "v.xyz", frames)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", frames.astype(np.float32))
    assert not (tmp_path / "odd.mp4").exists() and not (tmp_path / "f.mp4").exists()


def test_video_writer_streams_frames_and_leaves_nothing_on_an_error(tmp_path: Path, frames: np.ndarray):
    with VideoWriter(tmp_path / "s.mp4", fps=5) as w:
        assert not (tmp_path / "s.mp4").exists()  # appears only when complete
        for f in frames:
            w.write(f)
    assert w.frames == 6
    assert np.abs(read_video(tmp_path / "s.mp4", expected_frames=6).astype(int) - frames.astype(int)).mean() < 25
    with pytest.raises(ValueError, match=r"frame 2 is 64x46, earlier frames 64x48"):
        with VideoWriter(tmp_path / "sizes.mp4") as w:
            w.write(frames[0])
            w.write(frames[1])
            w.write(frames[2, :46])
    with pytest.raises(ValueError, match="no frames were written"):
        with VideoWriter(tmp_path / "none.mp4"):
            pass
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "killed.mp4") as w:
            w.write(frames[0])
            raise KeyboardInterrupt
    with pytest.raises(RuntimeError, match="outside"):
        w.write(frames[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mp4"]  # no partial file, no temporary left


def test_audio_only_file_has_no_video_stream(tmp_path: Path):
    import av

    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(ValueError, match="no video stream"):
        read_video(path)


def test_a_frame_folder_whose_frames_differ_in_size_is_refused_by_every_reader(tmp_path: Path, frames: np.ndarray):
    from PIL import Image

    from patchprune.demo import video_source
    from patchprune.ivs.refer import small_frames
    from patchprune.vis.segment import iter_frames

    for t, f in enumerate(frames[:3]):
        Image.fromarray(f if t != 2 else f[:40]).save(tmp_path / f"{t:03d}.png")
    assert len(list(iter_frames(tmp_path, max_frames=2))) == 2  # the odd frame is never read
    message = r"frame 2 \(002.png\) is 64x40, earlier frames 64x48; one video must keep one size"
    for read in (lambda: list(iter_frames(tmp_path)), lambda: small_frames(tmp_path, 32, None),
                 lambda: video_source(tmp_path, 3, 32)):
        with pytest.raises(ValueError, match=message):
            read()
