"""The load generator: 1,000 simulated cameras and 1,000 sensors against one dispatcher on loopback.

``gridwatch sim load`` builds a load site (500 edge boxes with 2 cameras each, 500 sensor nodes
with 2 sensors each, 64 grid cells, a day and a night worker per cell), starts Mosquitto with
one account per device and the generated ACL, InfluxDB and the real dispatcher
(``gridwatch dispatcher run``), and then runs the devices for ``--duration`` seconds:

- every device has its own broker connection and account and sends a retained heartbeat
  every 30 s; the devices are split over a few worker processes (paho's ``select`` loop
  cannot hold more than about 330 connections per process);
- a camera sees a new problem about every 10 minutes (garbage, a missing or a broken
  manhole cover): ``new`` with a JPEG snapshot, an ``update`` a minute or two later for half
  of them, and ``cleared`` 3 to 8 minutes later; a sensor crosses its threshold about every
  20 minutes (``new``) and falls back a few minutes later (``cleared``);
- for one minute in the middle, new problems come 10 times as often (a burst).

Every problem is placed where it cannot merge with another open one, so each ``new`` must
make exactly one ticket. Measured: events published and stored (loss), tickets expected and
made, latency from publishing an event to the dispatcher storing it and to the worker's
``assigned`` push arriving (p50/p99), and resident memory and CPU of every process over time.
The results go to ``STATE/results.json`` and, with ``--write-docs``, into docs/reliability.md.
"""

from __future__ import annotations

import heapq
import io
import json
import logging
import math
import os
import random
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from PIL import Image, ImageDraw

from broker import topics
from broker.client import BusClient, BusSettings, Delivery, Will
from broker.messages import DeviceStatus, Event, Evidence, TicketPush
from broker.mosquitto import BrokerOptions, MosquittoServer, free_port, site_accounts
from config.site import GeoPoint, load_site
from simulators.local_services import InfluxServer

log = logging.getLogger(__name__)

M_PER_DEG_LAT = 111_195.0
BASE = (39.90, 116.30)
CAMERA_KINDS = (("garbage", 0.7), ("manhole_missing", 0.15), ("manhole_broken", 0.15))
SENSOR_KINDS = (
    ("manhole_tilt", "tilt_deg", 15.0, 5.0),
    ("bin_full", "fill_pct", 90.0, 60.0),
    ("waterlogging", "water_cm", 10.0, 3.0),
)
SLOT_M = 45.0  # a camera's problems sit in one of 4 spots 45 m away: never within a merge radius
CONNECTIONS_PER_WORKER = 250


@dataclass(frozen=True)
class LoadPlan:
    """How big and how busy the simulated district is."""

    edge_boxes: int = 500
    cameras_per_box: int = 2
    sensor_nodes: int = 500
    sensors_per_node: int = 2
    duration_s: float = 600
    burst_at_s: float = 270
    burst_s: float = 60
    burst_factor: float = 10
    camera_problems_per_hour: float = 6
    sensor_alarms_per_hour: float = 3
    status_interval_s: float = 30
    seed: int = 1

    @property
    def cameras(self) -> int:
        return self.edge_boxes * self.cameras_per_box

    @property
    def sensors(self) -> int:
        return self.sensor_nodes * self.sensors_per_node


def _at(north_m: float, east_m: float) -> tuple[float, float]:
    lat = BASE[0] + north_m / M_PER_DEG_LAT
    lon = BASE[1] + east_m / (M_PER_DEG_LAT * math.cos(math.radians(BASE[0])))
    return round(lat, 7), round(lon, 7)


