"""Where frames come from: a video file, an RTSP/HTTP stream, a USB camera or a folder of images.

All go through OpenCV (headless build). Each source hands out *sampled* frames at the
camera's ``sample_fps``, each stamped with ``t`` (seconds on the camera's clock, what the
tracker and the gate use) and ``ts`` (the wall-clock time of the observation):

- live sources (stream, USB) and files played in real time: ``t`` is ``time.monotonic()``;
- a file or folder read as fast as possible (``realtime: false``, for tests and
  benchmarks): ``t`` is the position in the video (plus one video length per loop), and
  ``ts`` is the time the source was opened plus ``t``.

``SourceError`` means the source is unusable now (reconnect with backoff), ``SourceEnded``
that a file without ``loop`` is finished, ``CorruptFrame`` that one frame was bad (skip it).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from config.clock import Clock

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 10_000


class SourceError(RuntimeError):
    """The source cannot be opened or read right now."""


class SourceEnded(Exception):
    """A file or folder without ``loop`` has no more frames."""


class CorruptFrame(SourceError):
    """One frame could not be decoded; the source itself is still usable."""


@dataclass(frozen=True)
class Frame:
    """A sampled frame: BGR pixels, camera-clock seconds, wall time, sample number."""

    image: NDArray[np.uint8]
    t: float
    ts: datetime
    index: int


class FrameSource(ABC):
    """A camera's frames at its sampling rate."""

    def __init__(self, sample_fps: float, clock: Clock, stop: threading.Event) -> None:
        self.sample_fps = sample_fps
        self.clock = clock
        self.stop_event = stop
        self.samples = 0

    @property
    def interval(self) -> float:
        return 1.0 / self.sample_fps

    @abstractmethod
    def open(self) -> None:
        """Open the source; raises SourceError."""

    @abstractmethod
    def read(self) -> Frame:
        """The next sampled frame (blocking); raises SourceError, SourceEnded, CorruptFrame."""

    def close(self) -> None:  # noqa: B027 - most sources hold a capture to free, some do not
        """Release the source."""

    def _sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0 and self.stop_event.wait(delay):
            raise SourceEnded("stopping")


def describe(source: str) -> str:
    """What kind of source a camera's ``source`` string names."""
    if source.startswith("usb:"):
        return "usb"
    if "://" in source:
        return "stream"
    return "folder" if Path(source).is_dir() else "file"


def open_source(
    source: str,
    sample_fps: float,
    clock: Clock,
    stop: threading.Event,
    *,
    loop: bool = False,
    realtime: bool = True,
    origin: datetime | None = None,
) -> FrameSource:
    """The right source for ``source``: ``usb:N``, ``rtsp://``/``http://`` URL, folder or file.

    ``origin`` (files played in real time): the wall time at which the file's first frame is
    (or was) shown; with ``loop`` the file repeats from then on, like a live camera.
    """
    kind = describe(source)
    src: FrameSource
    if kind == "usb":
        try:
            index = int(source[4:])
        except ValueError:
            raise SourceError(f"bad USB camera {source!r}: expected usb:N") from None
        src = StreamSource(index, sample_fps, clock, stop)
    elif kind == "stream":
        src = StreamSource(source, sample_fps, clock, stop)
    elif kind == "folder":
        src = ImageFolderSource(Path(source), sample_fps, clock, stop, loop=loop, realtime=realtime)
    else:
        src = VideoFileSource(
            Path(source), sample_fps, clock, stop, loop=loop, realtime=realtime, origin=origin
        )
    return src


