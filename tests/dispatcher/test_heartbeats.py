"""Late heartbeats: one sent before the newest already taken from the same agent run is ignored
(the pure rule, then the dispatcher's status handler on a real bus); a heartbeat from a new run
or a clock that was set is always taken, so a device's clock offset can still be learnt. A
malformed or misaddressed status is dead-lettered; status messages are stored off the bus's
network thread and acknowledged once stored."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from broker import topics
from broker.client import BusClient, Delivery
from broker.messages import DeviceStatus
from dispatcher.service import Dispatcher, heartbeat_is_stale
from dispatcher.store.schema import dead_letters, devices
from tests.conftest import wait_until
from tests.dispatcher.factories import refusing_writes

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def beat(ts: datetime, uptime_s: float, device_id: str = "edge-03") -> DeviceStatus:
    return DeviceStatus(device_id=device_id, online=True, ts=ts, uptime_s=uptime_s)


def after(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_first_heartbeat_is_taken() -> None:
    assert not heartbeat_is_stale(beat(T0, 30), None)


def test_a_heartbeat_sent_before_the_newest_of_the_same_run_is_stale() -> None:
    newest = beat(after(60), 90)
    assert heartbeat_is_stale(beat(after(30), 60), newest)
    assert heartbeat_is_stale(beat(after(59.6), 89.5), newest)  # the times round apart a little


def test_the_newest_itself_and_later_ones_are_taken() -> None:
    newest = beat(after(60), 90)
    assert not heartbeat_is_stale(beat(after(60), 90), newest)  # the retained copy of it
    assert not heartbeat_is_stale(beat(after(75), 105), newest)


def test_a_restarted_agent_is_taken_whatever_its_clock_says() -> None:
    newest = beat(after(60), 90)
    assert not heartbeat_is_stale(beat(after(65), 2), newest)  # restarted, clock right
    assert not heartbeat_is_stale(beat(datetime(1970, 1, 1, tzinfo=UTC), 2), newest)  # RTC lost


def test_a_clock_set_back_within_a_run_is_taken() -> None:
    newest = beat(after(60), 90)
    assert not heartbeat_is_stale(beat(after(60 - 3600 + 15), 105), newest)


def test_without_uptimes_only_identical_heartbeats_compare() -> None:
    newest = beat(after(60), 0)
    assert not heartbeat_is_stale(beat(after(30), 0), newest)


def device_row(dispatcher: Dispatcher, device_id: str) -> dict[str, Any] | None:
    with dispatcher.engine.connect() as conn:
        row = conn.execute(select(devices).where(devices.c.device_id == device_id)).mappings()
        found = row.one_or_none()
    return dict(found) if found is not None else None


def uptime_in_store(dispatcher: Dispatcher, device_id: str) -> float | None:
    row = device_row(dispatcher, device_id)
    return None if row is None else float(row["status"]["uptime_s"])


def test_the_dispatcher_ignores_a_late_heartbeat_and_takes_a_restart(
    make_dispatcher: Callable[..., Dispatcher],
    device_bus: Callable[..., BusClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dispatcher.service")
    dispatcher = make_dispatcher()
    device = device_bus("edge-03")
    device.start(wait_s=10)
    topic = topics.status("edge-03")
    now = datetime.now(UTC)
    device.publish(topic, beat(now, 100))
    device.publish(topic, beat(now - timedelta(seconds=5), 95))  # same run, sent earlier
    wait_until(lambda: "late heartbeat from edge-03" in caplog.text, 10)
    assert uptime_in_store(dispatcher, "edge-03") == 100
    offset = dispatcher.intake.clock_offsets["edge-03"]
    assert abs(offset) < 5  # from the one heartbeat taken; the late one would add -5 s

    restarted = now - timedelta(hours=1)  # the agent restarted with its clock an hour behind
    time.sleep(0.1)
    device.publish(topic, beat(restarted, 1))
    wait_until(lambda: uptime_in_store(dispatcher, "edge-03") == 1, 10)
    assert dispatcher.intake.clock_offsets["edge-03"] == pytest.approx(-3600, abs=5)


def dead_letter_reasons(dispatcher: Dispatcher) -> list[str]:
    with dispatcher.engine.connect() as conn:
        return list(
            conn.execute(select(dead_letters.c.reason).order_by(dead_letters.c.id)).scalars()
        )


def test_malformed_and_misaddressed_status_messages_are_dead_lettered(
    make_dispatcher: Callable[..., Dispatcher], device_bus: Callable[..., BusClient]
) -> None:
    dispatcher = make_dispatcher()
    device = device_bus("edge-03")
    device.start(wait_s=10)
    topic = topics.status("edge-03")
    device.publish(topic, b'{"schema": "gw.status", "v": 1, "device_id": "edge-03"}')
    device.publish(topic, beat(datetime.now(UTC), 20, device_id="edge-04"))  # another's name
    device.publish(topic, beat(datetime.now(UTC), 30))
    wait_until(lambda: uptime_in_store(dispatcher, "edge-03") == 30, 10)
    wait_until(lambda: len(dead_letter_reasons(dispatcher)) == 2, 10)
    malformed, misaddressed = dead_letter_reasons(dispatcher)
    assert "online" in malformed  # names the field it lacks
    assert misaddressed == "device_id 'edge-04' does not match topic device 'edge-03'"
    assert device_row(dispatcher, "edge-04") is None
    with dispatcher.engine.connect() as conn:
        [(topic_of, device_of)] = conn.execute(
            select(dead_letters.c.topic, dead_letters.c.device_id).where(
                dead_letters.c.reason == misaddressed
            )
        ).all()
    assert (topic_of, device_of) == (topic, "edge-03")


@contextmanager
def write_lock(dispatcher: Dispatcher) -> Iterator[None]:
    """Another process holds the SQLite ticket store's write lock until the block ends."""
    other = sqlite3.connect(dispatcher.settings.state_dir / "dispatcher.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_device_messages_wait_for_the_store_off_the_network_thread(
    make_dispatcher: Callable[..., Dispatcher], device_bus: Callable[..., BusClient]
) -> None:
    """While the store's write lock is taken, status messages wait on their own thread: the
    bus's network thread keeps receiving them, and each is acknowledged only once stored."""
    dispatcher = make_dispatcher()
    device = device_bus("edge-03")
    device.start(wait_s=10)
    acked = threading.Event()
    now = datetime.now(UTC)
    direct = Delivery(
        topics.status("edge-04"), beat(now, 7, "edge-04").to_json(), 1, False, 1, acked.set
    )
    with write_lock(dispatcher):
        started = time.monotonic()
        dispatcher._on_status(direct)  # as the bus hands it over, on its network thread
        assert time.monotonic() - started < 0.5
        for n in range(3):  # one agent run, one heartbeat a second
            device.publish(topics.status("edge-03"), beat(now + timedelta(seconds=n), 50 + n))
        wait_until(lambda: dispatcher.device_backlog() >= 3, 10)  # received, waiting
        assert not acked.wait(1)
        assert device_row(dispatcher, "edge-04") is None
    assert acked.wait(20)
    assert uptime_in_store(dispatcher, "edge-04") == 7
    wait_until(lambda: uptime_in_store(dispatcher, "edge-03") == 52, 10)
    assert dispatcher.device_backlog() == 0


def test_a_status_waits_unacknowledged_while_the_store_refuses_writes(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    """A store that refuses writes (a full disk) is not the message's fault: it is not
    dead-lettered, and it is stored and acknowledged once the store takes writes again."""
    dispatcher = make_dispatcher()
    acked = threading.Event()
    beat_now = beat(datetime.now(UTC), 9, "edge-04")
    with refusing_writes(dispatcher.engine):
        dispatcher._on_status(
            Delivery(topics.status("edge-04"), beat_now.to_json(), 1, False, 1, acked.set)
        )
        assert not acked.wait(2)
    assert acked.wait(40)
    assert uptime_in_store(dispatcher, "edge-04") == 9
    assert dead_letter_reasons(dispatcher) == []
