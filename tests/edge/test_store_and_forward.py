"""Store-and-forward against a real Mosquitto that goes away: a 30 s broker outage mid-run, and
the agent killed with SIGKILL and restarted. Events come from a sensor on a real pty."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker.mosquitto import MosquittoServer
from config.site import Site
from edge.agent import EdgeAgent
from edge.settings import load_edge_settings
from tests.conftest import wait_until
from tests.edge.conftest import ListenerFactory, clear_retained, edge_yaml

OUTAGE_S = 30
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


@contextmanager
def pty_line() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def outbox_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def sensor_yaml(tmp_path: Path, site: Site, port: int, tty: str) -> Path:
    return edge_yaml(tmp_path, site, port, [], sensors=[SENSOR],
                     sensor_inputs=[{"type": "serial", "port": tty}])


@pytest.mark.slow
def test_broker_outage_every_event_arrives_in_order_none_twice_at_the_dispatcher(
    tmp_path: Path, site: Site, mosquitto: MosquittoServer, listen: ListenerFactory,
    make_dispatcher: Callable[..., object],
) -> None:
    from dispatcher.store.schema import events

    dispatcher = make_dispatcher()
    listener = listen(persistent=True)
    clear_retained(listener)
    stop_writing = threading.Event()
    with pty_line() as (master, tty):
        agent = EdgeAgent(load_edge_settings(sensor_yaml(tmp_path, site, mosquitto.port, tty)))
        agent.start()

        def write_readings() -> None:
            high = True
            while not stop_writing.wait(0.2):  # each reading crosses: new, cleared, new, ...
                os.write(master, b"tilt-t1 20\n" if high else b"tilt-t1 1\n")
                high = not high

        writer = threading.Thread(target=write_readings, daemon=True)
        try:
            assert agent.bus is not None
            wait_until(lambda: agent.bus is not None and agent.bus.connected, 15)
            writer.start()
            wait_until(lambda: len(listener.events) >= 10, 15)
            mosquitto.stop()
            time.sleep(OUTAGE_S)
            assert agent.outbox is not None and agent.outbox.depth >= 100  # held while away
            mosquitto.start()
            time.sleep(3)
            stop_writing.set()
            writer.join()
            assert agent.outbox is not None
            time.sleep(0.5)  # the last readings still in the line
            wait_until(lambda: agent.outbox is not None and agent.outbox.depth == 0
                       and agent.publisher is not None and agent.publisher.in_flight == 0, 60)
        finally:
            stop_writing.set()
            agent.stop()
    last_seq = max(e.seq for e in listener.events)
    assert {e.seq for e in listener.events} == set(range(1, last_seq + 1))
    first_seen: list[int] = []
    for e in listener.events:
        if e.seq not in first_seen:
            first_seen.append(e.seq)
    assert first_seen == sorted(first_seen), "events arrived out of order"
    duplicates = len(listener.events) - len(first_seen)
    assert duplicates <= 20  # at most one window re-sent after the reconnect
    ids = {str(e.event_id) for e in listener.events}

    def stored() -> tuple[int, int]:
        with dispatcher.engine.connect() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                select(func.count(), func.count(events.c.event_id.distinct()))
                .where(events.c.event_id.in_(ids))
            ).one()
            return int(rows[0]), int(rows[1])

    deadline = time.monotonic() + 60
    while stored() != (len(ids), len(ids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if stored() != (len(ids), len(ids)):
        with dispatcher.engine.connect() as conn:  # type: ignore[attr-defined]
            got = {r[0] for r in conn.execute(select(events.c.event_id))}
        missing = sorted(e.seq for e in listener.events if str(e.event_id) not in got)
        pytest.fail(f"dispatcher stored {stored()} of {len(ids)} events; missing seqs {missing}")
    assert len(ids) == last_seq


@pytest.mark.slow
def test_sigkill_keeps_unacknowledged_events_and_the_last_will_marks_offline(
    tmp_path: Path, site: Site, mosquitto: MosquittoServer, listen: ListenerFactory,
) -> None:
    listener = listen(persistent=True)
    clear_retained(listener)
    env = {**os.environ, "GW_LOG_FORMAT": "console", "PYTHONUNBUFFERED": "1"}
    log_file = (tmp_path / "agent.log").open("ab")

    def start_agent(path: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "simulators.cli", "edge", "run", str(path)],
                                env=env, stdout=log_file, stderr=subprocess.STDOUT)

    with pty_line() as (master, tty):
        path = sensor_yaml(tmp_path, site, mosquitto.port, tty)
        outbox = tmp_path / "outbox.sqlite"
        proc = start_agent(path)
        try:
            wait_until(lambda: any(s.online for s in listener.statuses), 30)
            mosquitto.stop()
            for i in range(10):
                os.write(master, b"tilt-t1 20\n" if i % 2 == 0 else b"tilt-t1 1\n")
                time.sleep(0.1)
            wait_until(lambda: outbox_rows(outbox) == 10, 15)
            proc.kill()
            proc.wait(10)
            mosquitto.start()
            proc = start_agent(path)
            wait_until(lambda: {e.seq for e in listener.events} >= set(range(1, 11)), 60)
            wait_until(lambda: outbox_rows(outbox) == 0, 15)
            states = [e.state for e in sorted(listener.events, key=lambda e: e.seq)]
            assert states[:10] == ["new", "cleared"] * 5
            n_status = len(listener.statuses)
            wait_until(lambda: listener.statuses[n_status:]
                       and listener.statuses[-1].online, 15)
            proc.kill()  # no clean goodbye: the broker publishes the last will
            proc.wait(10)
            wait_until(lambda: not listener.statuses[-1].online, 15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log_file.close()
