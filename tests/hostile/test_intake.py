"""Hostile deliveries through the dispatcher's intake on a real SQLite store.

Valid events of the sample site's devices with one field broken (including values that parse
but are implausible: year 1 with a +14:00 offset, far-future times, positions at the poles),
on their own or in a batch with a good event. Every delivery must be acknowledged and end as
a stored event or a dead letter with a reason; no reason may be an internal error (an
unhandled case); the good event in the same batch is always stored.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from broker import topics
from broker.client import Delivery
from broker.messages import Event
from config.site import Site
from dispatcher.store.schema import dead_letters, events, tickets
from tests.conftest import wait_until
from tests.dispatcher.factories import Desk
from tests.hostile.strategies import NASTY_STRINGS, TRIED, fuzz, json_values, mutated_doc

CAM = {
    "event_id": str(uuid.UUID(int=7)),
    "device_id": "edge-01",
    "source_id": "cam-01",
    "source_type": "camera",
    "kind": "garbage",
    "state": "new",
    "seq": 1,
    "ts": "2026-01-05T09:00:00Z",
    "track_id": "t1",
    "confidence": 0.8,
    "bbox": [0.1, 0.2, 0.3, 0.4],
    "position": {"lat": 39.9562, "lon": 116.4165},
    "schema": "gw.event",
    "v": 1,
}
IMPLAUSIBLE: list[tuple[str, Any]] = [
    ("ts", "0001-01-01T00:00:00+14:00"),
    ("ts", "9999-12-31T23:59:59-14:00"),
    ("ts", "1970-01-01T00:00:00Z"),
    ("first_seen", "0001-01-01T00:00:00+14:00"),
    ("position", {"lat": 90.0, "lon": 180.0}),
    ("position", {"lat": -90.0, "lon": -180.0}),
    ("seq", 2**63),
    ("seq", 2**70),
    ("kind", "manhole_tilt"),
    ("source_id", "cam-99"),
    ("source_type", "sensor"),
    ("track_id", "x" * 64),
    ("reading", 1e308),
    ("state", "cleared"),
]


@pytest.fixture(scope="module")
def desk(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Desk:
    return Desk(site, Path(tmp_path_factory.mktemp("hostile-intake")))


def good_event(desk: Desk) -> Event:
    cam = next(c for c in desk.site.cameras if c.id == "cam-03")
    return Event(
        event_id=uuid.uuid4(),
        device_id=cam.device,
        source_id=cam.id,
        source_type="camera",
        kind="garbage",
        state="new",
        seq=1,
        ts=desk.clock.now(),
        track_id=uuid.uuid4().hex[:8],
        confidence=0.9,
        position=cam.position,
    )


def counts(desk: Desk) -> tuple[int, int]:
    with desk.engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(events)).scalar_one(),
            conn.execute(select(func.count()).select_from(dead_letters)).scalar_one(),
        )


def feed(desk: Desk, payload: bytes, topic: str) -> None:
    """One hostile delivery followed by a good one in the same batch; check both outcomes."""
    TRIED["intake deliveries"] += 1
    good = good_event(desk)
    acked_before = len(desk.acked)
    stored_before, dead_before = counts(desk)
    batch = []
    for i, (t, p) in enumerate(((topic, payload), (topics.event(good.device_id), good.to_json()))):
        mid = len(desk.acked) * 1000 + i
        batch.append(Delivery(t, p, 1, False, mid, lambda m=mid: desk.acked.append(m)))
    desk.intake.process(batch)
    assert len(desk.acked) == acked_before + 2, "every delivery is acknowledged"
    stored, dead = counts(desk)
    assert (stored - stored_before) + (dead - dead_before) == 2, "stored or dead-lettered"
    with desk.engine.connect() as conn:
        assert (
            conn.execute(
                select(func.count())
                .select_from(events)
                .where(events.c.event_id == str(good.event_id))
            ).scalar_one()
            == 1
        ), "the good event in the batch is stored"
        reasons = list(
            conn.execute(
                select(dead_letters.c.reason).where(dead_letters.c.id > dead_before)
            ).scalars()
        )
    assert not [r for r in reasons if r.startswith("internal error")], reasons


@pytest.mark.parametrize(
    ("field", "value"), IMPLAUSIBLE, ids=[f"{f}={str(v)[:20]}" for f, v in IMPLAUSIBLE]
)
def test_implausible_but_parseable_events(desk: Desk, field: str, value: Any) -> None:
    doc = dict(CAM, event_id=str(uuid.uuid4()), **{field: value})
    feed(desk, json.dumps(doc).encode(), topics.event("edge-01"))


@fuzz(60)
@given(mutated_doc(CAM))
def test_camera_event_with_one_thing_broken(desk: Desk, case: tuple[dict[str, Any], str]) -> None:
    doc, _where = case
    doc = dict(doc, event_id=str(uuid.uuid4())) if isinstance(doc.get("event_id"), str) else doc
    feed(desk, json.dumps(doc).encode(), topics.event("edge-01"))


@fuzz(40)
@given(
    st.sampled_from(
        [
            topics.event("edge-01"),
            topics.event("edge-02"),
            topics.event("node-01"),
            "gw/v1/edge/edge-01/status",
            "gw/v1/edge/ghost/event",
            "gw/v1/x",
        ]
    ),
    json_values | st.sampled_from(NASTY_STRINGS),
)
def test_any_json_on_any_topic(desk: Desk, topic: str, doc: Any) -> None:
    feed(desk, json.dumps(doc).encode(), topic)


def test_a_device_clock_reset_to_1970_is_filed_at_receive_time(desk: Desk) -> None:
    TRIED["intake deliveries"] += 1
    doc = dict(
        CAM,
        event_id=str(uuid.uuid4()),
        ts="1970-01-01T00:00:05Z",
        track_id="rtc-reset",
        position={"lat": 39.9575, "lon": 116.4190},
    )
    feed(desk, json.dumps(doc).encode(), topics.event("edge-01"))
    with desk.engine.connect() as conn:
        row = conn.execute(
            select(events.c.ts, events.c.ts_source, events.c.device_ts, events.c.incident_id).where(
                events.c.event_id == doc["event_id"]
            )
        ).one()
        opened_at = conn.execute(
            select(tickets.c.opened_at).where(tickets.c.incident_id == row.incident_id)
        ).scalar_one()
    assert (row.ts_source, row.ts) == ("received", desk.clock.now()), row
    assert row.device_ts.year == 1970  # the device's own time is kept
    assert opened_at == desk.clock.now()  # the ticket's SLA starts now, not in 1970


def poison(engine: Engine, table: str, when: str, message: str) -> None:
    """Make the real store refuse some rows of ``table`` (an SQLite trigger: an error no code
    path foresees, not a store outage)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TRIGGER poison_{table} BEFORE INSERT ON {table} WHEN {when} "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
        )


