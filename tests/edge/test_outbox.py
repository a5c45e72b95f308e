"""The SQLite outbox on its own: sequence numbers, order, persistence, bounds and eviction."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from broker import topics
from broker.messages import Event
from config.clock import ManualClock
from edge.outbox import Outbox
from edge.settings import OutboxSettings

TOPIC = topics.event("edge-01")


def event_builder(
    clock: ManualClock, kind: str = "garbage", state: str = "new"
) -> Callable[[int], Event]:
    def build(seq: int) -> Event:
        return Event(
            event_id=uuid.uuid4(),
            device_id="edge-01",
            source_id="cam-01",
            source_type="camera",
            kind=kind,
            state=state,
            seq=seq,
            ts=clock.now(),
            track_id="t1",
            confidence=0.8,
            bbox=(0.1, 0.1, 0.2, 0.2),
        )

    return build


def test_sequence_numbers_order_and_survive_a_reopen(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "o.sqlite"
    box = Outbox(path, OutboxSettings(), clock)
    first = [box.add_event(TOPIC, event_builder(clock)) for _ in range(3)]
    assert [e.seq for e in first] == [1, 2, 3]
    rows = box.after(0, 10)
    assert [r.event_id for r in rows] == [str(e.event_id) for e in first]
    assert box.remove([rows[0].id, rows[0].id]) == 1
    box.close()  # like a crash after the commit: nothing in memory matters
    again = Outbox(path, OutboxSettings(), clock)
    assert again.depth == 2
    assert [r.event_id for r in again.after(0, 10)] == [str(e.event_id) for e in first[1:]]
    assert again.add_event(TOPIC, event_builder(clock)).seq == 4
    again.close()


def test_a_failing_builder_stores_nothing_and_uses_no_number(tmp_path: Path) -> None:
    clock = ManualClock()
    box = Outbox(tmp_path / "o.sqlite", OutboxSettings(), clock)

    def broken(seq: int) -> Event:
        raise ValueError("bad event")

    with pytest.raises(ValueError, match="bad event"):
        box.add_event(TOPIC, broken)
    assert box.depth == 0
    assert box.add_event(TOPIC, event_builder(clock)).seq == 1


def test_eviction_goes_by_rank_and_keeps_safety_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    box = Outbox(tmp_path / "o.sqlite", OutboxSettings(max_messages=10), clock)
    safety = [
        box.add_event(TOPIC, event_builder(clock, "manhole_missing", "new")) for _ in range(4)
    ]
    news = [box.add_event(TOPIC, event_builder(clock, "garbage", "new")) for _ in range(3)]
    cleared = [box.add_event(TOPIC, event_builder(clock, "garbage", "cleared")) for _ in range(2)]
    box.add_event(TOPIC, event_builder(clock, "garbage", "update"))
    assert box.depth == 10 and box.evicted == 0
    # four more safety events: the update goes first, then cleared, then the oldest new
    for _ in range(4):
        safety.append(box.add_event(TOPIC, event_builder(clock, "manhole_missing", "new")))
    kept = {r.event_id for r in box.after(0, 100)}
    assert box.depth == 10 and box.evicted == 4
    assert all(str(e.event_id) in kept for e in safety)
    assert not any(str(e.event_id) in kept for e in cleared)
    assert [str(e.event_id) in kept for e in news] == [False, True, True]
    assert "outbox evicted update garbage event" in caplog.text
    # only safety events left: then the oldest of those goes, logged as an error
    for _ in range(3):
        box.add_event(TOPIC, event_builder(clock, "manhole_missing", "new"))
    kept = {r.event_id for r in box.after(0, 100)}
    assert str(safety[0].event_id) not in kept
    assert any(
        r.levelname == "ERROR" and "manhole_missing" in r.getMessage() for r in caplog.records
    )


def test_age_bound_spares_safety_events(tmp_path: Path) -> None:
    clock = ManualClock()
    box = Outbox(tmp_path / "o.sqlite", OutboxSettings(max_age_hours=1), clock)
    old_safety = box.add_event(TOPIC, event_builder(clock, "manhole_missing", "new"))
    box.add_event(TOPIC, event_builder(clock, "garbage", "new"))
    clock.advance(hours=2)
    fresh = box.add_event(TOPIC, event_builder(clock, "garbage", "new"))
    assert {r.event_id for r in box.after(0, 10)} == {str(old_safety.event_id), str(fresh.event_id)}


def test_byte_bound(tmp_path: Path) -> None:
    clock = ManualClock()
    box = Outbox(tmp_path / "o.sqlite", OutboxSettings(max_bytes=1024 * 1024), clock)
    big = b"x" * 300_000
    for _ in range(5):
        box.add(topics.command_result("edge-01"), big)
    assert box.size_bytes <= 1024 * 1024 and box.depth == 3 and box.evicted == 2


def test_acknowledged_rows_wait_to_be_sent_again_in_their_old_places(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "o.sqlite"
    box = Outbox(path, OutboxSettings(), clock)
    events = [box.add_event(TOPIC, event_builder(clock)) for _ in range(4)]
    rows = box.after(0, 10)
    assert box.acknowledge([rows[0].id, rows[1].id]) == 2
    clock.advance(seconds=10)
    assert box.acknowledge([rows[2].id, rows[2].id]) == 1
    assert box.depth == 1 and box.kept_acknowledged == 3
    assert box.newest_acknowledgement() == clock.now().timestamp()
    box.close()  # kept across a restart of the agent
    box = Outbox(path, OutboxSettings(), clock)
    assert box.replay(clock.now().timestamp() - 5) == [rows[2].id]
    assert [r.event_id for r in box.after(0, 10)] == [str(e.event_id) for e in events[2:]]
    assert box.depth == 2 and box.kept_acknowledged == 2
    assert box.purge_acknowledged(clock.now().timestamp() - 5) == 2
    assert box.purge_acknowledged(clock.now().timestamp()) == 0
    assert box.kept_acknowledged == 0 and box.replay(0) == []
    box.close()
