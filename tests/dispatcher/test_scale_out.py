"""Two dispatcher processes on one PostgreSQL share the event stream (MQTT v5 shared
subscription); a burst of 5,000 events about 1,000 problems, each seen five times by two
cameras, gives exactly 1,000 tickets: none lost, none doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from broker import topics
from broker.client import BusClient, Delivery
from broker.messages import Event
from broker.mosquitto import MosquittoServer, free_port
from config.site import SAMPLE_SITE, Site
from dispatcher.store.schema import audit, events, incidents, tickets
from simulators.local_services import InfluxServer
from tests.dispatcher.factories import offset

PROBLEMS = 1000
KINDS = ("garbage", "manhole_broken", "manhole_missing")


def burst(site: Site) -> list[Event]:
    """Five events per problem: camera A new, B new, A update, B update, A update. Problems sit
    on a 40 m lattice (garbage merges within 30 m); one problem's sightings within 3 m."""
    from datetime import UTC, datetime

    from tests.dispatcher.factories import camera_event

    cams = [c.id for c in site.cameras]
    lattice = [
        offset(39.9553, 116.4153, north_m=40 * r, east_m=40 * c)
        for r in range(21)
        for c in range(20)
    ]
    out: list[Event] = []
    now = datetime.now(UTC)
    for i in range(PROBLEMS):
        kind = KINDS[i % 3]
        lat, lon = lattice[i // 3]
        a, b = cams[i % 8], cams[(i + 3) % 8]
        plan = [
            (a, 0.0, "new"),
            (b, 2.5, "new"),
            (a, 1.0, "update"),
            (b, 3.0, "update"),
            (a, 0.5, "update"),
        ]
        for n, (cam, east, state) in enumerate(plan):
            out.append(
                camera_event(
                    site,
                    cam,
                    now,
                    kind=kind,
                    state=state,
                    track=f"p{i}-{cam}",
                    position=offset(lat, lon, east_m=east),
                    seq=n + 1,
                )
            )
    return out


@pytest.fixture
def two_dispatchers(
    site: Site, mosquitto: MosquittoServer, influx: InfluxServer, pg_url: str, tmp_path: Path
) -> Iterator[list[str]]:
    group = f"s{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    for n in range(2):
        port = free_port()
        env = dict(
            os.environ,
            GW_SHARE_GROUP=group,
            GW_LOG_FORMAT="json",
            GW_SECRET_KEY=uuid.uuid4().hex * 2,
        )
        log = open(tmp_path / f"dispatcher-{n}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simulators.cli",
                    "dispatcher",
                    "run",
                    "--site",
                    str(SAMPLE_SITE),
                    "--state-dir",
                    str(tmp_path / f"state-{n}"),
                    "--port",
                    str(port),
                    "--influx-url",
                    influx.url,
                    "--influx-db",
                    f"t_{group}",
                    "--db-url",
                    pg_url,
                    "--client-id",
                    f"{group}-{n}",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, proc in zip(urls, procs, strict=True):
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "dispatcher-0.log").read_text()[-3000:]
                try:
                    if httpx.get(url + "/health", timeout=2).json()["mqtt_connected"]:
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                assert time.monotonic() < deadline, "dispatcher did not come up"
                time.sleep(0.2)
        yield urls
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_two_processes_on_postgresql_make_exactly_the_expected_tickets(
    site: Site, two_dispatchers: list[str], device_bus: Callable[..., BusClient], pg_url: str
) -> None:
    evs = burst(site)
    assert len(evs) == 5000
    buses = {d.id: device_bus(d.id) for d in site.devices if d.kind == "edge"}
    for bus in buses.values():
        bus.start(wait_s=10)
    pending = [buses[e.device_id].publish(topics.event(e.device_id), e) for e in evs]
    store = create_engine(pg_url)

    def count(table: object, *where: object) -> int:
        with store.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(table).where(*where)  # type: ignore[arg-type]
                ).scalar_one()
            )

    deadline = time.monotonic() + 120
    while count(events) < len(evs):
        assert time.monotonic() < deadline, f"only {count(events)} events stored"
        time.sleep(0.5)
    assert all(p.done() for p in pending)
    assert count(tickets) == PROBLEMS
    assert count(incidents) == PROBLEMS
    with store.connect() as conn:
        stored = conn.execute(select(events.c.incident_id, events.c.body)).all()
        sightings = dict(conn.execute(select(incidents.c.id, incidents.c.events)).all())
    # Each problem's events went to its one incident, which counts them. The two processes
    # share each device's events, so one may apply a track's later event before the other
    # takes an earlier one: that one arrived late, and is stored without being applied.
    by_problem: dict[str, set[int]] = defaultdict(set)
    applied: Counter[int] = Counter()
    for incident_id, body in stored:
        if incident_id is not None:
            by_problem[str(body["track_id"]).split("-")[0]].add(incident_id)
            applied[incident_id] += 1
    assert len(by_problem) == PROBLEMS and all(len(s) == 1 for s in by_problem.values())
    assert dict(applied) == sightings
    assert count(audit, audit.c.transition == "opened") == PROBLEMS
    with store.connect() as conn:
        per_kind = dict(
            conn.execute(
                select(tickets.c.category, func.count()).group_by(tickets.c.category)
            ).all()
        )
    assert per_kind == {"garbage": 334, "manhole_broken": 333, "manhole_missing": 333}
    received = [
        httpx.get(u + "/health", timeout=5).json()["events_received"] for u in two_dispatchers
    ]
    assert sum(received) == len(evs) and min(received) > 0  # both took a share
    while count(audit, audit.c.pushed.is_(False)) or count(audit, audit.c.metric_sent.is_(False)):
        assert time.monotonic() < deadline + 60, "pushes or points not shipped"
        time.sleep(0.5)
    store.dispose()


