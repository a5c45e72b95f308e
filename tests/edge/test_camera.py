"""One camera's pipeline driven frame by frame (no thread, no source): gate, forced checks while
a track is pending, events handed to ``emit``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from broker.messages import Event
from config.clock import ManualClock
from edge.camera import CameraWorker, DetectorPool, EventBuilder
from edge.settings import EdgeCamera, EdgeSettings
from edge.sources import Frame
from tests.edge.conftest import BRIGHT, DARK, camera

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def worker_for(fake_model: Path, **tracking: float) -> tuple[CameraWorker, list[Event]]:
    settings = EdgeSettings.model_validate(
        {
            "device_id": "edge-01",
            "broker": {"password": "x"},
            "tracking": tracking,
            "classes": {"garbage": {"confirm_seconds": 10, "clear_seconds": 20}},
        }
    )
    cam = EdgeCamera.model_validate({"device": "edge-01", **camera("cam-01", "unused.mp4")})
    events: list[Event] = []

    def emit(build: EventBuilder) -> None:
        events.append(build(len(events) + 1))

    det = {"type": "onnx", "model": str(fake_model), "threads": 1, "conf": 0.2}
    return CameraWorker(cam, settings, det, DetectorPool(), emit, ManualClock(T0)), events


def feed(worker: CameraWorker, present: list[bool], fps: float = 2) -> None:
    for i, p in enumerate(present):
        image = np.full((360, 640, 3), BRIGHT if p else DARK, np.uint8)
        t = i / fps
        worker.process(Frame(image, t, T0 + timedelta(seconds=t), i))


@pytest.mark.parametrize(("interval", "expected_checks"), [(0, 63), (2.0, 18)])
def test_pending_tracks_force_checks_at_most_as_often_as_configured(
    fake_model: Path, interval: float, expected_checks: int
) -> None:
    worker, events = worker_for(fake_model, pending_check_interval_s=interval)
    present = [5 <= i / 2 < 30 for i in range(120)]  # 60 s; a pile from 5 s to 30 s
    feed(worker, present)
    assert [e.state for e in events] == ["new", "cleared"]
    assert worker.counters.samples == 120
    # every sample while the pile waits to be confirmed (10 s) or cleared (20 s), or one per
    # interval; plus the first frame, the two changes and the periodic checks of a still scene
    assert worker.counters.checks == expected_checks
    new, cleared = events
    assert (new.ts - T0).total_seconds() == pytest.approx(15.0, abs=interval)
    assert (cleared.ts - T0).total_seconds() == pytest.approx(50.0, abs=interval)
    assert new.snapshot is not None and cleared.snapshot is None
