"""Frame sources on real files: sampling by the video's own clock, looping, live-camera replay,
image folders, bad files."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from broker.mosquitto import free_port
from config.clock import SystemClock
from edge.sources import (
    CorruptFrame,
    SourceEnded,
    SourceError,
    StreamSource,
    describe,
    open_source,
)
from tests.conftest import wait_until

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


class MjpegServer:
    """A camera's HTTP MJPEG stream (multipart JPEG) on a loopback port, stoppable and
    restartable on the same port, as a real IP camera that reboots."""

    def __init__(self) -> None:
        self.port = free_port()
        self.alive = threading.Event()
        self.server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> None:
        alive = self.alive

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                k = 0
                while alive.is_set():
                    _, buf = cv2.imencode(".jpg", np.full((120, 160, 3), 5 * (k % 50), np.uint8))
                    head = (
                        f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {buf.size}\r\n\r\n"
                    )
                    try:
                        self.wfile.write(head.encode() + buf.tobytes() + b"\r\n")
                    except OSError:
                        return
                    k += 1
                    time.sleep(0.05)

            def log_message(self, *args: object) -> None:
                pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.alive.set()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.alive.clear()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"


def test_a_lost_http_stream_is_reported_and_reconnected(fake_model: Path) -> None:
    from edge.camera import CameraWorker, DetectorPool
    from edge.settings import EdgeCamera, EdgeSettings
    from tests.edge.conftest import camera

    server = MjpegServer()
    server.start()
    settings = EdgeSettings.model_validate({"device_id": "edge-01", "broker": {"password": "x"}})
    cam = EdgeCamera.model_validate(
        {
            "device": "edge-01",
            **camera("cam-ip", server.url, sample_fps=5, reconnect_min_s=0.2, reconnect_max_s=1.0),
        }
    )
    detector = {"type": "onnx", "model": str(fake_model), "threads": 1}
    worker = CameraWorker(cam, settings, detector, DetectorPool(), lambda b: True, SystemClock())
    worker.start()
    try:
        wait_until(lambda: worker.counters.samples >= 5 and worker.state == "ok", 15)
        assert isinstance(worker.source, StreamSource)
        server.stop()  # the camera reboots
        wait_until(lambda: worker.state == "reconnecting", 20)
        assert worker.error is not None
        assert "stream" in worker.error or "cannot open" in worker.error
        samples = worker.counters.samples
        server.start()
        wait_until(lambda: worker.counters.samples > samples + 5, 20)
        assert worker.counters.reconnects >= 1 and worker.state == "ok"
    finally:
        worker.stop()
        server.stop()
