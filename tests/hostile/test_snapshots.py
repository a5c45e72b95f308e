"""Hostile snapshots over the bus: a device's event carries a corrupt JPEG or an image whose
header claims huge dimensions. Each is dead-lettered with its reason; a good event sent right
after still becomes a ticket."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select

from broker import topics
from broker.client import BusClient
from broker.messages import Event
from config.site import Site
from dispatcher.service import Dispatcher
from dispatcher.store.schema import dead_letters, tickets
from tests.conftest import wait_until
from tests.hostile.strategies import TRIED
from tests.hostile.test_api import jpeg, patched_jpeg_size, png_claiming

SNAPSHOTS = {
    "truncated jpeg": jpeg()[:60],
    "garbage after soi": b"\xff\xd8" + bytes(range(256)) * 4,
    "jpeg claiming 65000x65000": patched_jpeg_size(65000, 65000),
    "png claiming 100000x100000": png_claiming(100_000, 100_000),
}


def event_with_snapshot(site: Site, data: bytes, n: int) -> bytes:
    cam = next(c for c in site.cameras if c.id == "cam-05")
    ev = Event(
        event_id=uuid.uuid4(),
        device_id=cam.device,
        source_id=cam.id,
        source_type="camera",
        kind="garbage",
        state="new",
        seq=n,
        ts=datetime.now(UTC),
        track_id=f"t{n}",
        confidence=0.9,
        bbox=(0.4, 0.5, 0.6, 0.8),
        position=cam.position,
    )
    doc = json.loads(ev.to_json())
    doc["snapshot"] = {"jpeg_b64": base64.b64encode(data).decode(), "width": 64, "height": 48}
    return json.dumps(doc).encode()


def count(d: Dispatcher, table: object) -> int:
    with d.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_bad_snapshots_are_dead_lettered_and_good_events_still_count(
    site: Site, make_dispatcher: Callable[..., Dispatcher], device_bus: Callable[..., BusClient]
) -> None:
    d = make_dispatcher()
    edge = device_bus("edge-03")
    edge.start(wait_s=10)
    for n, data in enumerate(SNAPSHOTS.values(), start=1):
        TRIED["bus snapshots"] += 1
        edge.publish(topics.event("edge-03"), event_with_snapshot(site, data, n))
    edge.publish(topics.event("edge-03"), event_with_snapshot(site, jpeg(), 99))
    wait_until(
        lambda: count(d, dead_letters) == len(SNAPSHOTS) and count(d, tickets) == 1, timeout_s=20
    )
    with d.engine.connect() as conn:
        reasons = list(conn.execute(select(dead_letters.c.reason)).scalars())
    assert all(("image" in r or "JPEG" in r or "pixels" in r) for r in reasons), reasons
