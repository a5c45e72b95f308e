"""Real processes for the fault scenarios, in one folder on free loopback ports.

A ``Rig`` holds a Mosquitto with the generated config and ACL, an InfluxDB (its own or a shared
one), the dispatcher as a subprocess (``python -m simulators.cli dispatcher run``), sensor-node
edge agents as subprocesses (``python -m simulators.cli edge run``, each with its own account
and SQLite outbox) and a listener for worker pushes. Any of them can be stopped, killed with
SIGKILL and started again. Sensor nodes read their readings from a FIFO that the scenario
writes to, so every alarm (``new``) and every all-clear (``cleared``) is caused, and counted,
by the scenario itself.
"""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from broker import topics
from broker.client import BusClient, BusSettings, Delivery
from broker.messages import TicketPush
from broker.mosquitto import BrokerOptions, MosquittoServer, free_port, site_accounts
from config.loader import placeholders
from config.site import SAMPLE_SITE, Site, load_site
from simulators.local_services import InfluxServer

ADMIN_PASSWORD = "admin-pass-1"


@dataclass(frozen=True)
class SiteOptions:
    """How the fault site differs from the sample site: quick sensors, short timers."""

    sensors_per_node: int = 2
    accept_timeout_s: float | None = None
    sla_minutes: int | None = None
    remind_before_s: float | None = None
    colocated: tuple[tuple[str, str], ...] = ()  # (sensor, sensor moved onto its spot)


