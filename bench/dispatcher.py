"""Dispatcher throughput and event-to-push latency against a real Mosquitto.

Run from the repository root::

    python -m bench.dispatcher                      # the full table (about 6 minutes)
    python -m bench.dispatcher --quick              # fewer, shorter runs
    python -m bench.dispatcher --append docs/benchmarks.md

Each run starts fresh dispatcher process(es) (``gridwatch dispatcher run``) on a fresh store,
then this process plays four edge boxes (their own broker accounts) and a listener on the
worker and supervisor topics. The workload is street problems on a 40 m lattice, each seen
four times (camera A new, camera B new 2.5 m off, A update, B update): one in four events
opens a ticket, three merge. Measured:

- processed rate: events stored ÷ time from the first publish until the dispatcher(s) had
  committed them all (offered as fast as possible in "flood" runs: the maximum sustainable);
- event-to-push latency: from publishing a problem's first event to receiving the first push
  about its ticket (the worker's "assigned", or the supervisor's alert when nobody is on duty);
- CPU ms/event: the dispatcher processes' CPU time (user + system) over that same span, per
  event: steadier than the rates on a host whose speed drifts, and what one process's single
  core (Python's GIL) is spent on;
- lost / duplicated tickets: problems with no ticket / with more than one, read from the store.

Runs: embedded SQLite with batched intake, the same with one transaction per event (the
obvious baseline), and two processes sharing the stream on PostgreSQL. The load generator
shares the machine's cores with the dispatcher, Mosquitto and the database.
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import psutil
import typer
import yaml
from sqlalchemy import create_engine, func, select, text

from bench.machine import cpu_name
from broker import topics
from broker.client import BusClient, BusSettings, Delivery
from broker.messages import Event
from broker.mosquitto import BrokerOptions, MosquittoServer, free_port, site_accounts
from config.loader import placeholders
from config.site import SAMPLE_SITE, GeoPoint, Site, load_site
from dispatcher.store.schema import events, tickets
from simulators.local_services import InfluxServer, PostgresServer

app = typer.Typer(add_completion=False)

CENTRE = (39.959, 116.420)
CELL_M = 3000.0  # each of the four grid cells is 3 km square (the sample's are ~400 m)
SPACING_M = 40.0  # problems on a 40 m lattice: beyond every category's merge radius
KINDS = ("garbage", "manhole_broken", "manhole_missing")
# How often the dispatchers' /health is asked whether all events are in: often enough for a
# fair end time (a run takes seconds), seldom enough not to load the process it measures.
POLL_S = 0.2


def metres(lat: float) -> tuple[float, float]:
    """Metres per degree of latitude and of longitude at ``lat``."""
    return 111_195.0, 111_195.0 * math.cos(math.radians(lat))


def bench_site(folder: Path) -> Path:
    """The sample site with four 3 km grid cells, so thousands of problems fit on the lattice."""
    doc = yaml.safe_load(SAMPLE_SITE.read_text(encoding="utf-8"))
    m_lat, m_lon = metres(CENTRE[0])
    dlat, dlon = CELL_M / m_lat, CELL_M / m_lon
    lat0, lon0 = CENTRE[0] - dlat, CENTRE[1] - dlon
    original = json.loads((SAMPLE_SITE.parent / doc["grids_file"]).read_text(encoding="utf-8"))
    corners = {"g1": (0, 0), "g2": (0, 1), "g3": (1, 0), "g4": (1, 1)}
    features = []
    for f in original["features"]:
        r, c = corners[f["properties"]["id"]]
        a, b = lat0 + r * dlat, lon0 + c * dlon
        ring = [[b, a], [b + dlon, a], [b + dlon, a + dlat], [b, a + dlat], [b, a]]
        features.append({**f, "geometry": {"type": "Polygon", "coordinates": [ring]}})
    (folder / "grids.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8"
    )
    doc["grids_file"] = "grids.geojson"
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def lattice_point(n: int) -> tuple[float, float]:
    m_lat, m_lon = metres(CENTRE[0])
    side = int(2 * CELL_M / SPACING_M) - 2
    r, c = divmod(n, side)
    return (
        CENTRE[0] - CELL_M / m_lat + (r + 1) * SPACING_M / m_lat,
        CENTRE[1] - CELL_M / m_lon + (c + 1) * SPACING_M / m_lon,
    )


def lattice_index(lat: float, lon: float) -> int:
    m_lat, m_lon = metres(CENTRE[0])
    side = int(2 * CELL_M / SPACING_M) - 2
    r = round((lat - CENTRE[0] + CELL_M / m_lat) * m_lat / SPACING_M) - 1
    c = round((lon - CENTRE[1] + CELL_M / m_lon) * m_lon / SPACING_M) - 1
    return r * side + c


def workload(site: Site, problems: int) -> list[tuple[int, Event]]:
    """(problem, event) in publishing order: four sightings per problem by two cameras."""
    cams = site.cameras
    now = datetime.now(UTC)
    out = []
    for p in range(problems):
        kind = KINDS[p % 3]
        lat, lon = lattice_point(p // 3)
        a, b = cams[p % len(cams)], cams[(p + 3) % len(cams)]
        for cam, east, state, seq in (
            (a, 0.0, "new", 1),
            (b, 2.5, "new", 1),
            (a, 0.5, "update", 2),
            (b, 3.0, "update", 2),
        ):
            _, m_lon = metres(lat)
            out.append(
                (
                    p,
                    Event(
                        event_id=uuid.uuid4(),
                        device_id=cam.device,
                        source_id=cam.id,
                        source_type="camera",
                        kind=kind,
                        state=state,
                        seq=seq,
                        ts=now,
                        track_id=f"p{p}",
                        confidence=0.8,
                        bbox=(0.4, 0.5, 0.6, 0.8),
                        position=GeoPoint(lat=lat, lon=lon + east / m_lon),
                    ),
                )
            )
    return out


def problem_of(lat: float, lon: float, category: str) -> int:
    return lattice_index(lat, lon) * 3 + KINDS.index(category)


@dataclass
class Run:
    """One measured run."""

    store: str
    intake: str
    processes: int
    offered: float | None  # events/s; None: as fast as possible
    events: int = 0
    problems: int = 0
    published_s: float = 0.0
    processed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0  # the dispatcher processes' CPU time from the first publish to the end
    tickets: int = 0
    lost: int = 0
    duplicated: int = 0
    error: str | None = None

    @property
    def processed_rate(self) -> float:
        return self.events / self.processed_s if self.processed_s else 0.0

    @property
    def cpu_ms_per_event(self) -> float | None:
        return 1000 * self.cpu_s / self.events if self.cpu_s and self.events else None

    def pct(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


class Rig:
    """Mosquitto, InfluxDB and (on demand) PostgreSQL, plus the site and its secrets."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.secrets = {n: secrets.token_urlsafe(12) for n in placeholders(SAMPLE_SITE)}
        self.secrets["GW_MQTT_PORT"] = str(free_port())
        os.environ.update(self.secrets)
        self.site_file = bench_site(folder)
        self.site = load_site(self.site_file)
        self.broker = MosquittoServer(
            folder / "broker", site_accounts(self.site), BrokerOptions(port=self.site.broker.port)
        )
        self.influx = InfluxServer(folder / "influx")
        self.postgres: PostgresServer | None = None

    def start(self) -> None:
        self.broker.start()
        self.influx.start()

    def pg(self) -> PostgresServer:
        if self.postgres is None:
            pg_folder = Path(tempfile.mkdtemp(prefix="gridwatch-bench-pg-"))
            self.postgres = PostgresServer(pg_folder)
            self.postgres.start()
        return self.postgres

    def stop(self) -> None:
        if self.postgres is not None:
            self.postgres.stop()
            shutil.rmtree(self.postgres.state, ignore_errors=True)
        self.influx.stop()
        self.broker.stop()

    def new_pg_database(self) -> str:
        server = self.pg()
        name = f"b_{uuid.uuid4().hex[:10]}"
        admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return server.url.rsplit("/", 1)[0] + f"/{name}"