def lattice(n: int, spacing_m: float, offset_m: float = 0.0) -> list[tuple[float, float]]:
    """``n`` points on a square lattice, ``spacing_m`` apart (metres north, east)."""
    side = math.ceil(math.sqrt(n))
    return [
        (offset_m + spacing_m * (i // side), offset_m + spacing_m * (i % side)) for i in range(n)
    ]


def write_load_site(folder: Path, plan: LoadPlan) -> tuple[Path, dict[str, str]]:
    """The load site's YAML and GeoJSON in ``folder``; returns its path and the environment
    its ``${ENV}`` placeholders need (every device's own MQTT password)."""
    folder.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {"GW_MQTT_DISPATCHER": secrets.token_urlsafe(12)}
    cams = lattice(plan.cameras, 200.0)
    sensors = lattice(plan.sensors, 200.0, offset_m=100.0)
    extent = 200.0 * math.ceil(math.sqrt(max(plan.cameras, plan.sensors))) + 200.0
    cells_per_side = max(1, math.ceil(extent / 800.0))
    cell_m = extent / cells_per_side
    features, workers, streets, supervisors = [], [], [], []
    for r in range(cells_per_side):
        street = f"s{r:02d}"
        streets.append({"id": street, "name": f"负载街{r}", "name_en": f"Load street {r}"})
        supervisors.append(
            {
                "id": f"sup-{street}",
                "name": f"督导{r}",
                "streets": [street],
                "phone": "139 0000 0000",
            }
        )
        for c in range(cells_per_side):
            gid = f"g{r:02d}{c:02d}"
            corners = [
                _at(-100 + r * cell_m, -100 + c * cell_m),
                _at(-100 + r * cell_m, -100 + (c + 1) * cell_m),
                _at(-100 + (r + 1) * cell_m, -100 + (c + 1) * cell_m),
                _at(-100 + (r + 1) * cell_m, -100 + c * cell_m),
            ]
            ring = [[lon, lat] for lat, lon in [*corners, corners[0]]]
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "id": gid,
                        "name": f"网格{gid}",
                        "name_en": f"Cell {gid}",
                        "street": street,
                    },
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                }
            )
            for shift, (start, end) in (("d", ("07:00", "19:00")), ("n", ("19:00", "07:00"))):
                workers.append(
                    {
                        "id": f"w{gid}{shift}",
                        "name": f"网格员{gid}{shift}",
                        "grid": gid,
                        "phone": "138 0000 0000",
                        "shifts": [
                            {
                                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                "start": start,
                                "end": end,
                            }
                        ],
                    }
                )
    (folder / "grids.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8"
    )
    devices: list[dict[str, Any]] = []
    cameras: list[dict[str, Any]] = []
    sensor_rows: list[dict[str, Any]] = []
    for b in range(plan.edge_boxes):
        dev = f"edge-{b:04d}"
        env[f"GW_LOAD_PW_{b:04d}E"] = secrets.token_urlsafe(12)
        devices.append({"id": dev, "kind": "edge", "password": f"${{GW_LOAD_PW_{b:04d}E}}"})
        for k in range(plan.cameras_per_box):
            i = b * plan.cameras_per_box + k
            lat, lon = _at(*cams[i])
            g = [
                _at(cams[i][0] + dn, cams[i][1] + de)
                for dn, de in ((-10, -10), (-10, 10), (30, 15), (30, -15))
            ]
            cameras.append(
                {
                    "id": f"cam-{i:04d}",
                    "device": dev,
                    "name": f"摄像头{i}",
                    "position": {"lat": lat, "lon": lon},
                    "source": "videos/load.mp4",
                    "ground_plane": {
                        "image": [[0.05, 0.98], [0.95, 0.98], [0.75, 0.4], [0.25, 0.4]],
                        "geo": [{"lat": a, "lon": o} for a, o in g],
                    },
                }
            )
    for n in range(plan.sensor_nodes):
        dev = f"node-{n:04d}"
        env[f"GW_LOAD_PW_{n:04d}N"] = secrets.token_urlsafe(12)
        devices.append({"id": dev, "kind": "sensor_node", "password": f"${{GW_LOAD_PW_{n:04d}N}}"})
        for k in range(plan.sensors_per_node):
            i = n * plan.sensors_per_node + k
            kind, measure, threshold, clear = SENSOR_KINDS[i % len(SENSOR_KINDS)]
            lat, lon = _at(*sensors[i])
            sensor_rows.append(
                {
                    "id": f"sen-{i:04d}",
                    "device": dev,
                    "kind": kind,
                    "measure": measure,
                    "threshold": threshold,
                    "clear_below": clear,
                    "debounce_seconds": 0,
                    "position": {"lat": lat, "lon": lon},
                }
            )
    sample = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "config" / "sample" / "site.yaml").read_text(
            encoding="utf-8"
        )
    )
    doc = {
        "office": {
            "id": "loadtown",
            "name": "负载街道",
            "name_en": "Load Town",
            "timezone": "Asia/Shanghai",
        },
        "broker": {
            "host": "127.0.0.1",
            "port": "${GW_MQTT_PORT}",
            "dispatcher_password": "${GW_MQTT_DISPATCHER}",
        },
        "streets": streets,
        "grids_file": "grids.geojson",
        "categories": sample["categories"],
        "workers": workers,
        "supervisors": supervisors,
        "devices": devices,
        "cameras": cameras,
        "sensors": sensor_rows,
    }
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path, env


