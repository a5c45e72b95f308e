"""One camera's pipeline driven frame by frame (no thread, no source): gate, forced checks while
a track is pending, events handed to ``emit``; an event the agent's outbox cannot store is
decided again by the next check."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from broker.messages import Event
from broker.mosquitto import free_port
from config.clock import ManualClock
from config.site import Site
from edge.agent import EdgeAgent
from edge.camera import CameraWorker, DetectorPool, Emit, EventBuilder
from edge.settings import EdgeCamera, EdgeSettings, load_edge_settings
from edge.sources import Frame
from tests.edge.conftest import BRIGHT, DARK, camera, edge_yaml
from tests.edge.test_unstored_alarm import locked_outbox

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


RULES = {"garbage": {"confirm_seconds": 10, "clear_seconds": 20}}


def camera_worker(fake_model: Path, settings: EdgeSettings, emit: Emit) -> CameraWorker:
    cam = EdgeCamera.model_validate({"device": "edge-01", **camera("cam-01", "unused.mp4")})
    det = {"type": "onnx", "model": str(fake_model), "threads": 1, "conf": 0.2}
    return CameraWorker(cam, settings, det, DetectorPool(), emit, ManualClock(T0))


def worker_for(fake_model: Path, **tracking: float) -> tuple[CameraWorker, list[Event]]:
    settings = EdgeSettings.model_validate(
        {
            "device_id": "edge-01",
            "broker": {"password": "x"},
            "tracking": tracking,
            "classes": RULES,
        }
    )
    events: list[Event] = []

    def emit(build: EventBuilder) -> bool:
        events.append(build(len(events) + 1))
        return True

    return camera_worker(fake_model, settings, emit), events


def feed(
    worker: CameraWorker,
    present: list[bool],
    fps: float = 2,
    around: Callable[[float], AbstractContextManager[None]] = lambda _t: nullcontext(),
) -> None:
    """Frames at ``fps``, bright where ``present``, each processed inside ``around(t)``."""
    for i, p in enumerate(present):
        image = np.full((360, 640, 3), BRIGHT if p else DARK, np.uint8)
        t = i / fps
        with around(t):
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


def test_a_new_and_a_cleared_the_outbox_cannot_store_are_stored_at_the_next_check(
    tmp_path: Path, site: Site, fake_model: Path
) -> None:
    """The agent's own outbox, locked by another writer while the camera decides ``new`` (at
    15 s) and ``cleared`` (at 50 s): each is stored at the next check, once, and the track's
    state did not move on meanwhile."""
    path = edge_yaml(tmp_path, site, free_port(), [], classes=RULES)
    agent = EdgeAgent(load_edge_settings(path))  # not started: no connection, no cameras
    assert agent.outbox is not None
    outbox = agent.outbox
    # The worker stores through the agent, as the cameras the agent runs do.
    worker = camera_worker(fake_model, agent.settings, agent._emit)
    present = [5 <= i / 2 < 30 for i in range(120)]  # a pile from 5 s to 30 s
    try:
        feed(
            worker,
            present,
            around=lambda t: locked_outbox(outbox.path) if t in (15.0, 50.0) else nullcontext(),
        )
        rows = outbox.after(0, 100)
        events = [Event.from_json(r.payload) for r in rows]
        assert [(e.state, (e.ts - T0).total_seconds()) for e in events] == [
            ("new", 15.5),
            ("cleared", 50.5),
        ]
        assert events[0].track_id == events[1].track_id
        assert events[0].snapshot is not None
        assert sum("event not stored" in e for e in agent.status().errors) == 2
        assert worker.counters.events == 2 and worker.tracker.tracks == {}
    finally:
        outbox.close()
