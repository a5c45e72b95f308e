"""The edge agent: cameras and sensors in, a few trustworthy events out, through the outbox.

Wiring only; the decisions live in ``confirm``, ``track``, ``motion``, ``zones``, ``sensors``
and ``commands``. The agent:

- runs one ``CameraWorker`` thread per enabled camera and one reader per sensor input;
- writes every event to the SQLite outbox, which ``OutboxPublisher`` sends while connected;
- publishes a retained status every ``status_interval_s`` with a last will that marks the
  device offline;
- applies the retained ``config`` topic live (zones, masks, thresholds, sampling, enabled,
  model path, status interval) and answers ``verify``, ``snapshot`` and ``reload`` commands;
- in ``dry_run`` it connects to nothing and prints what it would publish.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from pydantic import ValidationError

from broker import topics
from broker.client import BusClient, BusSettings, Delivery, TlsSettings, Will
from broker.messages import (
    CameraStatus,
    Command,
    CommandResult,
    DeviceConfig,
    DeviceStatus,
    Event,
    Evidence,
    Message,
    MessageError,
    SensorStatus,
)
from config.clock import Clock, SystemClock
from config.loader import ConfigError
from config.site import ClassRule, Sensor
from edge.camera import CameraSnapshot, CameraWorker, DetectorPool, EventBuilder
from edge.commands import VerifyCheck, judge_verify
from edge.detect.metadata import ModelMetadata, sidecar_path
from edge.evidence import Mark, make_evidence
from edge.outbox import Outbox, OutboxPublisher
from edge.sensors import (
    Reading,
    SensorAction,
    SensorInputReader,
    SensorState,
    judge_reading,
    make_reader,
    unreported,
)
from edge.settings import (
    EdgeCamera,
    EdgeSettings,
    LoadedSettings,
    load_edge_settings,
    model_default_rule,
)
from edge.sources import Frame
from edge.status import StatusReporter

log = logging.getLogger(__name__)

ERROR_SHOWN_S = 300.0
IDENT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SNAPSHOT_COLOUR = (60, 200, 60)


class Sink(Protocol):
    """Where the agent's messages go: the outbox (normally) or standard output (dry run)."""

    def add_event(self, topic: str, build: EventBuilder) -> Event: ...

    def add(self, topic: str, payload: Message) -> None: ...


class OutboxSink:
    """Messages into the SQLite outbox, then a nudge to the publisher."""

    def __init__(self, outbox: Outbox, publisher: OutboxPublisher) -> None:
        self.outbox = outbox
        self.publisher = publisher

    def add_event(self, topic: str, build: EventBuilder) -> Event:
        event = self.outbox.add_event(topic, build)
        self.publisher.wake()
        return event

    def add(self, topic: str, payload: Message) -> None:
        self.outbox.add(topic, payload.to_json())
        self.publisher.wake()


def printable(message: Message) -> dict[str, Any]:
    """A message as JSON data with image bytes replaced by their size (for ``--dry-run``)."""
    doc: dict[str, Any] = json.loads(message.to_json())
    snap = doc.get("snapshot")
    if isinstance(snap, dict):
        for key in ("jpeg_b64", "crop_b64"):
            if snap.get(key):
                snap[key] = f"<{len(snap[key]) * 3 // 4} bytes of JPEG>"
    return doc