def run_intake(desk: Desk, deliveries: list[tuple[str, bytes]]) -> None:
    """Queue the deliveries, then let the intake's own thread take them (as one batch) until
    every one is acknowledged."""
    for i, (topic, payload) in enumerate(deliveries):
        desk.intake.submit(Delivery(topic, payload, 1, False, i, lambda m=i: desk.acked.append(m)))
    with desk.running():
        wait_until(lambda: len(desk.acked) == len(deliveries), timeout_s=15)


def test_an_event_the_store_refuses_is_dead_lettered_and_the_stream_goes_on(
    site: Site, tmp_path: Path
) -> None:
    desk = Desk(site, tmp_path)
    first, bad, last = good_event(desk), good_event(desk), good_event(desk)
    poison(desk.engine, "events", f"NEW.event_id = '{bad.event_id}'", "poisoned event")
    run_intake(desk, [(topics.event(e.device_id), e.to_json()) for e in (first, bad, last)])
    with desk.engine.connect() as conn:
        stored = set(conn.execute(select(events.c.event_id)).scalars())
        [reason] = conn.execute(select(dead_letters.c.reason)).scalars()
    assert stored == {str(first.event_id), str(last.event_id)}
    assert "IntegrityError" in reason and "poisoned event" in reason, reason
    [ticket] = desk.tickets()  # one pile, seen three times by one camera
    assert desk.incident(ticket["incident_id"])["events"] == 2  # the bad sighting rolled back
    assert desk.intake.stats.dead_letters == 1 and desk.intake.stats.tickets_opened == 1


def test_a_dead_letter_the_store_refuses_does_not_block_the_batch(
    site: Site, tmp_path: Path
) -> None:
    """The batch fails outside any one event's savepoint (writing a known rejection's dead
    letter): each event is redone in a transaction of its own."""
    desk = Desk(site, tmp_path)
    first, last = good_event(desk), good_event(desk)
    poison(desk.engine, "dead_letters", "NEW.reason NOT LIKE 'internal error:%'", "no room")
    topic = topics.event(first.device_id)
    run_intake(desk, [(topic, first.to_json()), (topic, b"{not json"), (topic, last.to_json())])
    with desk.engine.connect() as conn:
        stored = set(conn.execute(select(events.c.event_id)).scalars())
        [reason] = conn.execute(select(dead_letters.c.reason)).scalars()
    assert stored == {str(first.event_id), str(last.event_id)}
    assert reason.startswith("internal error: IntegrityError") and "no room" in reason, reason
    assert "refused before that: " in reason  # and why it was refused in the first place
