"""Frame sources on real files: sampling by the video's own clock, looping, live-camera replay,
image folders, bad files."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from config.clock import SystemClock
from edge.sources import (
    CorruptFrame,
    SourceEnded,
    SourceError,
    describe,
    open_source,
)

FPS = 10


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s at 10 fps; frame k is uniformly grey at level 5 * k, so a frame tells its index."""
    path = tmp_path_factory.mktemp("video") / "counter.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (64, 48))
    for k in range(40):
        writer.write(np.full((48, 64, 3), 5 * k, np.uint8))
    writer.release()
    return path


def index_of(image: np.ndarray) -> int:
    return round(float(image.mean()) / 5)


def test_describe() -> None:
    assert describe("usb:0") == "usb"
    assert describe("rtsp://10.0.0.1/s") == "stream"
    assert describe("/nowhere/x.mp4") == "file"


def test_file_sampled_by_its_own_clock_and_looped(counter_video: Path) -> None:
    src = open_source(
        str(counter_video), 2, SystemClock(), threading.Event(), loop=True, realtime=False
    )
    src.open()
    frames = [src.read() for _ in range(12)]  # 6 s at 2 fps from a 4 s video
    src.close()
    assert [f.t for f in frames] == [0.5 * i for i in range(12)]
    assert [index_of(f.image) for f in frames] == [0, 5, 10, 15, 20, 25, 30, 35, 0, 5, 10, 15]
    assert (frames[3].ts - frames[0].ts).total_seconds() == pytest.approx(1.5)


def test_file_without_loop_ends(counter_video: Path) -> None:
    src = open_source(str(counter_video), 1, SystemClock(), threading.Event(), realtime=False)
    src.open()
    got = []
    with pytest.raises(SourceEnded):
        while True:
            got.append(index_of(src.read().image))
    assert got == [0, 10, 20, 30]


def test_realtime_replay_from_a_clock_origin_is_where_the_scene_is_now(counter_video: Path) -> None:
    origin = datetime.now(UTC) - timedelta(seconds=4 * 3 + 2.5)  # 3 loops and 2.5 s ago
    src = open_source(
        str(counter_video),
        2,
        SystemClock(),
        threading.Event(),
        loop=True,
        realtime=True,
        origin=origin,
    )
    src.open()
    started = time.monotonic()
    first = src.read()
    second = src.read()
    src.close()
    assert index_of(first.image) == pytest.approx(25, abs=2)
    assert index_of(second.image) == pytest.approx(30, abs=2)
    assert 0.3 < time.monotonic() - started < 1.5  # paced: one sample per 0.5 s


def test_image_folder_skips_a_corrupt_image(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    (tmp_path / "1.png").write_bytes(b"not a png")
    src = open_source(str(tmp_path), 2, SystemClock(), threading.Event(), realtime=False)
    src.open()
    assert src.read().t == 0.0
    with pytest.raises(CorruptFrame, match=r"1\.png"):
        src.read()
    assert src.read().t == 1.0
    with pytest.raises(SourceEnded):
        src.read()


def test_missing_and_unreadable_sources(tmp_path: Path) -> None:
    stop = threading.Event()
    with pytest.raises(SourceError, match="not found"):
        open_source(str(tmp_path / "nope.mp4"), 2, SystemClock(), stop).open()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match="cannot open"):
        open_source(str(bad), 2, SystemClock(), stop).open()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(str(empty), 2, SystemClock(), stop).open()
    with pytest.raises(SourceError, match="usb:N"):
        open_source("usb:x", 2, SystemClock(), stop)
