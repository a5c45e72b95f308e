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
from sqlalchemy import text

from broker import topics
from broker.client import BusClient, BusSettings
from broker.messages import Event
from broker.mosquitto import BrokerOptions, MosquittoServer, free_port, site_accounts
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
    return edge_yaml(
        tmp_path, site, port, [], sensors=[SENSOR], sensor_inputs=[{"type": "serial", "port": tty}]
    )


@pytest.mark.slow
def test_broker_outage_every_event_arrives_in_order_none_twice_at_the_dispatcher(
    tmp_path: Path,
    site: Site,
    mosquitto: MosquittoServer,
    listen: ListenerFactory,
    make_dispatcher: Callable[..., object],
) -> None:
    """Only the dispatcher subscribes to the events (another subscriber would hide a broker that
    dropped them for want of the dispatcher's subscription after its restart)."""
    dispatcher = make_dispatcher()
    helper = listen()
    clear_retained(helper)
    helper.bus.stop()  # it subscribes to the events too

    def stored_seqs() -> list[int]:
        with dispatcher.engine.connect() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                text("SELECT seq FROM events WHERE source_id = 'tilt-t1' ORDER BY rowid")
            )
            return [int(r[0]) for r in rows]

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
            wait_until(lambda: agent.bus is not None and agent.bus.connected, 15)
            writer.start()
            wait_until(lambda: len(stored_seqs()) >= 10, 15)
            mosquitto.stop()
            time.sleep(OUTAGE_S)
            assert agent.outbox is not None and agent.outbox.depth >= 100  # held while away
            mosquitto.start()
            time.sleep(3)
            stop_writing.set()
            writer.join()
            time.sleep(0.5)  # the last readings still in the line
            # Delivered, and past the time in which what the restarted broker acknowledged is
            # sent again (another session subscribed to the events would have taken it).
            wait_until(
                lambda: (
                    agent.outbox is not None
                    and agent.outbox.depth == 0
                    and agent.publisher is not None
                    and agent.publisher.in_flight == 0
                    and not agent.publisher.settling
                ),
                90,
            )
            last_seq = agent.outbox.last_seq
        finally:
            stop_writing.set()
            agent.stop()
    deadline = time.monotonic() + 30
    while len(stored_seqs()) < last_seq and time.monotonic() < deadline:
        time.sleep(0.5)
    seqs = stored_seqs()
    assert sorted(seqs) == list(range(1, last_seq + 1)), (
        f"missing at the dispatcher: {sorted(set(range(1, last_seq + 1)) - set(seqs))}"
    )
    assert seqs == sorted(seqs), "the dispatcher received events out of order"


@pytest.mark.slow
def test_sigkill_keeps_unacknowledged_events_and_the_last_will_marks_offline(
    tmp_path: Path,
    site: Site,
    mosquitto: MosquittoServer,
    listen: ListenerFactory,
) -> None:
    listener = listen(persistent=True)
    clear_retained(listener)
    env = {**os.environ, "GW_LOG_FORMAT": "console", "PYTHONUNBUFFERED": "1"}
    log_file = (tmp_path / "agent.log").open("ab")

    def start_agent(path: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "simulators.cli", "edge", "run", str(path)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )

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
            wait_until(lambda: listener.statuses[n_status:] and listener.statuses[-1].online, 15)
            proc.kill()  # no clean goodbye: the broker publishes the last will
            proc.wait(10)
            wait_until(lambda: not listener.statuses[-1].online, 15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log_file.close()


def test_events_no_one_subscribed_to_are_kept_until_a_dispatcher_subscribes(
    tmp_path: Path,
    site: Site,
) -> None:
    """Mosquitto PUBACKs a publish that matches no subscription ("No matching subscribers") and
    drops it: the outbox must keep such events and replay them once someone listens."""
    broker = MosquittoServer(
        tmp_path / "broker", site_accounts(site), BrokerOptions(port=free_port())
    )
    broker.start()
    got: list[Event] = []
    consumer = BusClient(
        BusSettings(
            client_id="t-late-dispatcher",
            port=broker.port,
            username="dispatcher",
            password=site.broker.dispatcher_password.get_secret_value(),
        )
    )
    consumer.subscribe(
        topics.shared(topics.all_edge("event"), "late"),
        lambda d: got.append(Event.from_json(d.payload)),
    )
    try:
        with pty_line() as (master, tty):
            agent = EdgeAgent(load_edge_settings(sensor_yaml(tmp_path, site, broker.port, tty)))
            agent.start()
            try:
                wait_until(lambda: agent.bus is not None and agent.bus.connected, 15)
                for i in range(6):
                    os.write(master, b"tilt-t1 20\n" if i % 2 == 0 else b"tilt-t1 1\n")
                    time.sleep(0.05)
                assert agent.publisher is not None and agent.outbox is not None
                wait_until(
                    lambda: (
                        agent.outbox is not None
                        and agent.outbox.last_seq == 6
                        and agent.publisher is not None
                        and agent.publisher.unrouted >= 1
                    ),
                    15,
                )
                assert agent.outbox.depth == 6  # nothing deleted on a PUBACK that routed nowhere
                consumer.start(wait_s=10)
                wait_until(lambda: len({e.seq for e in got}) == 6, 40)
                wait_until(lambda: agent.outbox is not None and agent.outbox.depth == 0, 10)
            finally:
                agent.stop()
        first = list(dict.fromkeys(e.seq for e in got))
        assert first == [1, 2, 3, 4, 5, 6]
    finally:
        consumer.stop()
        broker.stop()