def snapshot_pool(n: int = 16) -> list[Evidence]:
    """A few small JPEG frames standing in for camera snapshots (320 x 240, a few kB each)."""
    out = []
    for i in range(n):
        img = Image.new("RGB", (320, 240), (90 + 3 * i, 110, 100))
        draw = ImageDraw.Draw(img)
        draw.rectangle((40 + i, 120, 160 + i, 220), outline=(255, 60, 60), width=3)
        draw.text((6, 6), f"LOAD {i}", fill=(255, 255, 0))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=70)
        out.append(Evidence.from_jpeg(buf.getvalue(), 320, 240))
    return out


# -- the worker processes that run the devices -------------------------------------------
@dataclass(order=True)
class _Due:
    at: float
    seq: int
    action: str = field(compare=False)
    args: tuple[Any, ...] = field(compare=False, default=())


class DeviceShard:
    """Some of the site's devices, each on its own connection, following the plan's rates."""

    def __init__(
        self, site_file: Path, plan: LoadPlan, shard: int, shards: int, start: float, log_path: Path
    ) -> None:
        self.site = load_site(site_file)
        self.plan, self.start = plan, start
        self.rnd = random.Random(plan.seed * 1000 + shard)
        self.devices = [d for i, d in enumerate(self.site.devices) if i % shards == shard]
        self.snapshots = snapshot_pool()
        self.buses: dict[str, BusClient] = {}
        self.seq: Counter[str] = Counter()
        self.busy_slots: dict[str, set[int]] = {}
        self.in_alarm: set[str] = set()
        self.queue: list[_Due] = []
        self._n = 0
        self.out = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in run()
        self.acked = 0
        self.unrouted = 0

    def _push(self, at: float, action: str, *args: Any) -> None:
        self._n += 1
        heapq.heappush(self.queue, _Due(at, self._n, action, args))

    def connect(self) -> None:
        for d in self.devices:
            offline = DeviceStatus(device_id=d.id, online=False, ts=datetime.now(UTC))
            bus = BusClient(
                BusSettings(
                    client_id=f"load-{d.id}",
                    host="127.0.0.1",
                    port=self.site.broker.port,
                    username=d.id,
                    password=d.password,
                    will=Will(topic=topics.status(d.id), payload=offline.to_json()),
                )
            )
            bus.on_acknowledged(self._on_ack)
            bus.on_unrouted(self._on_unrouted)
            self.buses[d.id] = bus
        pending = list(self.buses.values())
        for i in range(0, len(pending), 25):
            batch = pending[i : i + 25]
            for bus in batch:
                bus.start()
            for bus in batch:
                if not bus.wait_connected(60):
                    raise RuntimeError(f"{bus.settings.client_id} did not connect")

    def _on_ack(self, mid: int, ok: bool) -> None:
        self.acked += 1

    def _on_unrouted(self, mid: int) -> None:
        self.unrouted += 1

    def schedule(self) -> None:
        """Heartbeats; for each camera and sensor a Poisson stream of problems at the plan's
        rate, and in the burst window extra arrivals at (factor - 1) times that rate."""
        now = time.time()
        plan = self.plan
        burst_from = self.start + plan.burst_at_s
        for d in self.devices:
            self._push(now + self.rnd.uniform(0, plan.status_interval_s), "status", d.id)
            for cam in self.site.cameras_of(d.id):
                self.busy_slots[cam.id] = set()
                self._push(now + self._gap(plan.camera_problems_per_hour), "camera", cam.id)
                for at in self._burst_arrivals(plan.camera_problems_per_hour, burst_from):
                    self._push(at, "camera", cam.id, False)
            for s in self.site.sensors_of(d.id):
                self._push(now + self._gap(plan.sensor_alarms_per_hour), "sensor", s.id)
                for at in self._burst_arrivals(plan.sensor_alarms_per_hour, burst_from):
                    self._push(at, "sensor", s.id, False)

    def _gap(self, per_hour: float) -> float:
        return self.rnd.expovariate(per_hour / 3600.0)

    def _burst_arrivals(self, per_hour: float, burst_from: float) -> list[float]:
        """Extra arrival times in the burst window: a Poisson process at (factor - 1) x rate."""
        plan, out = self.plan, []
        extra = per_hour * (plan.burst_factor - 1) / 3600.0
        t = burst_from
        while extra > 0:
            t += self.rnd.expovariate(extra)
            if t >= burst_from + plan.burst_s:
                break
            out.append(t)
        return out

    def run(self) -> None:
        end = self.start + self.plan.duration_s
        try:
            while self.queue:
                due = self.queue[0]
                now = time.time()
                if due.at > now:
                    time.sleep(min(0.2, due.at - now))
                    continue
                heapq.heappop(self.queue)
                if now >= end and due.action in ("camera", "sensor"):
                    continue  # no new problems after the end; their follow-ups still come
                if now >= end + 60:
                    break
                getattr(self, f"_do_{due.action}")(*due.args)
        finally:
            self.out.close()

    def _send(self, ev: Event, expect_ticket: bool) -> None:
        self.buses[ev.device_id].publish(topics.event(ev.device_id), ev)
        self.out.write(
            json.dumps(
                {
                    "id": str(ev.event_id),
                    "dev": ev.device_id,
                    "src": ev.source_id,
                    "state": ev.state,
                    "t": time.time(),
                    "ticket": expect_ticket,
                }
            )
            + "\n"
        )

    def _event(self, device_id: str, **fields: Any) -> Event:
        self.seq[device_id] += 1
        return Event(
            event_id=uuid.uuid4(),
            device_id=device_id,
            seq=self.seq[device_id],
            ts=datetime.now(UTC),
            **fields,
        )

    def _do_status(self, device_id: str) -> None:
        status = DeviceStatus(
            device_id=device_id,
            online=True,
            ts=datetime.now(UTC),
            uptime_s=time.time() - self.start,
            agent_version="load",
        )
        self.buses[device_id].publish(
            topics.status(device_id),
            status,
            retain=True,
            expiry_s=topics.status_expiry_s(self.plan.status_interval_s),
        )
        self._push(time.time() + self.plan.status_interval_s, "status", device_id)

    def _do_camera(self, camera_id: str, chained: bool = True) -> None:
        now = time.time()
        if chained:
            self._push(now + self._gap(self.plan.camera_problems_per_hour), "camera", camera_id)
        free = [s for s in range(4) if s not in self.busy_slots[camera_id]]
        if not free:
            return
        slot = self.rnd.choice(free)
        self.busy_slots[camera_id].add(slot)
        cam = next(c for c in self.site.cameras if c.id == camera_id)
        kind = self.rnd.choices([k for k, _ in CAMERA_KINDS], [w for _, w in CAMERA_KINDS])[0]
        angle = slot * math.pi / 2
        dlat = SLOT_M * math.cos(angle) / M_PER_DEG_LAT
        dlon = SLOT_M * math.sin(angle) / (M_PER_DEG_LAT * math.cos(math.radians(BASE[0])))
        pos = GeoPoint(lat=cam.position.lat + dlat, lon=cam.position.lon + dlon)
        track = uuid.uuid4().hex[:10]
        common: dict[str, Any] = dict(
            source_id=camera_id,
            source_type="camera",
            kind=kind,
            track_id=track,
            position=pos,
            model_version="load",
        )
        self._send(
            self._event(
                cam.device,
                state="new",
                confidence=round(self.rnd.uniform(0.55, 0.95), 3),
                bbox=(0.4, 0.5, 0.6, 0.8),
                first_seen=datetime.now(UTC),
                snapshot=self.rnd.choice(self.snapshots),
                **common,
            ),
            expect_ticket=True,
        )
        if self.rnd.random() < 0.5:
            self._push(now + self.rnd.uniform(60, 120), "camera_update", cam.device, common)
        self._push(now + self.rnd.uniform(180, 480), "camera_clear", cam.device, common, slot)

    def _do_camera_update(self, device_id: str, common: dict[str, Any]) -> None:
        self._send(
            self._event(
                device_id, state="update", confidence=0.9, bbox=(0.42, 0.5, 0.62, 0.8), **common
            ),
            expect_ticket=False,
        )

    def _do_camera_clear(self, device_id: str, common: dict[str, Any], slot: int) -> None:
        self._send(self._event(device_id, state="cleared", **common), expect_ticket=False)
        # The spot is free again once the dispatcher has surely closed the incident.
        self._push(time.time() + 30, "free_slot", common["source_id"], slot)

    def _do_free_slot(self, camera_id: str, slot: int) -> None:
        self.busy_slots[camera_id].discard(slot)

    def _do_sensor(self, sensor_id: str, chained: bool = True) -> None:
        """A sensor crosses its threshold (``new``) unless it is in alarm already; the chain of
        its regular alarms continues after the all-clear."""
        if sensor_id in self.in_alarm:
            if chained:
                self._push(
                    time.time() + self._gap(self.plan.sensor_alarms_per_hour), "sensor", sensor_id
                )
            return
        self.in_alarm.add(sensor_id)
        s = next(x for x in self.site.sensors if x.id == sensor_id)
        common: dict[str, Any] = dict(
            source_id=s.id,
            source_type="sensor",
            kind=s.kind,
            track_id=uuid.uuid4().hex[:10],
            measure=s.measure,
            position=s.position,
        )
        self._send(
            self._event(s.device, state="new", reading=s.threshold * 1.2, **common),
            expect_ticket=True,
        )
        self._push(
            time.time() + self.rnd.uniform(120, 360),
            "sensor_clear",
            s.device,
            common,
            s.clear_below * 0.5,
            chained,
        )

    def _do_sensor_clear(
        self, device_id: str, common: dict[str, Any], value: float, chained: bool
    ) -> None:
        self._send(
            self._event(device_id, state="cleared", reading=value, **common), expect_ticket=False
        )
        sensor_id = common["source_id"]
        # Free for a new alarm once the dispatcher has surely closed this one.
        self._push(time.time() + 30, "sensor_free", sensor_id)
        if chained:
            self._push(
                time.time() + 30 + self._gap(self.plan.sensor_alarms_per_hour), "sensor", sensor_id
            )

    def _do_sensor_free(self, sensor_id: str) -> None:
        self.in_alarm.discard(sensor_id)

    def stop(self) -> None:
        for bus in self.buses.values():
            bus.stop()