class VideoFileSource(FrameSource):
    """A video file, sampled by its own timestamps; optionally looped and paced in real time."""

    def __init__(
        self,
        path: Path,
        sample_fps: float,
        clock: Clock,
        stop: threading.Event,
        *,
        loop: bool = False,
        realtime: bool = True,
        origin: datetime | None = None,
    ) -> None:
        super().__init__(sample_fps, clock, stop)
        self.path = path
        self.loop = loop
        self.realtime = realtime
        self.origin = origin
        self._cap: cv2.VideoCapture | None = None
        self.fps = 25.0
        self.duration_s = 0.0
        self._pos = -1  # index of the frame last grabbed in this pass
        self._offset = 0.0  # video seconds of completed loops
        self._next_t = 0.0
        self._wall0 = 0.0
        self.epoch: datetime = clock.now()
        self.loops = 0

    def _capture(self) -> cv2.VideoCapture:
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise SourceError(f"OpenCV cannot open video {self.path}")
        return cap

    def open(self) -> None:
        self._cap = self._capture()
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0)
        self.fps = fps if 0 < fps < 1000 else 25.0
        frames = float(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.duration_s = frames / self.fps if frames > 0 else 0.0
        self._pos = -1
        self._offset = 0.0
        self._next_t = 0.0
        self._wall0 = time.monotonic()
        self.epoch = self.clock.now()
        if self.realtime and self.origin is not None:
            elapsed = (self.epoch - self.origin).total_seconds()
            if elapsed < 0:
                self._sleep_until(self._wall0 - elapsed)
                elapsed = 0.0
            self._wall0 = time.monotonic() - elapsed
            self.epoch = self.origin
            if self.loop and self.duration_s > 0:
                self.loops = int(elapsed // self.duration_s)
                self._offset = self.loops * self.duration_s
            self._next_t = elapsed

    def _rewind(self) -> None:
        assert self._cap is not None
        played = (self._pos + 1) / self.fps
        self._cap.release()
        self._cap = self._capture()
        self._offset += played
        self._pos = -1
        self.loops += 1

    def read(self) -> Frame:
        if self._cap is None:
            raise SourceError("source not open")
        if self.stop_event.is_set():
            raise SourceEnded("stopping")
        target_t = self._next_t
        if self.realtime:
            target_t = max(target_t, time.monotonic() - self._wall0)
        while True:
            index = round((target_t - self._offset) * self.fps)
            while self._pos < index:
                if not self._cap.grab():
                    break
                self._pos += 1
            if self._pos >= index and self._pos >= 0:
                break
            if not self.loop:
                raise SourceEnded(f"end of {self.path}")
            if self._pos < 0:
                raise SourceError(f"video {self.path} has no readable frames")
            self._rewind()
        media_t = self._offset + self._pos / self.fps
        if self.realtime:
            self._sleep_until(self._wall0 + media_t)
        self._next_t = media_t + self.interval
        ok, image = self._cap.retrieve()
        if not ok or image is None:
            raise CorruptFrame(f"frame {self._pos} of {self.path} could not be decoded")
        self.samples += 1
        if self.realtime:
            return Frame(np.asarray(image), time.monotonic(), self.clock.now(), self.samples)
        return Frame(
            np.asarray(image), media_t, self.epoch + timedelta(seconds=media_t), self.samples
        )

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource(FrameSource):
    """Images of a folder in name order, one per sample interval; optionally looped."""

    def __init__(
        self,
        folder: Path,
        sample_fps: float,
        clock: Clock,
        stop: threading.Event,
        *,
        loop: bool = False,
        realtime: bool = True,
    ) -> None:
        super().__init__(sample_fps, clock, stop)
        self.folder = folder
        self.loop = loop
        self.realtime = realtime
        self._files: list[Path] = []
        self._i = 0
        self._wall0 = 0.0
        self.epoch: datetime = clock.now()

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"image folder not found: {self.folder}")
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise SourceError(f"no images in {self.folder}")
        self._i = 0
        self._wall0 = time.monotonic()
        self.epoch = self.clock.now()

    def read(self) -> Frame:
        if self.stop_event.is_set():
            raise SourceEnded("stopping")
        if self._i >= len(self._files) and not self.loop:
            raise SourceEnded(f"end of {self.folder}")
        path = self._files[self._i % len(self._files)]
        media_t = self._i * self.interval
        self._i += 1
        if self.realtime:
            self._sleep_until(self._wall0 + media_t)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise CorruptFrame(f"cannot decode image {path}")
        self.samples += 1
        if self.realtime:
            return Frame(np.asarray(image), time.monotonic(), self.clock.now(), self.samples)
        return Frame(
            np.asarray(image), media_t, self.epoch + timedelta(seconds=media_t), self.samples
        )


class StreamSource(FrameSource):
    """A live stream (RTSP, HTTP) or USB camera.

    A reader thread grabs every frame (so the stream never lags behind) and decodes one per
    sample interval; ``read`` waits for it. No frame within the read timeout is an error.
    """

    def __init__(
        self, target: str | int, sample_fps: float, clock: Clock, stop: threading.Event
    ) -> None:
        super().__init__(sample_fps, clock, stop)
        self.target = target
        self._cap: cv2.VideoCapture | None = None
        self._latest: tuple[NDArray[np.uint8], float, datetime] | None = None
        self._error: str | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def _name(self) -> str:
        return f"usb:{self.target}" if isinstance(self.target, int) else str(self.target)

    def open(self) -> None:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            READ_TIMEOUT_MS,
        ]
        if isinstance(self.target, int):
            cap = cv2.VideoCapture(self.target, cv2.CAP_ANY, params)
        else:
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open stream {self._name()}")
        self._cap = cap
        self._latest = None
        self._error = None
        self._closing.clear()
        self._thread = threading.Thread(
            target=self._grab_loop, name=f"grab-{self._name()}", daemon=True
        )
        self._thread.start()

    def _grab_loop(self) -> None:
        cap = self._cap
        assert cap is not None
        next_at = 0.0
        while not self._closing.is_set() and not self.stop_event.is_set():
            if not cap.grab():
                with self._cond:
                    self._error = f"stream {self._name()} stopped delivering frames"
                    self._cond.notify_all()
                return
            now = time.monotonic()
            if now < next_at:
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                continue
            next_at = max(next_at + self.interval, now - self.interval)
            with self._cond:
                self._latest = (np.asarray(image), now, self.clock.now())
                self._cond.notify_all()

    def read(self) -> Frame:
        deadline = time.monotonic() + READ_TIMEOUT_MS / 1000
        with self._cond:
            while self._latest is None and self._error is None:
                if self.stop_event.is_set():
                    raise SourceEnded("stopping")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceError(
                        f"no frame from {self._name()} for {READ_TIMEOUT_MS / 1000:.0f}s"
                    )
                self._cond.wait(min(left, 0.5))
            if self._latest is None:
                raise SourceError(self._error or "stream failed")
            image, t, ts = self._latest
            self._latest = None
        self.samples += 1
        return Frame(image, t, ts, self.samples)

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(READ_TIMEOUT_MS / 1000 + 2)
            self._thread = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