def write_fault_site(folder: Path, opts: SiteOptions) -> Path:
    """The sample site with debounce 0 on every sensor (one reading, one event), optional
    extra sensors per node (spread out so they never merge), and optional short timers."""
    doc: dict[str, Any] = yaml.safe_load(SAMPLE_SITE.read_text(encoding="utf-8"))
    (folder / "grids.geojson").write_bytes((SAMPLE_SITE.parent / "grids.geojson").read_bytes())
    base_sensors = doc["sensors"]
    nodes = [d["id"] for d in doc["devices"] if d["kind"] == "sensor_node"]
    sensors: list[dict[str, Any]] = []
    for n, node in enumerate(nodes):
        template = [s for s in base_sensors if s["device"] == node]
        for i in range(opts.sensors_per_node):
            s = copy.deepcopy(template[i % len(template)])
            s["id"] = f"{node}-s{i:02d}"
            s["debounce_seconds"] = 0
            # 100 m apart on a lattice inside the grid cells: never within a merge radius.
            s["position"] = {
                "lat": round(39.9555 + 0.0009 * ((n * 7 + i) % 8), 6),
                "lon": round(116.4155 + 0.0011 * ((n * 7 + i) // 8 % 8), 6),
            }
            sensors.append(s)
    by_id = {s["id"]: s for s in sensors}
    for anchor, moved in opts.colocated:
        by_id[moved]["position"] = dict(by_id[anchor]["position"])
        by_id[moved]["kind"] = by_id[anchor]["kind"]
        by_id[moved]["measure"] = by_id[anchor]["measure"]
        by_id[moved]["threshold"] = by_id[anchor]["threshold"]
        by_id[moved]["clear_below"] = by_id[anchor]["clear_below"]
    doc["sensors"] = sensors
    for cat in doc["categories"].values():
        if opts.accept_timeout_s is not None:
            cat["accept_timeout_minutes"] = opts.accept_timeout_s / 60
        if opts.sla_minutes is not None:
            cat["sla_minutes"] = opts.sla_minutes
        if opts.remind_before_s is not None:
            cat["remind_before_minutes"] = opts.remind_before_s / 60
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


class ManagedProcess:
    """A child process with its own log file: start, stop (SIGTERM), kill (SIGKILL), measure."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name, self.args, self.env = name, args, dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            out.write(f"--- start {self.starts + 1} at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, no last save."""
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> None:
        """SIGTERM without waiting (several processes can then end at once)."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 15) -> None:
        """SIGTERM, then SIGKILL if it does not end in time."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children (0 when not running)."""
        if not self.running():
            return 0
        assert self.proc is not None
        try:
            p = psutil.Process(self.proc.pid)
            return int(
                p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
            )
        except psutil.Error:
            return 0

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def cli() -> list[str]:
    return [sys.executable, "-m", "simulators.cli"]


class DispatcherProcess(ManagedProcess):
    """``gridwatch dispatcher run`` on a free port, with a fixed MQTT client id (its session)."""

    def __init__(
        self, rig: Rig, name: str = "dispatcher", extra_env: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.state = rig.folder / name
        self.client_id = f"{name}-{uuid.uuid4().hex[:6]}"
        args = [
            *cli(),
            "dispatcher",
            "run",
            "--site",
            str(rig.site_file),
            "--state-dir",
            str(self.state),
            "--port",
            str(self.port),
            "--influx-url",
            rig.influx.url,
            "--influx-db",
            rig.influx_db,
            "--client-id",
            self.client_id,
        ]
        env = {**rig.env, **(extra_env or {})}
        super().__init__(name, args, env, rig.folder / "logs")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.state / "dispatcher.db"

    def health(self, timeout_s: float = 2) -> dict[str, Any] | None:
        try:
            r = httpx.get(self.url + "/health", timeout=timeout_s)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def wait_healthy(self, timeout_s: float = 60, mqtt: bool = True) -> float:
        """Wait until /health answers (and the bus is connected); returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if not self.running():
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            h = self.health()
            if h is not None and (h.get("mqtt_connected") or not mqtt):
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy within {timeout_s}s:\n{self.log_tail()}")


class SensorNode(ManagedProcess):
    """A real edge agent for one sensor node, reading ``<sensor> <value>`` lines from a FIFO."""

    def __init__(self, rig: Rig, device_id: str, *, clock_offset_s: float = 0) -> None:
        self.device_id = device_id
        self.folder = rig.folder / device_id
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fifo = self.folder / "readings.fifo"
        if not self.fifo.exists():
            os.mkfifo(self.fifo)
        # Held open read-write so writes never block and survive the agent's restarts.
        self._fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        self.outbox = self.folder / "outbox.sqlite"
        self.site = rig.site
        self.sensors = [s for s in rig.site.sensors if s.device == device_id]
        self.alarm = {s.id: False for s in self.sensors}
        self.induced: list[tuple[str, str]] = []  # (sensor id, new|cleared) in writing order
        conf = {
            "device_id": device_id,
            "broker": {
                "host": "127.0.0.1",
                "port": rig.broker.port,
                "password": "${GW_MQTT_" + device_id.upper().replace("-", "_") + "}",
            },
            "outbox": {"path": str(self.outbox), "ack_timeout_s": 10},
            "status_interval_s": 2,
            "site": str(rig.site_file),
            "sensor_inputs": [{"type": "serial", "port": str(self.fifo)}],
        }
        self.config = self.folder / "edge.yaml"
        self.config.write_text(yaml.safe_dump(conf, sort_keys=False), encoding="utf-8")
        if clock_offset_s:
            args = [
                sys.executable,
                "-m",
                "tests.faults.skewed_agent",
                str(self.config),
                "--offset-s",
                str(clock_offset_s),
            ]
        else:
            args = [*cli(), "edge", "run", str(self.config), "--log-level", "INFO"]
        super().__init__(device_id, args, rig.env, rig.folder / "logs")

    def flip(self, sensor_id: str) -> str:
        """Write one reading that crosses the sensor's threshold or clears it; returns the
        event it must cause (``new`` or ``cleared``)."""
        s = next(x for x in self.sensors if x.id == sensor_id)
        state = "cleared" if self.alarm[sensor_id] else "new"
        value = s.clear_below * 0.5 if self.alarm[sensor_id] else s.threshold * 1.2
        os.write(self._fd, f"{sensor_id} {value:.2f}\n".encode())
        self.alarm[sensor_id] = not self.alarm[sensor_id]
        self.induced.append((sensor_id, state))
        return state

    def hold_high(self, sensor_id: str) -> None:
        """One more reading at or above the threshold of a sensor already in alarm (the problem
        is still there); it must not make another event unless the first was never stored."""
        s = next(x for x in self.sensors if x.id == sensor_id)
        os.write(self._fd, f"{sensor_id} {s.threshold * 1.2:.2f}\n".encode())

    def outbox_counts(self) -> tuple[int, int, int]:
        """(events created, events evicted, rows still queued) from the agent's own outbox file."""
        if not self.outbox.exists():
            return 0, 0, 0
        db = _sqlite_ro(self.outbox)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            queued = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        finally:
            db.close()
        return int(meta.get("seq", 0)), int(meta.get("evicted", 0)), int(queued)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _sqlite_ro(path: Path) -> Any:
    import sqlite3

    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


@dataclass
class PushListener:
    """Counts worker pushes as a worker app would get them (dispatcher account, own session)."""

    port: int
    password: str
    client_id: str = field(default_factory=lambda: f"push-listener-{uuid.uuid4().hex[:6]}")
    seen: list[tuple[float, str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.bus = BusClient(
            BusSettings(
                client_id=self.client_id,
                port=self.port,
                username="dispatcher",
                password=self.password,
                reconnect_min_s=1,
                reconnect_max_s=2,
            )
        )
        self.bus.subscribe(f"{topics.ROOT}/worker/+/tickets", self._on_push)

    def _on_push(self, d: Delivery) -> None:
        with self._lock:
            self.seen.append((time.time(), d.topic, d.payload))

    def start(self) -> None:
        self.bus.start(wait_s=15)

    def stop(self) -> None:
        self.bus.stop()

    def unique(self) -> dict[tuple[str, str, str, str], int]:
        """Pushes keyed by (topic, ticket, action, transition time), with how often each came."""
        out: dict[tuple[str, str, str, str], int] = {}
        with self._lock:
            for _, topic, payload in self.seen:
                msg = TicketPush.from_json(payload)
                key = (topic, msg.ticket_id, msg.action, msg.ts.isoformat())
                out[key] = out.get(key, 0) + 1
        return out


class Rig:
    """Mosquitto, InfluxDB, a dispatcher, sensor nodes and a push listener in one folder."""

    def __init__(
        self,
        folder: Path,
        *,
        site: SiteOptions = SiteOptions(),
        influx: InfluxServer | None = None,
        dispatcher_env: Mapping[str, str] | None = None,
        autosave_on_changes: bool = False,
    ) -> None:
        self.folder = folder.resolve()
        (self.folder / "logs").mkdir(parents=True, exist_ok=True)
        self.site_file = write_fault_site(self.folder, site)
        self.env = dict(os.environ)
        self.env.update({name: secrets.token_urlsafe(12) for name in placeholders(self.site_file)})
        self.env.update(
            GW_MQTT_PORT=str(free_port()),
            GW_ADMIN_PASSWORD=ADMIN_PASSWORD,
            GW_SECRET_KEY=secrets.token_urlsafe(48),
            GW_LOG_FORMAT="json",
            PYTHONUNBUFFERED="1",
            YOLO_OFFLINE="1",
        )
        self.site: Site = _load_with_env(self.site_file, self.env)
        self.broker = MosquittoServer(
            self.folder / "broker",
            site_accounts(self.site),
            BrokerOptions(port=self.site.broker.port, autosave_on_changes=autosave_on_changes),
        )
        self._own_influx = influx is None
        self.influx = influx or InfluxServer(self.folder / "influxdb")
        self.influx_db = f"faults_{uuid.uuid4().hex[:8]}"
        self.dispatcher_env = dict(dispatcher_env or {})
        self.dispatcher: DispatcherProcess | None = None
        self.nodes: dict[str, SensorNode] = {}
        self.pushes: PushListener | None = None

    @property
    def node_ids(self) -> list[str]:
        return [d.id for d in self.site.devices if d.kind == "sensor_node"]

    def start(
        self, *, nodes: list[str] | None = None, skew: Mapping[str, float] | None = None
    ) -> None:
        self.broker.start()
        if self._own_influx:
            self.influx.start()
        self.pushes = PushListener(
            self.broker.port, self.site.broker.dispatcher_password.get_secret_value()
        )
        self.pushes.start()
        self.dispatcher = DispatcherProcess(self, extra_env=self.dispatcher_env)
        self.dispatcher.start()
        # The agents start while the dispatcher starts (their outboxes hold anything early).
        for device_id in nodes if nodes is not None else self.node_ids:
            node = SensorNode(self, device_id, clock_offset_s=(skew or {}).get(device_id, 0))
            self.nodes[device_id] = node
            node.start()
        self.dispatcher.wait_healthy()

    def wait_nodes_online(self, timeout_s: float = 30) -> None:
        """Wait until the dispatcher has a live heartbeat from every node."""
        from tests.faults.ledger import Ledger

        deadline = time.monotonic() + timeout_s
        assert self.dispatcher is not None
        while time.monotonic() < deadline:
            with Ledger(self) as ledger:
                if set(self.nodes) <= ledger.online_devices():
                    return
            time.sleep(0.3)
        raise RuntimeError(f"sensor nodes not online within {timeout_s}s")

    def stop(self) -> None:
        for node in self.nodes.values():
            node.terminate()
        for node in self.nodes.values():
            node.stop()
            node.close()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.pushes is not None:
            self.pushes.stop()
        if self._own_influx:
            self.influx.stop()
        self.broker.stop()

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def processes(self) -> dict[str, ManagedProcess]:
        out: dict[str, ManagedProcess] = dict(self.nodes)
        if self.dispatcher is not None:
            out["dispatcher"] = self.dispatcher
        return out


def _load_with_env(site_file: Path, env: Mapping[str, str]) -> Site:
    """Load the site with ``env`` as the environment (the placeholders live there)."""
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return load_site(site_file)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def paced(every_s: float) -> Iterator[None]:
    """Sleep what is left of ``every_s`` after the body ran (a steady publishing rate)."""
    started = time.monotonic()
    yield
    time.sleep(max(0.0, every_s - (time.monotonic() - started)))