def run_shard(
    site_file: Path, plan: LoadPlan, shard: int, shards: int, start: float, log_path: Path
) -> None:
    """Entry point of one worker process."""
    os.environ.setdefault("GW_LOG_LEVEL", "WARNING")
    s = DeviceShard(site_file, plan, shard, shards, start, log_path)
    s.connect()
    (log_path.parent / f"shard-{shard}.ready").write_text("ok")
    while time.time() < start:
        time.sleep(0.05)
    s.schedule()
    try:
        s.run()
    finally:
        (log_path.parent / f"shard-{shard}.acks").write_text(
            json.dumps({"acked": s.acked, "unrouted": s.unrouted})
        )
        s.stop()


# -- the coordinator ----------------------------------------------------------------------
@dataclass
class Sampler:
    """Resident memory and CPU of named processes, every ``every_s`` seconds."""

    pids: dict[str, int]
    every_s: float = 5.0
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in self.pids.items()}
        for p in self._procs.values():
            p.cpu_percent(None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        import psutil

        started = time.monotonic()
        while not self._stop.wait(self.every_s):
            row: dict[str, Any] = {"t": round(time.monotonic() - started, 1)}
            for name, p in self._procs.items():
                try:
                    row[name] = {
                        "rss_mb": round(p.memory_info().rss / 2**20, 1),
                        "cpu_pct": round(p.cpu_percent(None), 1),
                    }
                except psutil.Error:
                    row[name] = None
            self.rows.append(row)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def summary(self, warm_s: float) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for name in self.pids:
            series = [(r["t"], r[name]) for r in self.rows if r.get(name) and r[name]["rss_mb"] > 0]
            if not series:
                continue
            warm = [v for t, v in series if t >= warm_s] or [v for _, v in series]
            out[name] = {
                "rss_start_mb": warm[0]["rss_mb"],
                "rss_end_mb": series[-1][1]["rss_mb"],
                "rss_max_mb": max(v["rss_mb"] for _, v in series),
                "rss_growth_mb": round(series[-1][1]["rss_mb"] - warm[0]["rss_mb"], 1),
                "cpu_mean_pct": round(statistics.mean(v["cpu_pct"] for _, v in series), 1),
                "cpu_max_pct": max(v["cpu_pct"] for _, v in series),
            }
        return out


class PushTimes:
    """The first ``assigned`` push per ticket, as a worker's phone would receive it."""

    def __init__(self, port: int, password: str) -> None:
        self.first: dict[str, float] = {}
        self.count = 0
        self._lock = threading.Lock()
        self.bus = BusClient(
            BusSettings(
                client_id=f"load-pushes-{uuid.uuid4().hex[:6]}",
                port=port,
                username="dispatcher",
                password=password,
            )
        )
        self.bus.subscribe(f"{topics.ROOT}/worker/+/tickets", self._on_push)

    def _on_push(self, d: Delivery) -> None:
        t = time.time()
        msg = TicketPush.from_json(d.payload)
        with self._lock:
            self.count += 1
            if msg.action == "assigned":
                self.first.setdefault(msg.ticket_id, t)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
    return values[k]


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the dispatcher exited; see its log")
        try:
            h = httpx.get(url + "/health", timeout=2)
            if h.status_code == 200 and h.json().get("mqtt_connected"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the dispatcher did not become healthy within {timeout_s}s")


# What a run writes in its state folder (and removes again before the next run).
RUN_PARTS = ("site", "broker", "influxdb", "dispatcher", "logs")


def run_load(state: Path, plan: LoadPlan, say: Any = print) -> dict[str, Any]:
    """Run the whole load test in ``state``; returns the results (also in results.json)."""
    raise_fd_limit()
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    # A run starts from nothing: a store left by an earlier run (same seed, same places) would
    # merge this run's problems into its open incidents and spoil every figure.
    for part in RUN_PARTS:
        if (state / part).exists():
            say(f"removing the previous run's {part} in {state}")
            shutil.rmtree(state / part)
    site_file, env = write_load_site(state / "site", plan)
    env["GW_MQTT_PORT"] = str(free_port())
    os.environ.update(env)
    site = load_site(site_file)
    logs = state / "logs"
    logs.mkdir(exist_ok=True)
    broker = MosquittoServer(
        state / "broker", site_accounts(site), BrokerOptions(port=site.broker.port)
    )
    influx = InfluxServer(state / "influxdb")
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    child_env = dict(
        os.environ,
        GW_LOG_FORMAT="json",
        GW_LOG_LEVEL="WARNING",
        GW_ADMIN_PASSWORD=secrets.token_urlsafe(12),
        GW_SECRET_KEY=secrets.token_urlsafe(48),
        PYTHONUNBUFFERED="1",
    )
    procs: list[subprocess.Popen[bytes]] = []
    pushes: PushTimes | None = None
    started_at = datetime.now(UTC)
    try:
        broker.start()
        influx.start()
        with open(logs / "dispatcher.log", "ab") as out:
            dispatcher = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simulators.cli",
                    "dispatcher",
                    "run",
                    "--site",
                    str(site_file),
                    "--state-dir",
                    str(state / "dispatcher"),
                    "--port",
                    str(http_port),
                    "--influx-url",
                    influx.url,
                    "--client-id",
                    "dispatcher-load",
                ],
                env=child_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(dispatcher)
        wait_healthy(url, dispatcher, 120)
        say(f"dispatcher up at {url}; starting {len(site.devices)} devices")
        pushes = PushTimes(broker.port, site.broker.dispatcher_password.get_secret_value())
        pushes.bus.start(wait_s=15)
        shards = max(1, math.ceil(len(site.devices) / CONNECTIONS_PER_WORKER))
        start = time.time() + 30 + 5 * shards
        workers = []
        for i in range(shards):
            with open(logs / f"shard-{i}.log", "ab") as out:
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "simulators.load",
                            "--shard",
                            f"{i}/{shards}",
                            "--site",
                            str(site_file),
                            "--start",
                            str(start),
                            "--plan",
                            json.dumps(asdict(plan)),
                            "--events",
                            str(logs / f"shard-{i}.events"),
                        ],
                        env=child_env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        procs += workers
        while time.time() < start:
            ready = len(list(logs.glob("shard-*.ready")))
            if any(w.poll() is not None for w in workers):
                raise RuntimeError("a device worker exited early; see logs/shard-*.log")
            if ready == shards:
                break
            time.sleep(0.5)
        say(
            f"{shards} device workers connected; running for {plan.duration_s:.0f} s "
            f"(burst of {plan.burst_factor:g}x at {plan.burst_at_s:.0f} s for {plan.burst_s:.0f} s)"
        )
        pids = {
            "mosquitto": broker.proc.pid if broker.proc else 0,
            "influxd": influx.proc.pid if influx.proc else 0,
            "dispatcher": dispatcher.pid,
            "generator": os.getpid(),
        }
        pids |= {f"devices-{i}": w.pid for i, w in enumerate(workers)}
        sampler = Sampler(pids).start()
        while time.time() < start:
            time.sleep(0.2)
        run_started = time.monotonic()
        while any(w.poll() is None for w in workers):
            time.sleep(5)
            elapsed = time.monotonic() - run_started
            if int(elapsed) % 60 < 5:
                try:
                    h = httpx.get(url + "/health", timeout=5).json()
                    say(
                        f"  {elapsed:5.0f} s: events received {h.get('events_received')}, "
                        f"backlog {h.get('intake_backlog')}, pushes seen {pushes.count}"
                    )
                except httpx.HTTPError as exc:
                    say(f"  {elapsed:5.0f} s: /health did not answer: {exc}")
        sent = list(_read_events(logs))
        say(f"devices done: {len(sent)} events published; waiting for the dispatcher to drain")
        drained_s = _wait_stored(
            state / "dispatcher" / "dispatcher.db", {e["id"] for e in sent}, 180
        )
        time.sleep(5)
        sampler.stop()
        results = _results(state, plan, sent, pushes, sampler, drained_s, started_at, logs, start)
        (state / "results.json").write_text(json.dumps(results, indent=1, default=str))
        return results
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        if pushes is not None:
            pushes.bus.stop(end_session=True)
        influx.stop()
        broker.stop()


