"""A sensor alarm the outbox cannot store is not lost: the sensor's state stays as it was, and the
next reading that still crosses the threshold reports the alarm once the outbox can store it.

The agent runs against the real Mosquitto with a real SQLite outbox that really fails: on a
full tmpfs (the fault scenarios' disk, root only), or locked by another writer (anyone)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from broker.mosquitto import MosquittoServer
from config.site import Sensor, Site
from edge.agent import EdgeAgent
from edge.sensors import SensorState, judge_reading, unreported
from edge.settings import load_edge_settings
from tests.conftest import wait_until
from tests.edge.conftest import Listener, ListenerFactory, clear_retained, edge_yaml
from tests.faults.scenarios import CannotMount, fill, small_disk

SENSOR = {
    "id": "tilt-t1",
    "device": "edge-01",
    "kind": "manhole_tilt",
    "measure": "tilt_deg",
    "position": {"lat": 39.9571, "lon": 116.4172},
    "threshold": 15,
    "clear_below": 5,
    "debounce_seconds": 0,
}
TILT_NOW = Sensor.model_validate(SENSOR)
TILT = TILT_NOW.model_copy(update={"debounce_seconds": 10})

# The outbox waits this long for another writer's lock before it gives up (sqlite3's default).
SQLITE_BUSY_S = 5.0


def test_an_unreported_alarm_is_raised_again_by_the_next_crossing_reading() -> None:
    state = SensorState()
    state, action = judge_reading(state, TILT, 18.0, 0.0)
    assert action is None  # crossing, debounce running
    before = state
    state, action = judge_reading(before, TILT, 19.0, 10.0)
    assert action == "new"
    state = unreported(before, 19.0, 10.0)  # the event could not be stored
    assert not state.alarm and state.alarms == 0 and state.value == 19.0
    state, action = judge_reading(state, TILT, 20.0, 11.0)
    assert action == "new" and state.alarm and state.alarms == 1  # at once: debounce was met


def test_an_unreported_alarm_is_dropped_when_the_value_falls_back() -> None:
    before = SensorState()
    state, action = judge_reading(before, TILT_NOW, 20.0, 0.0)
    assert action == "new"
    state = unreported(before, 20.0, 0.0)
    state, action = judge_reading(state, TILT_NOW, 1.0, 1.0)
    assert action is None and not state.alarm and state.crossing_since is None


def test_an_unreported_clear_keeps_the_alarm_until_a_clear_is_stored() -> None:
    alarmed, _ = judge_reading(SensorState(), TILT_NOW, 20.0, 0.0)
    state, action = judge_reading(alarmed, TILT_NOW, 1.0, 1.0)
    assert action == "cleared"
    state = unreported(alarmed, 1.0, 1.0)
    assert state.alarm and state.alarms == 1
    state, action = judge_reading(state, TILT_NOW, 1.0, 2.0)
    assert action == "cleared" and not state.alarm


@contextmanager
def pty_line() -> Iterator[tuple[int, str]]:
    """A serial line: write readings to the first, the agent reads the second."""
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs for the outbox (root only; skipped, saying why, otherwise)."""
    try:
        with small_disk(tmp_path / "disk", "1m") as path:
            yield path
    except CannotMount as exc:
        pytest.skip(str(exc))


@contextmanager
def full_disk(disk: Path) -> Iterator[None]:
    """The outbox's filesystem full to the last byte, freed afterwards."""
    filler = fill(disk, 0)
    try:
        yield
    finally:
        filler.unlink()


@contextmanager
def locked_outbox(path: Path) -> Iterator[None]:
    """Another connection holds the outbox's write lock, released afterwards."""
    other = sqlite3.connect(str(path), isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def new_alarms(listener: Listener) -> list[str | None]:
    return [e.track_id for e in listener.camera_events("tilt-t1") if e.state == "new"]


def sensor_value(agent: EdgeAgent) -> float | None:
    return agent.status().sensors[0].value


def sensor_alarm(agent: EdgeAgent) -> bool:
    return agent.status().sensors[0].alarm


def unstored_errors(agent: EdgeAgent) -> int:
    return sum("event not stored" in e for e in agent.status().errors)


def alarm_while_the_outbox_fails(
    tmp_path: Path,
    site: Site,
    mosquitto: MosquittoServer,
    listener: Listener,
    outbox: Path,
    failing: Callable[[], AbstractContextManager[None]],
    store_timeout_s: float,
) -> None:
    """A reading crosses while ``failing()`` makes the outbox refuse it, a second one after."""
    clear_retained(listener)
    with pty_line() as (master, tty):
        path = edge_yaml(
            tmp_path,
            site,
            mosquitto.port,
            [],
            outbox={"path": str(outbox)},
            sensors=[SENSOR],
            sensor_inputs=[{"type": "serial", "port": tty}],
        )
        agent = EdgeAgent(load_edge_settings(path))
        agent.start()
        try:
            wait_until(lambda: agent.bus is not None and agent.bus.connected, 15)
            os.write(master, b"tilt-t1 1\n")
            wait_until(lambda: sensor_value(agent) == 1.0, 10)
            with failing():
                os.write(master, b"tilt-t1 20\n")  # crosses: its event cannot be stored
                wait_until(lambda: unstored_errors(agent) == 1, store_timeout_s + 10)
                assert sensor_value(agent) == 20.0
                assert not sensor_alarm(agent), "the sensor took an alarm that was not stored"
            os.write(master, b"tilt-t1 21\n")  # still above the threshold; the outbox works
            wait_until(lambda: new_alarms(listener), 15)
            assert sensor_alarm(agent)
            os.write(master, b"tilt-t1 22\n")  # no second alarm: it was reported once
            wait_until(lambda: sensor_value(agent) == 22.0, 10)
            wait_until(lambda: agent.outbox is not None and agent.outbox.depth == 0, 10)
            assert unstored_errors(agent) == 1
        finally:
            agent.stop()
    assert new_alarms(listener) == ["tilt-t1-1"]


def test_an_alarm_raised_while_the_disk_is_full_is_reported_once_space_returns(
    tmp_path: Path, site: Site, mosquitto: MosquittoServer, listen: ListenerFactory, disk: Path
) -> None:
    alarm_while_the_outbox_fails(
        tmp_path,
        site,
        mosquitto,
        listen(),
        disk / "outbox.sqlite",
        lambda: full_disk(disk),
        store_timeout_s=0,
    )


def test_an_alarm_raised_while_the_outbox_is_locked_is_reported_once_it_is_free(
    tmp_path: Path, site: Site, mosquitto: MosquittoServer, listen: ListenerFactory
) -> None:
    outbox = tmp_path / "outbox.sqlite"
    alarm_while_the_outbox_fails(
        tmp_path,
        site,
        mosquitto,
        listen(),
        outbox,
        lambda: locked_outbox(outbox),
        store_timeout_s=SQLITE_BUSY_S,
    )
