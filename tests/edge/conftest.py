"""Edge fixtures: a tiny ONNX detector with known behaviour, image sequences, agent configs and
a bus listener that records what a device publishes."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from broker import topics
from broker.client import BusClient, BusSettings, Delivery
from broker.messages import CommandResult, DeviceStatus, Event
from broker.mosquitto import MosquittoServer
from config.site import Site
from edge.settings import SHIPPED_MODEL
from tests.models.fake_onnx import write_fake_detector

CLASSES = ("garbage", "manhole_missing", "manhole_broken", "manhole_ok")
# The fake detector reports one garbage box whose score is 0.8 times the mean input pixel:
# a bright frame (230) scores about 0.56 (a hit), a black one about 0.16 (below every rule).
FAKE_BOX_INPUT = (120.0, 130.0, 200.0, 190.0)  # in the 320x320 network input
FAKE_BOX = (0.375, 0.33333, 0.625, 0.66667)  # the same on a 640x360 frame, normalised
BRIGHT, DARK = 230, 0
GROUND_PLANE = {
    "image": [[0.05, 0.98], [0.95, 0.98], [0.75, 0.40], [0.25, 0.40]],
    "geo": [
        {"lat": 39.95622, "lon": 116.41644},
        {"lat": 39.95622, "lon": 116.41656},
        {"lat": 39.9564, "lon": 116.4166},
        {"lat": 39.9564, "lon": 116.4164},
    ],
}


@pytest.fixture(scope="session")
def fake_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    return write_fake_detector(
        tmp_path_factory.mktemp("fake-model") / "fake-det.onnx",
        boxes_xyxy=[FAKE_BOX_INPUT],
        scores=[(0.8, 0.0, 0.0, 0.0)],
        classes=CLASSES,
        input_size=320,
        thresholds={c: 0.25 for c in CLASSES},
    )


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    """The model this repository ships (``GW_EDGE_TEST_MODEL`` names another, e.g. a candidate
    being evaluated); tests that need a detector that really sees skip, saying why, until one
    exists."""
    model = Path(os.environ.get("GW_EDGE_TEST_MODEL") or SHIPPED_MODEL)
    if not model.is_file():
        pytest.skip(f"no shipped model at {model} yet")
    return model


def image_sequence(
    folder: Path, present: Sequence[bool], size: tuple[int, int] = (360, 640)
) -> Path:
    """A folder of frames: bright where ``present`` (the fake detector sees its box), else black."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    bright, dark = (
        folder.parent / f"{folder.name}-bright.png",
        folder.parent / f"{folder.name}-dark.png",
    )
    cv2.imwrite(str(bright), np.full((h, w, 3), BRIGHT, np.uint8))
    cv2.imwrite(str(dark), np.full((h, w, 3), DARK, np.uint8))
    for i, p in enumerate(present):
        (folder / f"f{i:05d}.png").symlink_to(bright if p else dark)
    return folder


def camera(cam_id: str, source: Path | str, **extra: Any) -> dict[str, Any]:
    """An inline camera entry for the edge YAML."""
    return {
        "id": cam_id,
        "name": f"test {cam_id}",
        "position": {"lat": 39.9563, "lon": 116.4165},
        "source": str(source),
        "sample_fps": 2,
        "ground_plane": GROUND_PLANE,
        **extra,
    }


def edge_yaml(
    folder: Path,
    site: Site,
    port: int,
    cameras: Sequence[dict[str, Any]] = (),
    device_id: str = "edge-01",
    **extra: Any,
) -> Path:
    """Write an edge YAML for ``device_id`` on the test broker; returns its path."""
    dev = site.device(device_id)
    assert dev is not None
    folder.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "device_id": device_id,
        "broker": {"port": port, "password": dev.password.get_secret_value()},
        "outbox": {"path": str(folder / "outbox.sqlite")},
        "status_interval_s": 1,
        "cameras": list(cameras),
        **extra,
    }
    path = folder / "edge.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Listener:
    """Everything a device publishes, as the dispatcher's account receives it."""

    bus: BusClient
    events: list[Event] = field(default_factory=list)
    statuses: list[DeviceStatus] = field(default_factory=list)
    results: list[CommandResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, d: Delivery) -> None:
        with self.lock:
            self.events.append(Event.from_json(d.payload))

    def on_status(self, d: Delivery) -> None:
        if d.payload:
            with self.lock:
                self.statuses.append(DeviceStatus.from_json(d.payload))

    def on_result(self, d: Delivery) -> None:
        with self.lock:
            self.results.append(CommandResult.from_json(d.payload))

    def camera_events(self, camera_id: str | None = None) -> list[Event]:
        with self.lock:
            return [e for e in self.events if camera_id is None or e.source_id == camera_id]

    def last_status(self) -> DeviceStatus | None:
        with self.lock:
            return self.statuses[-1] if self.statuses else None

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        done = self.bus.publish(topic, payload, retain=retain)
        for _ in range(200):
            if done.done():
                return
            threading.Event().wait(0.025)


ListenerFactory = Callable[..., Listener]


@pytest.fixture
def listen(site: Site, mosquitto: MosquittoServer) -> Iterator[ListenerFactory]:
    """Subscribe (as the dispatcher account) to a device's events, status and results."""
    made: list[Listener] = []

    def make(device_id: str = "edge-01", *, persistent: bool = False) -> Listener:
        bus = BusClient(
            BusSettings(
                client_id=f"t-listen-{device_id}-{uuid.uuid4().hex[:6]}",
                port=mosquitto.port,
                username="dispatcher",
                password=site.broker.dispatcher_password.get_secret_value(),
                clean_start=not persistent,
                session_expiry_s=24 * 3600 if persistent else 0,
            )
        )
        listener = Listener(bus)
        bus.subscribe(topics.event(device_id), listener.on_event)
        bus.subscribe(topics.status(device_id), listener.on_status)
        bus.subscribe(topics.command_result(device_id), listener.on_result)
        bus.start(wait_s=10)
        made.append(listener)
        return listener

    yield make
    for listener in made:
        # A session left behind would keep a subscription to the events (restored when the
        # broker restarts) and make a restarted broker's "No matching subscribers" a success.
        listener.bus.stop(end_session=True)


def clear_retained(listener: Listener, device_id: str = "edge-01") -> None:
    """Remove a retained config left by another test."""
    listener.publish(topics.device_config(device_id), b"", retain=True)


def dump(obj: object) -> str:
    return json.dumps(obj, default=str)