def _read_events(logs: Path) -> Iterator[dict[str, Any]]:
    for f in sorted(logs.glob("shard-*.events")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)


def _store(db: Path) -> Any:
    import sqlite3

    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)


def _wait_stored(db: Path, ids: set[str], timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        conn = _store(db)
        try:
            n = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        finally:
            conn.close()
        if n >= len(ids):
            return time.monotonic() - started
        time.sleep(1)
    return None


def _results(
    state: Path,
    plan: LoadPlan,
    sent: list[dict[str, Any]],
    pushes: PushTimes,
    sampler: Sampler,
    drained_s: float | None,
    started_at: datetime,
    logs: Path,
    start: float,
) -> dict[str, Any]:
    conn = _store(state / "dispatcher" / "dispatcher.db")
    try:
        stored = {
            row[0]: (datetime.fromisoformat(row[1]).replace(tzinfo=UTC).timestamp(), row[2])
            for row in conn.execute("SELECT event_id, received_at, incident_id FROM events")
        }
        ticket_of = dict(conn.execute("SELECT incident_id, id FROM tickets").fetchall())
        tickets_made = conn.execute("SELECT COUNT(*) FROM tickets").fetchone()[0]
        dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    finally:
        conn.close()
    acks = [json.loads(f.read_text()) for f in logs.glob("shard-*.acks")]
    store_lat = [stored[e["id"]][0] - e["t"] for e in sent if e["id"] in stored]
    push_lat = []
    expected_tickets = [e for e in sent if e["ticket"]]
    expected_ids = set()
    for e in expected_tickets:
        got = stored.get(e["id"])
        if got is None or got[1] is None:
            continue
        tid = ticket_of.get(got[1])
        if tid is None:
            continue
        expected_ids.add(tid)
        if str(tid) in pushes.first:
            push_lat.append(pushes.first[str(tid)] - e["t"])
    times = [e["t"] for e in sent]
    span = (max(times) - min(times)) if times else 0.0
    per_minute = Counter(int((t - min(times)) // 60) for t in times) if times else Counter()
    burst_from = start + plan.burst_at_s
    in_burst = sum(1 for t in times if burst_from <= t < burst_from + plan.burst_s)
    before = sum(1 for t in times if burst_from - 120 <= t < burst_from)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {
        "started_at": started_at.isoformat(),
        "plan": asdict(plan),
        "devices": plan.edge_boxes + plan.sensor_nodes,
        "cameras": plan.cameras,
        "sensors": plan.sensors,
        "events_published": len(sent),
        "events_acknowledged": sum(a["acked"] for a in acks),
        "events_unrouted": sum(a["unrouted"] for a in acks),
        "events_stored": sum(1 for e in sent if e["id"] in stored),
        "events_lost": sum(1 for e in sent if e["id"] not in stored),
        "dead_letters": dead,
        "events_per_s_mean": round(len(sent) / span, 2) if span else None,
        "events_per_minute": dict(sorted(per_minute.items())),
        "events_per_s_burst": round(in_burst / plan.burst_s, 2),
        "events_per_s_before_burst": round(before / 120, 2),
        "tickets_expected": len(expected_tickets),
        "tickets_made_for_them": len(expected_ids),
        "tickets_in_store": tickets_made,
        "assigned_pushes_received": len(pushes.first),
        "pushes_received": pushes.count,
        "event_to_stored_ms": {
            "p50": ms(percentile(store_lat, 50)),
            "p99": ms(percentile(store_lat, 99)),
            "max": ms(max(store_lat) if store_lat else None),
        },
        "event_to_push_ms": {
            "p50": ms(percentile(push_lat, 50)),
            "p99": ms(percentile(push_lat, 99)),
            "max": ms(max(push_lat) if push_lat else None),
            "n": len(push_lat),
        },
        "drained_after_s": None if drained_s is None else round(drained_s, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "processes": sampler.summary(warm_s=60),
        "samples": sampler.rows,
    }


def load_markdown(r: dict[str, Any], machine: str) -> str:
    """The load section of docs/reliability.md."""
    p = r["plan"]
    lines = [
        f"Run {r['started_at'][:16].replace('T', ' ')} UTC on {machine}. Command: "
        f"`gridwatch sim load --duration {p['duration_s']:.0f} --write-docs` "
        f"(`simulators/load.py`).",
        "",
        f"{r['cameras']:,} cameras on {p['edge_boxes']} edge boxes and {r['sensors']:,} sensors on "
        f"{p['sensor_nodes']} sensor nodes, each box with its own broker connection and account, "
        f"against one dispatcher (SQLite store) on loopback for {p['duration_s'] / 60:.0f} minutes; "
        f"heartbeats every {p['status_interval_s']:.0f} s; about {p['camera_problems_per_hour']:g} "
        f"problems per camera and {p['sensor_alarms_per_hour']:g} alarms per sensor per hour, "
        f"{p['burst_factor']:g}x for one minute at {p['burst_at_s'] / 60:.1f} min.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| events published / stored / lost | {r['events_published']:,} / {r['events_stored']:,} / "
        f"{r['events_lost']:,} |",
        f"| events/s: mean over the run / the 2 min before the burst / during the burst | "
        f"{r['events_per_s_mean']} / {r['events_per_s_before_burst']} / "
        f"{r['events_per_s_burst']} |",
        f"| tickets expected / made | {r['tickets_expected']:,} / {r['tickets_made_for_them']:,} |",
        f"| `assigned` pushes received (one per ticket) | {r['assigned_pushes_received']:,} |",
        f"| event → stored, p50 / p99 / max | {r['event_to_stored_ms']['p50']} / "
        f"{r['event_to_stored_ms']['p99']} / {r['event_to_stored_ms']['max']} ms |",
        f"| event → worker push, p50 / p99 / max | {r['event_to_push_ms']['p50']} / "
        f"{r['event_to_push_ms']['p99']} / {r['event_to_push_ms']['max']} ms |",
        f"| dead letters | {r['dead_letters']} |",
        f"| backlog drained after the devices stopped | "
        f"{'never (within 180 s)' if r['drained_after_s'] is None else str(r['drained_after_s']) + ' s'} |",
        "",
        "| process | RSS after 1 min | RSS at end | max RSS | growth | CPU mean / max |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in r["processes"].items():
        lines.append(
            f"| {name} | {s['rss_start_mb']} MB | {s['rss_end_mb']} MB | {s['rss_max_mb']} MB | "
            f"{s['rss_growth_mb']:+} MB | {s['cpu_mean_pct']}% / {s['cpu_max_pct']}% |"
        )
    lines += [
        "",
        "Events per minute: " + ", ".join(f"{k}: {v}" for k, v in r["events_per_minute"].items()),
        f"Load average of the machine at the end (1, 5, 15 min): {r['load_average_at_end']}.",
    ]
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores, memory and OS of this machine, in one line (for published figures)."""
    import platform
    import re

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    os_name = platform.platform(terse=True)
    try:
        pretty = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text())
        os_name = pretty.group(1) if pretty else os_name
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {os_name}, Python {platform.python_version()}"


DOCS = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


def _main() -> None:
    """Worker-process entry: ``python -m simulators.load --shard i/n ...``."""
    import argparse

    from config.logs import setup_logging

    parser = argparse.ArgumentParser()
    parser.add_argument("--shard", required=True)
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--events", type=Path, required=True)
    args = parser.parse_args()
    setup_logging("WARNING")
    raise_fd_limit()
    shard, shards = (int(x) for x in args.shard.split("/"))
    run_shard(args.site, LoadPlan(**json.loads(args.plan)), shard, shards, args.start, args.events)


if __name__ == "__main__":
    _main()