def test_an_event_whose_squares_are_busy_waits_for_a_later_batch(
    site: Site, pg_url: str, tmp_path: Path
) -> None:
    """Another process holds the merge lock of one spot: that event is deferred (not
    acknowledged), the rest of the batch goes through; after three deferrals it waits."""
    import threading

    from config.clock import ManualClock
    from dispatcher.evidence import EvidenceStore
    from dispatcher.incidents import merge_locks
    from dispatcher.intake import Intake
    from dispatcher.store.db import make_engine, migrate
    from tests.dispatcher.factories import camera_event

    engine = make_engine(pg_url)
    migrate(engine)
    clock = ManualClock()
    intake = Intake(engine, site, clock, EvidenceStore(tmp_path / "ev"))
    busy_spot, free_spot = (39.9562, 116.4165), offset(39.9562, 116.4165, north_m=3000)
    acked: list[str] = []

    def delivery(where: tuple[float, float], track: str) -> Delivery:
        ev = camera_event(site, "cam-01", clock.now(), track=track, position=where)
        return Delivery(
            topics.event("edge-01"), ev.to_json(), 1, False, 0, lambda: acked.append(track)
        )

    other = engine.connect()
    other.begin()
    cell = sorted(merge_locks("garbage", *busy_spot, 30, None))[0]
    other.exec_driver_sql(f"SELECT pg_advisory_xact_lock({cell})")
    try:
        waiting, going = delivery(busy_spot, "busy"), delivery(free_spot, "free")
        intake.process([waiting, going])
        assert acked == ["free"] and intake.backlog() == 1 and intake.stats.deferred == 1
        for _ in range(2):
            intake.process([intake._later.popleft()])
        assert acked == ["free"] and intake.stats.deferred == 3
        threading.Timer(0.5, other.rollback).start()  # the other process commits soon
        intake.process([intake._later.popleft()])  # the fourth try waits for the lock
        assert acked == ["free", "busy"] and intake.backlog() == 0
    finally:
        other.close()
        engine.dispose()
    with make_engine(pg_url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(tickets)).scalar_one() == 2
