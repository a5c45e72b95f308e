"""Camera and sensor simulators that talk to the broker exactly as real devices do.

Each simulated device logs in with its own account (so the broker's ACL applies), publishes
``Event`` messages on its own event topic, keeps a retained status with a last will, and
answers ``verify`` commands. The camera simulator invents detections (no video); the real
edge agent (``gridwatch edge run``) is what watches video.
"""

from __future__ import annotations

import io
import logging
import random
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from PIL import Image, ImageDraw

from broker import topics
from broker.client import BusClient, BusSettings, Delivery, Will
from broker.messages import (
    CameraStatus,
    Command,
    CommandResult,
    DeviceStatus,
    Event,
    Evidence,
    MessageError,
    SensorStatus,
)
from config.clock import Clock, SystemClock
from config.site import Camera, GeoPoint, Sensor, Site

log = logging.getLogger(__name__)

CAMERA_KINDS: tuple[tuple[str, float], ...] = (
    ("garbage", 0.7),
    ("manhole_missing", 0.15),
    ("manhole_broken", 0.15),
)


def synthetic_snapshot(kind: str, bbox: tuple[float, float, float, float], seed: int) -> Evidence:
    """A small labelled JPEG standing in for a frame (the simulator has no video)."""
    rnd = random.Random(seed)
    w, h = 320, 240
    img = Image.new("RGB", (w, h), (rnd.randint(90, 140),) * 3)
    draw = ImageDraw.Draw(img)
    x1, y1, x2, y2 = bbox
    draw.rectangle((x1 * w, y1 * h, x2 * w, y2 * h), outline=(255, 60, 60), width=3)
    draw.text((6, 6), f"SIM {kind}", fill=(255, 255, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70)
    return Evidence.from_jpeg(buf.getvalue(), w, h)


def ground_point(cam: Camera, u: float, v: float) -> GeoPoint:
    """A point on the camera's ground quad by bilinear interpolation (u across, v near→far)."""
    g = cam.ground_plane.geo
    near_lat = g[0].lat + (g[1].lat - g[0].lat) * u
    near_lon = g[0].lon + (g[1].lon - g[0].lon) * u
    far_lat = g[3].lat + (g[2].lat - g[3].lat) * u
    far_lon = g[3].lon + (g[2].lon - g[3].lon) * u
    return GeoPoint(
        lat=near_lat + (far_lat - near_lat) * v, lon=near_lon + (far_lon - near_lon) * v
    )


@dataclass
class SimulatedProblem:
    kind: str
    track_id: str
    bbox: tuple[float, float, float, float]
    position: GeoPoint
    since: datetime
    fixed: bool = False


@dataclass
class DeviceSimulator:
    """One simulated device (edge box or sensor node) with its cameras or sensors."""

    site: Site
    device_id: str
    password: str
    clock: Clock = field(default_factory=SystemClock)
    seed: int = 0
    problem_rate_per_min: float = 1.0
    fix_probability: float = 0.85
    status_interval_s: float = 5.0
    kind: Literal["edge", "sensor_node"] = "edge"

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.seed)
        self.cameras = self.site.cameras_of(self.device_id)
        self.sensors = self.site.sensors_of(self.device_id)
        self.problems: dict[str, list[SimulatedProblem]] = {c.id: [] for c in self.cameras}
        self.readings: dict[str, float] = {s.id: s.clear_below * 0.5 for s in self.sensors}
        self.alarms: dict[str, bool] = {s.id: False for s in self.sensors}
        self.seq = 0
        self.sent = 0
        self.started = self.clock.now()
        self._lock = threading.Lock()
        offline = DeviceStatus(device_id=self.device_id, online=False, ts=self.started)
        self.bus = BusClient(
            BusSettings(
                client_id=f"sim-{self.device_id}",
                host=self.site.broker.host,
                port=self.site.broker.port,
                username=self.device_id,
                password=self.password,
                will=Will(topic=topics.status(self.device_id), payload=offline.to_json()),
            )
        )
        self.bus.subscribe(topics.command(self.device_id), self._on_command)

    def start(self) -> None:
        self.bus.start(wait_s=15)
        self.publish_status()

    def stop(self) -> None:
        self.publish_status(online=False)
        self.bus.stop()

    # -- publishing ----------------------------------------------------------------------
    def _event(self, **fields: object) -> Event:
        with self._lock:
            self.seq += 1
            seq = self.seq
        return Event(
            event_id=uuid.uuid4(),
            device_id=self.device_id,
            seq=seq,
            ts=self.clock.now(),
            **fields,
        )

    def send(self, event: Event) -> None:
        self.bus.publish(topics.event(self.device_id), event)
        self.sent += 1

    def publish_status(self, online: bool = True) -> None:
        now = self.clock.now()
        status = DeviceStatus(
            device_id=self.device_id,
            online=online,
            ts=now,
            uptime_s=(now - self.started).total_seconds(),
            agent_version="simulator",
            model="simulated" if self.cameras else None,
            cameras=tuple(
                CameraStatus(
                    camera_id=c.id,
                    state="ok",
                    fps=c.sample_fps,
                    inference_ms=0.0,
                    active_tracks=len([p for p in self.problems[c.id] if not p.fixed]),
                    last_frame=now,
                )
                for c in self.cameras
            ),
            sensors=tuple(
                SensorStatus(
                    sensor_id=s.id,
                    value=round(self.readings[s.id], 2),
                    alarm=self.alarms[s.id],
                    last_reading=now,
                )
                for s in self.sensors
            ),
        )
        self.bus.publish(
            topics.status(self.device_id),
            status,
            retain=True,
            expiry_s=topics.status_expiry_s(self.status_interval_s) if online else None,
        )

    # -- behaviour -----------------------------------------------------------------------
    def raise_problem(self, cam: Camera, kind: str | None = None) -> SimulatedProblem:
        """A new problem appears in front of a camera; send its ``new`` event."""
        if kind is None:
            kind = self.rnd.choices([k for k, _ in CAMERA_KINDS], [w for _, w in CAMERA_KINDS])[0]
        u, v = self.rnd.uniform(0.15, 0.85), self.rnd.uniform(0.05, 0.7)
        cx, cy = 0.05 + 0.9 * u, 0.98 - 0.58 * v
        half = 0.06 + 0.04 * (1 - v)
        bbox = (max(0.0, cx - half), max(0.0, cy - half), min(1.0, cx + half), min(1.0, cy + 0.01))
        p = SimulatedProblem(
            kind, uuid.uuid4().hex[:8], bbox, ground_point(cam, u, v), self.clock.now()
        )
        self.problems[cam.id].append(p)
        self.send(
            self._event(
                source_id=cam.id,
                source_type="camera",
                kind=kind,
                state="new",
                track_id=p.track_id,
                confidence=round(self.rnd.uniform(0.55, 0.95), 3),
                bbox=bbox,
                position=p.position,
                first_seen=p.since,
                model_version="simulated",
                snapshot=synthetic_snapshot(kind, bbox, self.rnd.randint(0, 1 << 30)),
            )
        )
        return p

    def tick(self, dt_s: float) -> None:
        """Advance the simulated world by ``dt_s`` seconds."""
        for cam in self.cameras:
            if self.rnd.random() < self.problem_rate_per_min * dt_s / 60:
                self.raise_problem(cam)
        for s in self.sensors:
            self._sensor_step(s, dt_s)

    def _sensor_step(self, s: Sensor, dt_s: float) -> None:
        value = self.readings[s.id]
        if self.alarms[s.id]:
            value = max(0.0, value - self.rnd.uniform(0, s.threshold * 0.08) * dt_s)
        elif self.rnd.random() < self.problem_rate_per_min * dt_s / 60:
            value = s.threshold * self.rnd.uniform(1.05, 1.4)
        else:
            value = max(0.0, value + self.rnd.uniform(-1, 1) * s.threshold * 0.01)
        self.readings[s.id] = value
        if not self.alarms[s.id] and value >= s.threshold:
            self.alarms[s.id] = True
            self.send(
                self._event(
                    source_id=s.id,
                    source_type="sensor",
                    kind=s.kind,
                    state="new",
                    reading=round(value, 2),
                    measure=s.measure,
                    position=s.position,
                )
            )
        elif self.alarms[s.id] and value < s.clear_below:
            self.alarms[s.id] = False
            self.send(
                self._event(
                    source_id=s.id,
                    source_type="sensor",
                    kind=s.kind,
                    state="cleared",
                    reading=round(value, 2),
                    measure=s.measure,
                    position=s.position,
                )
            )

    def _on_command(self, d: Delivery) -> None:
        try:
            cmd = Command.from_json(d.payload)
        except MessageError as exc:
            log.warning("bad command: %s", exc, extra={"device_id": self.device_id})
            return
        outcome: Literal["clear", "still_present", "done"] = "done"
        if cmd.action == "verify":
            outcome = "clear" if self.rnd.random() < self.fix_probability else "still_present"
            for p in self.problems.get(cmd.camera_id or "", []):
                if p.kind == cmd.kind and outcome == "clear":
                    p.fixed = True
        result = CommandResult(
            command_id=cmd.command_id,
            device_id=self.device_id,
            action=cmd.action,
            ts=self.clock.now(),
            outcome=outcome,
            camera_id=cmd.camera_id,
            ticket_id=cmd.ticket_id,
            detail="simulated camera",
        )
        self.bus.publish(topics.command_result(self.device_id), result)
