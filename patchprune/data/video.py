"""Video files (mp4 / avi / webm / mkv / mov) with PyAV: stream frames for inference, write test videos.

Frames come out as uint8 [H, W, 3] RGB, one at a time, so a long video never has to fit in memory.
Missing files raise FileNotFoundError; unreadable, corrupt, empty or truncated videos (fewer decoded
frames than the container lists, or frames covering less than its duration), and a decoded frame
count that differs from the expected one, raise ValueError naming the file.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from patchprune.data.io import atomic_path
from patchprune.data.types import VideoSample
from patchprune.validate import check_int, check_number

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")
_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".avi": "mpeg4",
           ".webm": "libvpx"}


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (frames may be 0 when unknown)."""

    path: str
    width: int
    height: int
    fps: float
    frames: int
    codec: str


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"empty video file: {path}")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt or unsupported video {path}: {err}") from err
    if not container.streams.video:
        container.close()
        raise ValueError(f"no video stream in {path}")
    return container


def probe_video(path: str | Path) -> VideoInfo:
    """Stream facts without decoding."""
    with _open(path) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate) if s.average_rate else (float(s.guessed_rate) if s.guessed_rate else 0.0)
        return VideoInfo(str(path), int(s.codec_context.width), int(s.codec_context.height), fps,
                         int(s.frames or 0), s.codec_context.name)


def _expected_length(container: av.container.InputContainer, stream: av.video.stream.VideoStream
                     ) -> tuple[int | None, float | None]:
    """What the container promises: (frame count or None, duration in seconds or None).

    The duration comes from the video stream, or from the container when the video is its only
    stream (a container duration also covers audio, which may outlast the video)."""
    frames = int(stream.frames or 0) or None
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None and len(container.streams) == 1:
        duration = container.duration / av.time_base
    return frames, duration if duration and duration > 0 else None


def _check_complete(path: str | Path, decoded: int, span: float | None, fps: float,
                    promised: tuple[int | None, float | None]) -> None:
    """ValueError when fewer frames were decoded than the container promises (truncated file).

    span: seconds from the first decoded frame to the end of the last one (None: no timestamps)."""
    frames, duration = promised
    if frames is not None and decoded < frames:
        raise ValueError(f"truncated or corrupt video {path}: decoded {decoded} of the {frames} frames "
                         "its container lists")
    if frames is None and duration is not None and span is not None and fps > 0 and span < duration - 1.5 / fps:
        raise ValueError(f"truncated or corrupt video {path}: decoded frames cover {span:.2f} s of the "
                         f"{duration:.2f} s its container lists ({decoded} frames)")


def iter_video_frames(path: str | Path, stride: int = 1, max_frames: int | None = None,
                      expected_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield uint8 [H, W, 3] RGB frames (every `stride`-th, at most `max_frames`).

    A video read to its end must deliver the frames its container lists (count, or duration when
    the container has no count): a truncated file raises ValueError instead of yielding a prefix.
    expected_frames: when given, the number of decoded frames (before stride / max_frames) must
    match it, checked once the stream ends (a ValueError otherwise).
    """
    check_int("stride", stride, 1)
    if max_frames is not None:
        check_int("max_frames", max_frames, 1)
    if expected_frames is not None:
        check_int("expected_frames", expected_frames, 1)
    container = _open(path)
    n = 0
    out = 0
    first = last = None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        promised = _expected_length(container, stream)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        try:
            for frame in container.decode(stream):
                if frame.time is not None:
                    first = frame.time if first is None else first
                    last = frame.time
                if n % stride == 0:
                    if max_frames is not None and out >= max_frames:
                        return
                    yield frame.to_ndarray(format="rgb24")
                    out += 1
                n += 1
        except av.error.FFmpegError as err:
            raise ValueError(f"corrupt video {path}: decoding failed after {n} frames ({err})") from err
        if n == 0:
            raise ValueError(f"empty video {path}: no frame could be decoded")
        if expected_frames is not None and n != expected_frames:
            raise ValueError(f"{path}: decoded {n} frames, expected {expected_frames} (mismatched frame counts)")
        span = None if first is None or fps <= 0 else last - first + 1.0 / fps
        _check_complete(path, n, span, fps, promised)
    finally:
        container.close()


def read_video(path: str | Path, stride: int = 1, max_frames: int | None = None,
               expected_frames: int | None = None) -> np.ndarray:
    """All (selected) frames as uint8 [T, H, W, 3]."""
    frames = list(iter_video_frames(path, stride, max_frames, expected_frames))
    return np.stack(frames)


def video_sample(path: str | Path, video_id: int = 0, **kwargs) -> VideoSample:
    """A VideoSample (no tracks) of a video file, for inference."""
    path = Path(path)
    return VideoSample(video_id=video_id, name=path.stem, frames=read_video(path, **kwargs), tracks=[], categories={})


class VideoWriter:
    """Encode uint8 [H, W, 3] frames into a video file one at a time (a long video never sits in
    memory), atomically: the file appears complete at `path` when the block ends cleanly, and nothing
    is left on an error. The codec follows the suffix; the size is the first frame's.

        with VideoWriter("out.mp4", fps=10) as w:
            for frame in frames:
                w.write(frame)
    """

    def __init__(self, path: str | Path, fps: float = 10.0, codec: str | None = None) -> None:
        self.path = Path(path)
        check_number("fps", fps, low=0, low_open=True)
        self.fps = fps
        self.codec = codec or _CODECS.get(self.path.suffix.lower())
        if self.codec is None:
            raise ValueError(f"unknown video suffix {self.path.suffix!r}; expected one of {VIDEO_SUFFIXES}")
        self.frames = 0
        self._stack: contextlib.ExitStack | None = None
        self._container: Any = None
        self._stream: Any = None

    def __enter__(self) -> "VideoWriter":
        fmt = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}.get(
            self.path.suffix.lower())
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._container = self._stack.enter_context(av.open(str(tmp), mode="w", format=fmt))
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 [H, W, 3] RGB frame (every frame of a video has the first one's size)."""
        if self._container is None:
            raise RuntimeError("VideoWriter.write outside its `with` block")
        f = np.asarray(frame)
        if f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise ValueError(f"a frame must be uint8 [H, W, 3], got {f.dtype} {f.shape}")
        H, W = f.shape[:2]
        if self._stream is None:
            if self.codec in ("libx264", "mpeg4") and (H % 2 or W % 2):
                raise ValueError(f"{self.codec} needs even frame sizes, got {W}x{H}")
            self._stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1000))
            self._stream.width, self._stream.height, self._stream.pix_fmt = W, H, "yuv420p"
        elif (H, W) != (self._stream.height, self._stream.width):
            raise ValueError(f"frame {self.frames} is {W}x{H}, earlier frames {self._stream.width}x{self._stream.height}")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        stack, container = self._stack, self._container
        assert stack is not None
        self._container = None
        if exc_type is None:
            try:
                if self._stream is None:
                    raise ValueError(f"{self.path}: no frames were written")
                for packet in self._stream.encode():  # flush the encoder
                    container.mux(packet)
            except BaseException:
                if not stack.__exit__(*sys.exc_info()):
                    raise
                return False
        return bool(stack.__exit__(exc_type, exc, tb))


def write_video(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float = 10.0,
                codec: str | None = None) -> Path:
    """Encode uint8 [T, H, W, 3] frames into a video file, atomically (codec from the suffix)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
        raise ValueError(f"frames must be a non-empty uint8 [T, H, W, 3] array, got {frames.dtype} {frames.shape}")
    with VideoWriter(path, fps, codec) as writer:
        for f in frames:
            writer.write(f)
    return Path(path)