class Dispatchers:
    """Dispatcher processes started with ``gridwatch dispatcher run``."""

    def __init__(self, rig: Rig, n: int, db_url: str | None, batch: int) -> None:
        self.rig, self.urls = rig, []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.client_ids: list[str] = []
        run_dir = rig.folder / f"run-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir()
        self.db_url = db_url or f"sqlite:///{run_dir / 'state-0' / 'dispatcher.db'}"
        group = f"b{uuid.uuid4().hex[:8]}"
        env = dict(
            os.environ,
            GW_SHARE_GROUP=group,
            GW_LOG_FORMAT="json",
            GW_INTAKE_BATCH_SIZE=str(batch),
            GW_SECRET_KEY=secrets.token_urlsafe(48),
        )
        for i in range(n):
            port = free_port()
            self.client_ids.append(f"{group}-{i}")
            args = [
                sys.executable,
                "-m",
                "simulators.cli",
                "dispatcher",
                "run",
                "--site",
                str(rig.site_file),
                "--state-dir",
                str(run_dir / f"state-{i}"),
                "--port",
                str(port),
                "--influx-url",
                rig.influx.url,
                "--influx-db",
                f"bench_{group}",
                "--client-id",
                self.client_ids[-1],
            ]
            if db_url:
                args += ["--db-url", db_url]
            with open(run_dir / f"dispatcher-{i}.log", "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
            self.urls.append(f"http://127.0.0.1:{port}")
        self.http = httpx.Client(timeout=5)
        deadline = time.monotonic() + 90
        for url, proc in zip(self.urls, self.procs, strict=True):
            while not self._connected(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"dispatcher did not start; see {run_dir}")
                time.sleep(0.2)

    def _connected(self, url: str) -> bool:
        try:
            return bool(self.http.get(url + "/health").json().get("mqtt_connected"))
        except (httpx.HTTPError, ValueError):
            return False

    def received(self) -> int:
        total = 0
        for url in self.urls:
            try:
                total += int(self.http.get(url + "/health").json()["events_received"])
            except (httpx.HTTPError, ValueError, KeyError):
                return -1
        return total

    def cpu_s(self) -> float:
        """CPU time the dispatcher processes have used so far (user + system)."""
        return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.http.close()
        self.end_sessions()

    def end_sessions(self) -> None:
        """Make the broker forget the stopped dispatchers' sessions. A dispatcher keeps its
        session over a restart on purpose; here it would not come back, and Mosquitto would
        go on queueing every later run's events for its shared subscription."""
        broker = self.rig.site.broker
        for client_id in self.client_ids:
            bus = BusClient(
                BusSettings(
                    client_id=client_id,
                    port=broker.port,
                    username="dispatcher",
                    password=broker.dispatcher_password,
                    clean_start=True,
                    session_expiry_s=0,
                )
            )
            bus.start(wait_s=15)
            bus.stop(end_session=True)


class Devices:
    """The four edge boxes (each with its own account) and a listener for pushes."""

    def __init__(self, rig: Rig) -> None:
        site = rig.site
        self.buses = {
            d.id: BusClient(
                BusSettings(
                    client_id=f"bench-{d.id}-{uuid.uuid4().hex[:4]}",
                    port=site.broker.port,
                    username=d.id,
                    password=d.password,
                    clean_start=True,
                    session_expiry_s=0,
                    max_inflight=200,
                )
            )
            for d in site.devices
            if d.kind == "edge"
        }
        self.first_push: dict[str, float] = {}
        self._lock = threading.Lock()
        self.listener = BusClient(
            BusSettings(
                client_id=f"bench-listener-{uuid.uuid4().hex[:4]}",
                port=site.broker.port,
                username="dispatcher",
                password=site.broker.dispatcher_password,
                clean_start=True,
                session_expiry_s=0,
            )
        )
        self.listener.subscribe(f"{topics.ROOT}/worker/+/tickets", self._on_push)
        self.listener.subscribe(f"{topics.ROOT}/supervisor/+/alerts", self._on_push)
        for bus in [*self.buses.values(), self.listener]:
            bus.start(wait_s=15)

    def _on_push(self, d: Delivery) -> None:
        at = time.monotonic()
        try:
            ticket = str(json.loads(d.payload)["ticket_id"])
        except (ValueError, KeyError):
            return
        with self._lock:
            self.first_push.setdefault(ticket, at)

    def reset(self) -> None:
        with self._lock:
            self.first_push = {}

    def stop(self) -> None:
        for bus in [*self.buses.values(), self.listener]:
            bus.stop()


def measure(
    rig: Rig,
    devices: Devices,
    run: Run,
    seconds: float,
    flood_events: int,
    db_url: str | None,
    batch: int,
) -> Run:
    if run.offered is None:
        run.problems = flood_events // 4
    else:
        run.problems = max(1, int(run.offered * seconds) // 4)
    plan = workload(rig.site, run.problems)
    payloads = [(p, topics.event(ev.device_id), ev.device_id, ev.to_json()) for p, ev in plan]
    run.events = len(payloads)
    procs = Dispatchers(rig, run.processes, db_url, batch)
    devices.reset()
    first_pub: dict[int, float] = {}
    try:
        cpu0 = procs.cpu_s()
        t0 = time.monotonic()
        for i, (p, topic, device, body) in enumerate(payloads):
            if run.offered is not None:
                wait = t0 + i / run.offered - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            first_pub.setdefault(p, time.monotonic())
            devices.buses[device].publish(topic, body)
        run.published_s = time.monotonic() - t0
        deadline = time.monotonic() + 180
        while procs.received() < run.events:
            if time.monotonic() > deadline:
                run.error = f"only {procs.received()} of {run.events} events processed"
                break
            time.sleep(POLL_S)
        run.processed_s = time.monotonic() - t0
        run.cpu_s = procs.cpu_s() - cpu0
        time.sleep(1.0)  # let the last pushes arrive
    finally:
        procs.stop()
    store = create_engine(procs.db_url)
    with store.connect() as conn:
        rows = conn.execute(
            select(tickets.c.id, tickets.c.lat, tickets.c.lon, tickets.c.category)
        ).all()
        stored = conn.execute(select(func.count()).select_from(events)).scalar_one()
    store.dispose()
    per_problem: dict[int, list[str]] = {}
    for r in rows:
        per_problem.setdefault(problem_of(r.lat, r.lon, r.category), []).append(str(r.id))
    run.tickets = len(rows)
    run.lost = sum(1 for p in range(run.problems) if p not in per_problem)
    run.duplicated = sum(len(v) - 1 for v in per_problem.values() if len(v) > 1)
    run.duplicated += sum(1 for p in per_problem if p >= run.problems)
    if stored != run.events and run.error is None:
        run.error = f"{stored} of {run.events} events stored"
    for p, ids in per_problem.items():
        pushed = [devices.first_push[i] for i in ids if i in devices.first_push]
        if pushed and p in first_pub:
            run.latencies_ms.append((min(pushed) - first_pub[p]) * 1000)
    return run


def table(runs: list[Run]) -> list[str]:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}"

    def cpu(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    lines = [
        "| store | intake | processes | offered ev/s | processed ev/s | p50 ms | p99 ms "
        "| CPU ms/event | tickets | lost | duplicated |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        offered = "max (flood)" if r.offered is None else f"{r.offered:.0f}"
        lines.append(
            f"| {r.store} | {r.intake} | {r.processes} | {offered} | {r.processed_rate:.0f} | "
            f"{ms(r.pct(0.5))} | {ms(r.pct(0.99))} | {cpu(r.cpu_ms_per_event)} | "
            f"{r.tickets}/{r.problems} | {r.lost} | "
            f"{r.duplicated} |" + (f" {r.error}" if r.error else "")
        )
    return lines


@app.command()
def main(
    seconds: Annotated[float, typer.Option(help="length of each paced run")] = 10,
    flood: Annotated[int, typer.Option(help="events in each as-fast-as-possible run")] = 16000,
    quick: Annotated[bool, typer.Option(help="short runs, SQLite batched and PostgreSQL")] = False,
    append: Annotated[
        Path | None, typer.Option(help="Markdown file to append the table to.")
    ] = None,
) -> None:
    """Run the dispatcher benchmark and print (and optionally append) the table."""
    if quick:
        seconds, flood = 5, 4000
    load_before = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="gridwatch-bench-"))
    rig = Rig(folder)
    rig.start()
    devices = Devices(rig)
    runs: list[Run] = []

    def go(store: str, batch: int, processes: int, offered: float | None) -> Run:
        db_url = rig.new_pg_database() if store == "postgresql" else None
        intake = "batched" if batch > 1 else "1 tx/event"
        run = measure(
            rig, devices, Run(store, intake, processes, offered), seconds, flood, db_url, batch
        )
        runs.append(run)
        print("\n".join(table([run])[2:]), flush=True)
        return run

    try:
        print("\n".join(table([])), flush=True)
        for store, batch, processes, rates, at_max in (
            ("sqlite", 500, 1, [200.0, 500.0, 1000.0], True),
            ("sqlite", 1, 1, [200.0, 500.0], True),
            ("postgresql", 500, 1, [], False),  # one process, for the ratio
            ("postgresql", 500, 2, [200.0, 500.0, 1000.0], True),
        ):
            if quick and batch == 1:
                rates = [200.0]
            for rate in rates:
                go(store, batch, processes, rate)
            top = go(store, batch, processes, None)
            if top.processed_rate > 0 and at_max and not quick:
                go(store, batch, processes, round(0.9 * top.processed_rate, -1))
    finally:
        devices.stop()
        rig.stop()
    by = {(r.store, r.intake, r.processes): r for r in runs if r.offered is None}
    batched, single = by.get(("sqlite", "batched", 1)), by.get(("sqlite", "1 tx/event", 1))
    pg1, pg2 = by.get(("postgresql", "batched", 1)), by.get(("postgresql", "batched", 2))
    lines = table(runs)
    lines.append("")
    if batched and single and single.processed_rate:
        lines.append(
            f"Batched intake vs one transaction per event (SQLite, flood): "
            f"{batched.processed_rate / single.processed_rate:.1f}x"
        )
    if pg1 and pg2 and pg1.processed_rate:
        lines.append(
            f"Two processes vs one on PostgreSQL (flood): "
            f"{pg2.processed_rate / pg1.processed_rate:.1f}x"
        )
    print("\n" + "\n".join(lines))
    load = f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    print(f"\n{cpu_name()}, {os.cpu_count()} cores; {load}")
    if append is not None:
        header = "" if append.is_file() else "# Benchmarks\n\nOne section per benchmark.\n"
        with append.open("a", encoding="utf-8") as f:
            f.write(
                f"{header}\n## Dispatcher: events to pushes ({datetime.now(UTC):%Y-%m-%d}, "
                f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
                f"{load})\n\n"
                "Command: `python -m bench.dispatcher`\n\n" + "\n".join(lines) + "\n"
            )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    app()
