"""False alarms kept as hard negatives, on the running dispatcher (real Mosquitto, SQLite store):
each image with the box of the event that carried it, in the YOLO layout the trainer and
``gridwatch evaluate`` read; a folder that cannot be written does not fail the rejection, is
logged, and is written by the next rejection."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from broker import topics
from broker.client import BusClient
from broker.messages import Event
from config.clock import ManualClock
from config.site import Site
from dispatcher.service import Dispatcher
from dispatcher.store.schema import events, tickets
from simulators.devices import synthetic_snapshot
from tests.conftest import wait_until
from tests.dispatcher.factories import camera_event, offset

MORNING = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # 17:00 in Shanghai: the day shift
BOX_CAM1 = (0.40, 0.50, 0.60, 0.80)
BOX_CAM2 = (0.10, 0.20, 0.30, 0.50)


@pytest.fixture
def rig(
    make_dispatcher: Callable[..., Dispatcher], device_bus: Callable[..., BusClient]
) -> Iterator[tuple[Dispatcher, BusClient]]:
    d = make_dispatcher(clock=ManualClock(MORNING))
    edge = device_bus("edge-01")
    edge.start(wait_s=10)
    yield d, edge


def sighting(
    d: Dispatcher,
    site: Site,
    camera: str,
    box: tuple[float, float, float, float],
    north_m: float = 0,
    **kw: Any,
) -> Event:
    """A new track of a garbage pile ``north_m`` north of cam-01, seen by ``camera`` with its
    box and snapshot."""
    cam = site.cameras[0]
    return camera_event(
        site,
        camera,
        d.clock.now(),
        track=f"{camera}-{north_m}",
        position=offset(cam.position.lat, cam.position.lon, north_m=north_m),
        bbox=box,
        snapshot=synthetic_snapshot("garbage", box, 3),
        **kw,
    )


def publish(d: Dispatcher, edge: BusClient, *evs: Event) -> int:
    """Send the events; the id of the one ticket they make, once all are taken in."""
    for ev in evs:
        edge.publish(topics.event(ev.device_id), ev)
    ids = {str(ev.event_id) for ev in evs}

    def taken() -> int | None:
        with d.engine.connect() as conn:
            rows = conn.execute(
                select(events.c.event_id, events.c.incident_id).where(events.c.event_id.in_(ids))
            ).all()
            if len(rows) < len(ids):
                return None
            [incident] = {r.incident_id for r in rows}
            return int(
                conn.execute(
                    select(tickets.c.id).where(tickets.c.incident_id == incident)
                ).scalar_one()
            )

    ticket = wait_until(taken)
    assert isinstance(ticket, int)
    return ticket


def manifest(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (folder / "manifest.jsonl").read_text("utf-8").splitlines()]


def test_a_false_alarm_keeps_each_snapshot_with_its_own_events_box(
    rig: tuple[Dispatcher, BusClient], site: Site
) -> None:
    d, edge = rig
    first = sighting(d, site, "cam-01", BOX_CAM1, model_version="det-a")
    second = sighting(d, site, "cam-02", BOX_CAM2, model_version="det-b", seq=2)
    tid = publish(d, edge, first, second)  # two cameras, one pile: one ticket
    row = d.reject(tid, actor="supervisor:sup-s1", worker_id=None, reason="只是阴影 / a shadow")
    assert row["status"] == "rejected"

    folder = d.settings.state_dir / "hard_negatives" / "garbage"
    doc = yaml.safe_load((folder / "data.yaml").read_text("utf-8"))
    assert doc["names"] == {0: "garbage"} and doc["test"] == doc["train"] == "images"
    lines = {str(x["camera_id"]): x for x in manifest(folder)}
    assert set(lines) == {"cam-01", "cam-02"}
    for ev, box in ((first, BOX_CAM1), (second, BOX_CAM2)):
        line = lines[ev.source_id]
        image = folder / "images" / str(line["image"])
        assert image.read_bytes()[:2] == b"\xff\xd8"
        assert (folder / "labels" / f"{image.stem}.txt").read_text() == ""
        assert line["bbox_xyxy"] == list(box)  # this event's box, not the incident's last one
        assert line["bbox_yolo"] == pytest.approx(
            [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]]
        )
        assert line["event_id"] == str(ev.event_id)
        assert line["model_version"] == ev.model_version
        assert (line["ticket_id"], line["kind"], line["device_id"]) == (tid, "garbage", "edge-01")
        assert line["seen_at"] == ev.ts.isoformat()
        assert line["rejected_at"] == MORNING.isoformat()
        assert line["reason"] == "只是阴影 / a shadow"
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(
        str(x["image"]) for x in lines.values()
    )


def test_a_folder_that_cannot_be_written_does_not_fail_the_rejection_and_is_caught_up(
    rig: tuple[Dispatcher, BusClient], site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    d, edge = rig
    root = d.settings.state_dir / "hard_negatives"
    root.write_text("a file where the folder should be: no folder can be made under it")
    first = publish(d, edge, sighting(d, site, "cam-01", BOX_CAM1, model_version="det-a"))
    with caplog.at_level(logging.ERROR, logger="dispatcher.hard_negatives"):
        row = d.reject(first, actor="supervisor:sup-s1", worker_id=None, reason="误报")
    assert row["status"] == "rejected"
    [record] = [r for r in caplog.records if r.name == "dispatcher.hard_negatives"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert f"hard negatives of ticket {first} not written" in record.getMessage()
    assert record.__dict__["ticket_id"] == first

    root.unlink()  # the folder is writable again: the next rejection writes both tickets'
    second = publish(
        d, edge, sighting(d, site, "cam-01", BOX_CAM2, model_version="det-a", north_m=300, seq=2)
    )
    d.reject(second, actor="supervisor:sup-s1", worker_id=None, reason="误报")
    kept = sorted((x["ticket_id"], x["bbox_xyxy"]) for x in manifest(root / "garbage"))
    assert kept == [(first, list(BOX_CAM1)), (second, list(BOX_CAM2))]
    assert len(list((root / "garbage" / "labels").iterdir())) == 2

    third = publish(d, edge, sighting(d, site, "cam-01", BOX_CAM1, north_m=600, seq=3))
    d.reject(third, actor="supervisor:sup-s1", worker_id=None, reason="误报")
    done = [x["ticket_id"] for x in manifest(root / "garbage")]
    assert sorted(done) == [first, second, third]  # none twice