class PrintSink:
    """Dry run: one JSON line per message on ``out``; nothing is stored or sent."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.seq = 0
        self._lock = threading.Lock()

    def print(self, topic: str, message: Message) -> None:
        line = json.dumps({"topic": topic, "message": printable(message)}, ensure_ascii=False)
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def add_event(self, topic: str, build: EventBuilder) -> Event:
        with self._lock:
            self.seq += 1
            event = build(self.seq)
        self.print(topic, event)
        return event

    def add(self, topic: str, payload: Message) -> None:
        self.print(topic, payload)


def detector_floor(
    settings: EdgeSettings,
    cameras: Sequence[EdgeCamera],
    model_thresholds: Mapping[str, float] | None = None,
) -> float:
    """The lowest ``keep_confidence`` any rule uses, including the rules made from the model's
    operating thresholds for classes the site does not configure: the detector must report
    down to it."""
    rules: list[ClassRule] = [ClassRule(), *settings.classes.values()]
    for cam in cameras:
        rules += cam.classes.values()
    rules += [model_default_rule(t) for t in (model_thresholds or {}).values()]
    return min(r.keep_confidence for r in rules)


def sidecar_thresholds(model: object) -> dict[str, float]:
    """The operating thresholds in a model file's metadata record, read without loading the
    model (empty when it has none or it cannot be read: loading it reports that)."""
    if not isinstance(model, str | Path):
        return {}
    sidecar = sidecar_path(Path(model))
    try:
        meta = ModelMetadata.model_validate_json(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.debug("no thresholds from %s: %s", sidecar, exc)
        return {}
    return dict(meta.thresholds)


class EdgeAgent:
    """One edge box: its cameras, its sensors, its outbox and its connection."""

    def __init__(
        self,
        loaded: LoadedSettings,
        clock: Clock | None = None,
        *,
        dry_run: bool = False,
        out: TextIO | None = None,
    ) -> None:
        self.loaded = loaded
        self.settings = loaded.settings
        self.clock = clock or SystemClock()
        self.dry_run = dry_run
        self.device_id = self.settings.device_id
        self.pool = DetectorPool()
        self.workers: dict[str, CameraWorker] = {}
        self.device_config: DeviceConfig | None = None
        self.status_interval_s = self.settings.status_interval_s
        self.reporter = StatusReporter(self.device_id)
        self._errors: deque[tuple[float, str]] = deque(maxlen=20)
        self._camera_errors: dict[str, str] = dict(loaded.rejected_cameras)
        self._sensors: dict[str, Sensor] = {s.id: s for s in self.settings.sensors}
        self._sensor_states: dict[str, SensorState] = {s: SensorState() for s in self._sensors}
        self._sensor_seen: dict[str, Reading] = {}
        self._input_errors: dict[str, str] = {}
        self._readers: list[SensorInputReader] = []
        self._sensor_lock = threading.Lock()
        self._unknown_sensors: set[str] = set()
        self._stop = threading.Event()
        self._control: queue.Queue[Callable[[], None]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self.outbox: Outbox | None = None
        self.publisher: OutboxPublisher | None = None
        self.bus: BusClient | None = None
        self.sink: Sink
        if dry_run:
            self.sink = PrintSink(out or sys.stdout)
        else:
            self.outbox = Outbox(self.settings.outbox.path, self.settings.outbox, self.clock)
            self.bus = self._make_bus()
            self.publisher = OutboxPublisher(self.outbox, self.bus, self.settings.outbox)
            self.sink = OutboxSink(self.outbox, self.publisher)

    # -- setup ---------------------------------------------------------------------------
    def _make_bus(self) -> BusClient:
        b = self.settings.broker
        offline = DeviceStatus(device_id=self.device_id, online=False, ts=self.clock.now())
        bus = BusClient(
            BusSettings(
                client_id=f"edge-{self.device_id}",
                host=b.host,
                port=b.port,
                username=b.username or self.device_id,
                password=b.password,
                keepalive_s=b.keepalive_s,
                tls=TlsSettings(ca_file=b.ca_file) if b.tls else None,
                will=Will(topic=topics.status(self.device_id), payload=offline.to_json()),
            )
        )
        bus.subscribe(topics.device_config(self.device_id), self._on_config)
        bus.subscribe(topics.command(self.device_id), self._on_command)
        bus.on_connected(lambda _present: self._control.put(self.publish_status))
        return bus

    def note_error(self, message: str) -> None:
        """An agent-level problem: logged, and shown in the status for a while."""
        log.error("%s", message, extra={"device_id": self.device_id})
        self._errors.append((time.monotonic(), message))

    def _thread(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def start(self) -> None:
        """Start everything; returns at once (the connection is made in the background)."""
        for cam_id, message in self._camera_errors.items():
            log.error("camera %s left out: %s", cam_id, message, extra={"camera_id": cam_id})
        self._reconcile()
        self._start_readers()
        if self.bus is not None and self.publisher is not None:
            self.publisher.start()
            self.bus.start()
        self._thread(self._control_loop, "agent-control")
        self._thread(self._status_loop, "agent-status")
        log.info(
            "edge agent %s started: %d cameras, %d sensors%s",
            self.device_id,
            len(self.workers),
            len(self._sensors),
            " (dry run)" if self.dry_run else "",
            extra={"device_id": self.device_id},
        )

    def _start_readers(self) -> None:
        for i, cfg in enumerate(self.settings.sensor_inputs):
            reader = make_reader(
                cfg,
                list(self._sensors.values()),
                self._on_reading,
                self._input_error_setter(i),
                self.clock,
                client_id=f"edge-{self.device_id}-sensors-{i}",
            )
            self._readers.append(reader)
            reader.start()

    def _stop_readers(self) -> None:
        for reader in self._readers:
            reader.stop()
        self._readers.clear()
        self._input_errors.clear()

    def stop(self) -> None:
        """Stop cleanly: cameras and readers, an offline status, then the connection."""
        self._stop.set()
        self._stop_readers()
        for worker in self.workers.values():
            worker.stop()
        for t in self._threads:
            t.join(10)
        if self.bus is not None and self.publisher is not None and self.outbox is not None:
            if self.bus.connected:
                done = self.bus.publish(
                    topics.status(self.device_id), self.status(online=False), retain=True
                )
                done.wait(3)
            self.publisher.stop()
            self.bus.stop()
            self.outbox.close()
        elif isinstance(self.sink, PrintSink):
            self.sink.print(topics.status(self.device_id), self.status(online=False))
        log.info("edge agent %s stopped", self.device_id, extra={"device_id": self.device_id})

    def finished(self) -> bool:
        """True when every camera's source has ended and no sensor input runs (files, tests)."""
        return not self._readers and all(w.ended.is_set() for w in self.workers.values())

    # -- configuration -------------------------------------------------------------------
    def _effective_cameras(self) -> dict[str, EdgeCamera]:
        """The file's cameras with the retained config's overrides applied."""
        cams = {c.id: c for c in self.settings.cameras}
        dc = self.device_config
        if dc is None:
            return cams
        for cam_id, override in dc.cameras.items():
            base = cams.get(cam_id)
            if base is None:
                self.note_error(f"config revision {dc.revision}: unknown camera {cam_id!r}")
                continue
            changes = override.model_dump(exclude_none=True)
            try:
                cams[cam_id] = EdgeCamera.model_validate({**base.model_dump(), **changes})
            except ValidationError as exc:
                self.note_error(f"config revision {dc.revision}: camera {cam_id}: {exc}")
        return cams

    def _detector_config(self, cam: EdgeCamera, floor: float) -> dict[str, Any]:
        config = self.settings.detector_config(cam)
        if self.device_config is not None and self.device_config.model is not None:
            config["model"] = self.device_config.model.path
        if "conf" not in config and "class_conf" not in config:
            config["conf"] = floor
        return config

    def _reconcile(self, restart_ended: bool = False) -> None:
        """Start, reconfigure or stop camera workers to match the effective config.

        A running worker takes new settings at its next frame (and reopens its source if the
        source changed); ``restart_ended`` also restarts workers whose source ended or failed.
        """
        cams = self._effective_cameras()
        thresholds: dict[str, float] = {}
        for cam in cams.values():
            model = self._detector_config(cam, 0.0).get("model")
            thresholds.update(sidecar_thresholds(model))
        floor = detector_floor(self.settings, list(cams.values()), thresholds)
        keys: set[str] = set()
        for cam_id, running in list(self.workers.items()):
            if cam_id not in cams or not cams[cam_id].enabled:
                running.stop()
                del self.workers[cam_id]
                log.info(
                    "camera %s stopped (removed or disabled)", cam_id, extra={"camera_id": cam_id}
                )
        for cam_id, cam in cams.items():
            if not cam.enabled:
                continue
            det = self._detector_config(cam, floor)
            keys.add(self.pool.key(det))
            worker: CameraWorker | None = self.workers.get(cam_id)
            if worker is not None and worker.ended.is_set() and restart_ended:
                worker.stop()
                worker = None
            if worker is None:
                worker = CameraWorker(cam, self.settings, det, self.pool, self._emit, self.clock)
                self.workers[cam_id] = worker
                worker.start()
            else:
                worker.configure(cam, self.settings, det)
        self.pool.retain_only(keys)

    def apply_device_config(self, config: DeviceConfig) -> None:
        """Apply a retained config from the dispatcher (ignores revisions already applied)."""
        if config.device_id != self.device_id:
            self.note_error(
                f"config for device {config.device_id!r} ignored (we are {self.device_id})"
            )
            return
        current = self.device_config
        if current is not None and config.revision <= current.revision:
            return
        self.device_config = config
        if config.status_interval_s is not None:
            self.status_interval_s = config.status_interval_s
        self._reconcile()
        log.info("config revision %s applied", config.revision, extra={"device_id": self.device_id})

    def reload(self) -> str:
        """Re-read the YAML file and apply it; on error keep running as before."""
        try:
            loaded = load_edge_settings(self.loaded.path)
        except ConfigError as exc:
            self.note_error(f"reload failed, keeping the running config: {exc}")
            raise
        if loaded.settings.device_id != self.device_id:
            message = f"reload: device_id changed to {loaded.settings.device_id!r}; restart needed"
            self.note_error(message)
            raise ConfigError(self.loaded.path, [message])
        inputs_changed = (loaded.settings.sensor_inputs, loaded.settings.sensors) != (
            self.settings.sensor_inputs,
            self.settings.sensors,
        )
        if inputs_changed:
            self._stop_readers()
        self.loaded = loaded
        self.settings = loaded.settings
        self._camera_errors = dict(loaded.rejected_cameras)
        with self._sensor_lock:
            self._sensors = {s.id: s for s in self.settings.sensors}
            for sid in self._sensors:
                self._sensor_states.setdefault(sid, SensorState())
        self.status_interval_s = (
            self.device_config.status_interval_s
            if self.device_config and self.device_config.status_interval_s
            else self.settings.status_interval_s
        )
        self._reconcile(restart_ended=True)
        if inputs_changed:
            self._start_readers()
        return f"reloaded {self.loaded.path}: {len(self.workers)} cameras running"

    # -- bus handlers (network thread: hand work to the control thread) ----------------
    def _on_config(self, d: Delivery) -> None:
        if not d.payload:
            log.info(
                "retained config removed; keeping the current settings",
                extra={"device_id": self.device_id},
            )
            return
        try:
            config = DeviceConfig.from_json(d.payload)
        except MessageError as exc:
            self.note_error(
                f"bad config message on {d.topic}: {exc.reason}; keeping the current one"
            )
            return
        self._control.put(lambda: self.apply_device_config(config))

    def _on_command(self, d: Delivery) -> None:
        try:
            cmd = Command.from_json(d.payload)
        except MessageError as exc:
            self.note_error(f"bad command on {d.topic}: {exc.reason}")
            return
        self._control.put(lambda: self.handle_command(cmd))

    def _control_loop(self) -> None:
        while not self._stop.is_set():
            try:
                task = self._control.get(timeout=0.5)
            except queue.Empty:
                for w in list(self.workers.values()):
                    w.expire_requests()
                continue
            try:
                task()
            except Exception as exc:
                log.exception("control task failed")
                self.note_error(f"control task failed: {exc}")

    # -- commands ------------------------------------------------------------------------
    def _result(self, cmd: Command, outcome: str, detail: str, **extra: Any) -> CommandResult:
        return CommandResult(
            command_id=cmd.command_id,
            device_id=self.device_id,
            action=cmd.action,
            ts=self.clock.now(),
            outcome=outcome,
            camera_id=cmd.camera_id,
            ticket_id=cmd.ticket_id,
            detail=detail[:1000],
            **extra,
        )

    def answer(self, result: CommandResult) -> None:
        self.sink.add(topics.command_result(self.device_id), result)
        log.info(
            "command %s %s: %s (%s)",
            result.action,
            result.command_id,
            result.outcome,
            result.detail,
            extra={"device_id": self.device_id},
        )

    def handle_command(self, cmd: Command) -> None:
        """Run one command; the answer goes out on ``cmd/result`` through the outbox."""
        if cmd.device_id != self.device_id:
            self.answer(self._result(cmd, "error", f"command is for {cmd.device_id}"))
            return
        age = (self.clock.now() - cmd.issued_at).total_seconds()
        if age > cmd.timeout_s:
            self.answer(
                self._result(
                    cmd, "error", f"expired: issued {age:.0f}s ago, timeout {cmd.timeout_s:.0f}s"
                )
            )
            return
        if cmd.action == "reload":
            try:
                self.answer(self._result(cmd, "done", self.reload()))
            except ConfigError as exc:
                self.answer(self._result(cmd, "error", str(exc)))
            return
        cam_id = cmd.camera_id or next(iter(self.workers), None)
        worker = self.workers.get(cam_id) if cam_id else None
        if worker is None:
            self.answer(self._result(cmd, "error", f"no running camera {cam_id!r} on this device"))
            return
        if cmd.action == "verify":
            self._verify(cmd, worker)
        else:
            self._snapshot(cmd, worker)

    def _evidence(self, frame: Frame, marks: Sequence[Mark]) -> Evidence | None:
        try:
            return make_evidence(frame.image, marks, None, self.settings.evidence)
        except Exception:
            log.exception("could not encode a command snapshot")
            return None

    def _verify(self, cmd: Command, worker: CameraWorker) -> None:
        kind = cmd.kind or ""
        keep = worker.class_rule(kind).keep_confidence

        def done(seen: list[tuple[Frame, Any]]) -> None:
            checks = [
                VerifyCheck(dets, f.image.shape[1], f.image.shape[0])
                for f, dets in seen
                if dets is not None
            ]
            verdict = judge_verify(checks, kind, cmd.region, keep)
            snapshot = self._evidence(seen[-1][0], verdict.marks) if seen else None
            self.answer(
                self._result(
                    cmd,
                    verdict.outcome,
                    verdict.detail,
                    confidence=None if verdict.confidence is None else round(verdict.confidence, 4),
                    snapshot=snapshot,
                )
            )

        worker.request(cmd.checks, True, cmd.timeout_s, done)

    def _snapshot(self, cmd: Command, worker: CameraWorker) -> None:
        def done(seen: list[tuple[Frame, Any]]) -> None:
            if not seen:
                self.answer(self._result(cmd, "error", "no frame from the camera in time"))
                return
            marks = [
                Mark(t.state.box, f"{t.class_name} {t.state.phase}", SNAPSHOT_COLOUR)
                for t in list(worker.tracker.tracks.values())
            ]
            snapshot = self._evidence(seen[-1][0], marks)
            self.answer(
                self._result(
                    cmd, "done" if snapshot else "error", f"{len(marks)} tracks", snapshot=snapshot
                )
            )

        worker.request(1, False, cmd.timeout_s, done)

    # -- events --------------------------------------------------------------------------
    def _emit(self, build: EventBuilder) -> bool:
        """A camera's event into the outbox; False (logged, shown in the status) if it could
        not be stored: the camera keeps its track as it was and retries at its next check."""
        return self._store_event(build)

    def _store_event(self, build: EventBuilder) -> bool:
        """Store an event for publishing; False (logged, shown in the status) if it could not be."""
        try:
            self.sink.add_event(topics.event(self.device_id), build)
        except Exception as exc:
            log.exception("could not store an event in the outbox")
            self.note_error(f"event not stored: {exc}")
            return False
        return True

    def _input_error_setter(self, index: int) -> Callable[[str | None], None]:
        key = f"sensor input {index}"

        def set_error(message: str | None) -> None:
            if message is None:
                self._input_errors.pop(key, None)
            else:
                if self._input_errors.get(key) != message:
                    log.error("%s: %s", key, message, extra={"device_id": self.device_id})
                self._input_errors[key] = message

        return set_error

    def _on_reading(self, reading: Reading) -> None:
        """Judge one reading; a change of alarm is stored as an event before the sensor's state
        moves on (under the sensor lock, so no other reading sees a change that was not
        stored). If the outbox cannot store it, the state stays as it was and the next reading
        that still crosses the threshold tries again."""
        with self._sensor_lock:
            sensor = self._sensors.get(reading.sensor_id)
            if sensor is None:
                if (
                    reading.sensor_id not in self._unknown_sensors
                    and len(self._unknown_sensors) < 1000
                ):
                    self._unknown_sensors.add(reading.sensor_id)
                    self.note_error(f"reading for unknown sensor {reading.sensor_id!r} ignored")
                return
            before = self._sensor_states[sensor.id]
            state, action = judge_reading(before, sensor, reading.value, reading.t)
            self._sensor_seen[sensor.id] = reading
            if action is not None and not self._report_reading(sensor, reading, state, action):
                state = unreported(before, reading.value, reading.t)
            self._sensor_states[sensor.id] = state

    def _report_reading(
        self, sensor: Sensor, reading: Reading, state: SensorState, action: SensorAction
    ) -> bool:
        """Store the event for a sensor's change of alarm; False if it could not be stored."""
        track = f"{sensor.id}-{state.alarms}"

        def build(seq: int) -> Event:
            return Event(
                event_id=uuid.uuid4(),
                device_id=self.device_id,
                source_id=sensor.id,
                source_type="sensor",
                kind=sensor.kind,
                state=action,
                seq=seq,
                ts=reading.ts,
                track_id=track,
                reading=reading.value,
                measure=sensor.measure,
                position=sensor.position,
            )

        stored = self._store_event(build)
        log.log(
            logging.INFO if stored else logging.WARNING,
            "sensor %s: %s %s at %s %s%s",
            sensor.id,
            action,
            sensor.kind,
            reading.value,
            sensor.measure,
            "" if stored else " not stored; the next reading that still crosses retries",
            extra={"sensor_id": sensor.id},
        )
        return stored

    # -- status --------------------------------------------------------------------------
    def _camera_snapshots(self) -> list[CameraSnapshot]:
        return [w.snapshot() for w in self.workers.values()]

    def status(self, online: bool = True) -> DeviceStatus:
        """The heartbeat as it stands now."""
        snaps = self._camera_snapshots()
        model_path = self.settings.detector.get("model")
        if self.device_config is not None and self.device_config.model is not None:
            model_path = self.device_config.model.path
        versions = [s.model_version for s in snaps if s.model_version]
        now_mono = time.monotonic()
        errors = [m for at, m in self._errors if now_mono - at < ERROR_SHOWN_S]
        errors += list(self._input_errors.values())
        extra: list[CameraStatus] = []
        for cam_id, message in self._camera_errors.items():
            if cam_id in self.workers:
                continue
            if _is_ident(cam_id):
                extra.append(
                    CameraStatus(camera_id=cam_id, state="error", fps=0, error=message[:500])
                )
            else:
                errors.append(message)
        for cam in self._effective_cameras().values():
            if not cam.enabled and cam.id not in self.workers:
                extra.append(CameraStatus(camera_id=cam.id, state="disabled", fps=0))
        status = self.reporter.build(
            now=self.clock.now(),
            cameras=snaps,
            sensors=self._sensor_status(),
            outbox_depth=self.outbox.depth if self.outbox else 0,
            outbox_evicted=self.outbox.evicted if self.outbox else 0,
            model=Path(str(model_path)).name if model_path else None,
            model_version=versions[0] if versions else None,
            config_revision=self.device_config.revision if self.device_config else None,
            errors=errors,
            online=online,
        )
        if extra:
            status = status.model_copy(update={"cameras": status.cameras + tuple(extra)})
        return status

    def _sensor_status(self) -> list[SensorStatus]:
        out = []
        with self._sensor_lock:
            for sid, state in self._sensor_states.items():
                seen = self._sensor_seen.get(sid)
                out.append(
                    SensorStatus(
                        sensor_id=sid,
                        value=state.value,
                        alarm=state.alarm,
                        last_reading=seen.ts if seen else None,
                    )
                )
        return out

    def publish_status(self) -> None:
        """The retained heartbeat, valid for one status interval: the broker drops it when it
        is older (MQTT v5 message expiry), so a late one is never taken as live by a session
        that was away, and a retained one does not outlive the agent's next beat."""
        status = self.status()
        if isinstance(self.sink, PrintSink):
            self.sink.print(topics.status(self.device_id), status)
        elif self.bus is not None and self.bus.connected:
            self.bus.publish(
                topics.status(self.device_id),
                status,
                retain=True,
                expiry_s=topics.status_expiry_s(self.status_interval_s),
            )

    def _status_loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= next_at:
                self._control.put(self.publish_status)
                next_at = time.monotonic() + self.status_interval_s
            self._stop.wait(min(0.5, max(0.05, next_at - time.monotonic())))


def _is_ident(value: str) -> bool:
    return IDENT.match(value) is not None
