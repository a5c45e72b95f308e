"""Sensor nodes: readings from a serial line, an MQTT topic or a built-in simulator, judged
against each sensor's threshold with hysteresis and debounce into ``new`` / ``cleared``.

A reading line is ``<sensor_id> <value>`` (whitespace or comma separated) or a JSON object
``{"sensor": "<id>", "value": <number>}``. On MQTT the payload is that JSON object, or a bare
number on a topic whose last level is the sensor id.

``judge_reading`` is the pure decision: an alarm is raised once the value has stayed at or
above ``threshold`` for ``debounce_seconds``, and cleared once it has stayed below
``clear_below`` for ``debounce_seconds``; values between the two change nothing. A change
that could not be reported leaves the state ``unreported`` says, so the next reading retries.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import termios
import threading
import time
import tty
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from broker.client import BusClient, BusSettings, Delivery
from config.clock import Clock
from config.site import Sensor
from edge.settings import MqttInput, SensorInput, SerialInput, SimulatedInput

log = logging.getLogger(__name__)

SensorAction = Literal["new", "cleared"]
BAUD_RATES = {
    rate: getattr(termios, f"B{rate}")
    for rate in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
    if hasattr(termios, f"B{rate}")
}


@dataclass(frozen=True)
class Reading:
    """One value from one sensor, with the wall time and a monotonic time."""

    sensor_id: str
    value: float
    ts: datetime
    t: float


@dataclass(frozen=True)
class SensorState:
    """Alarm state of one sensor and when the value first crossed towards a change."""

    alarm: bool = False
    crossing_since: float | None = None
    value: float | None = None
    alarms: int = 0


def judge_reading(
    state: SensorState, sensor: Sensor, value: float, t: float
) -> tuple[SensorState, SensorAction | None]:
    """Advance a sensor's state by one reading at time ``t`` (seconds); return any event."""
    state = replace(state, value=value)
    crossing = value < sensor.clear_below if state.alarm else value >= sensor.threshold
    if not crossing:
        return replace(state, crossing_since=None), None
    since = t if state.crossing_since is None else state.crossing_since
    if t - since < sensor.debounce_seconds:
        return replace(state, crossing_since=since), None
    if state.alarm:
        return SensorState(alarm=False, value=value, alarms=state.alarms), "cleared"
    return SensorState(alarm=True, value=value, alarms=state.alarms + 1), "new"


def unreported(before: SensorState, value: float, t: float) -> SensorState:
    """The state to keep when the change ``judge_reading`` decided on at time ``t`` could not
    be reported (the outbox could not store its event): the alarm as it was, still crossing
    since the crossing began, so the next reading that still crosses reports the change at
    once and one that no longer crosses drops it."""
    since = t if before.crossing_since is None else before.crossing_since
    return replace(before, value=value, crossing_since=since)


class ReadingError(ValueError):
    """A line or payload that is not a reading."""


def parse_reading(text: str) -> tuple[str, float]:
    """``(sensor_id, value)`` from a text line or JSON object."""
    text = text.strip()
    if not text:
        raise ReadingError("empty line")
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            sensor, value = doc["sensor"], float(doc["value"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ReadingError(f"not a reading: {text[:80]!r} ({exc})") from exc
        if not isinstance(sensor, str):
            raise ReadingError(f"sensor id must be a string: {text[:80]!r}")
    else:
        parts = text.replace(",", " ").split()
        if len(parts) != 2:
            raise ReadingError(f"expected '<sensor_id> <value>': {text[:80]!r}")
        sensor = parts[0]
        try:
            value = float(parts[1])
        except ValueError:
            raise ReadingError(f"value is not a number: {text[:80]!r}") from None
    if not math.isfinite(value):
        raise ReadingError(f"value is not finite: {text[:80]!r}")
    return sensor, value


OnReading = Callable[[Reading], None]
OnError = Callable[[str | None], None]


class SensorInputReader(ABC):
    """A thread that turns an input into readings."""

    def __init__(self, on_reading: OnReading, on_error: OnError, clock: Clock) -> None:
        self.on_reading = on_reading
        self.on_error = on_error
        self.clock = clock
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def emit(self, sensor_id: str, value: float) -> None:
        self.on_reading(Reading(sensor_id, value, self.clock.now(), time.monotonic()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_safely, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run_safely(self) -> None:
        try:
            self.run()
        except Exception as exc:
            log.exception("sensor input %s failed", self.name)
            self.on_error(f"{self.name}: {exc}")

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    def run(self) -> None: ...


class SerialReader(SensorInputReader):
    """Lines from a serial port (or any character device or pipe); reopens with backoff."""

    def __init__(self, cfg: SerialInput, on_reading: OnReading, on_error: OnError, clock: Clock):
        super().__init__(on_reading, on_error, clock)
        self.cfg = cfg

    @property
    def name(self) -> str:
        return f"serial:{self.cfg.port}"

    def _configure(self, fd: int) -> None:
        if not os.isatty(fd):
            return
        tty.setraw(fd, termios.TCSANOW)
        attrs = termios.tcgetattr(fd)
        speed = BAUD_RATES.get(self.cfg.baud)
        if speed is None:
            raise ValueError(f"unsupported baud rate {self.cfg.baud}")
        attrs[4] = attrs[5] = speed
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    def run(self) -> None:
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                fd = os.open(self.cfg.port, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError as exc:
                self.on_error(f"{self.name}: cannot open: {exc.strerror or exc}")
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 60)
                continue
            try:
                self._configure(fd)
                self.on_error(None)
                backoff = 1.0
                self._read_lines(fd)
            except OSError as exc:
                self.on_error(f"{self.name}: read failed: {exc.strerror or exc}")
            finally:
                os.close(fd)
            self.stop_event.wait(backoff)

    def _read_lines(self, fd: int) -> None:
        buf = b""
        while not self.stop_event.is_set():
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                self.stop_event.wait(0.05)
                continue
            if not chunk:
                self.stop_event.wait(0.1)  # a pipe with no writer, or the line went quiet
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line:
                    continue
                try:
                    self.emit(*parse_reading(line))
                except ReadingError as exc:
                    log.warning("%s: %s", self.name, exc)


class MqttReader(SensorInputReader):
    """Readings published on a topic of a field broker (its own connection)."""

    def __init__(
        self, cfg: MqttInput, on_reading: OnReading, on_error: OnError, clock: Clock, client_id: str
    ) -> None:
        super().__init__(on_reading, on_error, clock)
        self.cfg = cfg
        self.bus = BusClient(
            BusSettings(
                client_id=client_id,
                host=cfg.host,
                port=cfg.port,
                username=cfg.username,
                password=cfg.password,
                clean_start=True,
                session_expiry_s=0,
            )
        )
        self.bus.subscribe(cfg.topic, self._on_message, qos=1)
        self.bus.on_connected(lambda _present: self.on_error(None))
        self.bus.on_disconnected(lambda reason: self.on_error(f"{self.name}: {reason}"))

    @property
    def name(self) -> str:
        return f"mqtt:{self.cfg.host}:{self.cfg.port}/{self.cfg.topic}"

    def _on_message(self, d: Delivery) -> None:
        text = d.payload.decode("utf-8", errors="replace").strip()
        try:
            if text.startswith("{"):
                sensor, value = parse_reading(text)
            else:
                sensor, value = parse_reading(f"{d.topic.rsplit('/', 1)[-1]} {text}")
        except ReadingError as exc:
            log.warning("%s: %s on %s", self.name, exc, d.topic, extra={"topic": d.topic})
            return
        self.emit(sensor, value)

    def run(self) -> None:
        self.bus.start()
        self.stop_event.wait()
        self.bus.stop()


class SimulatedReader(SensorInputReader):
    """Noise around a normal level per sensor, with occasional excursions over the threshold
    that last 20-40 s (longer than the default debounce) and then drop back (demos)."""

    def __init__(
        self,
        cfg: SimulatedInput,
        sensors: Sequence[Sensor],
        on_reading: OnReading,
        on_error: OnError,
        clock: Clock,
    ) -> None:
        super().__init__(on_reading, on_error, clock)
        self.cfg = cfg
        self.sensors = list(sensors)
        self.rnd = random.Random(cfg.seed)
        self.elapsed = 0.0
        self.high_until = {s.id: -1.0 for s in self.sensors}

    @property
    def name(self) -> str:
        return "simulated"

    def step(self, dt: float) -> None:
        self.elapsed += dt
        for s in self.sensors:
            if self.high_until[s.id] < self.elapsed and (
                self.rnd.random() < self.cfg.problem_rate_per_min * dt / 60
            ):
                self.high_until[s.id] = self.elapsed + self.rnd.uniform(20, 40)
            if self.high_until[s.id] >= self.elapsed:
                value = s.threshold * self.rnd.uniform(1.1, 1.3)
            else:
                value = s.clear_below * self.rnd.uniform(0.3, 0.6)
            self.emit(s.id, round(value, 2))

    def run(self) -> None:
        while not self.stop_event.wait(self.cfg.interval_s):
            self.step(self.cfg.interval_s)


def make_reader(
    cfg: SensorInput,
    sensors: Sequence[Sensor],
    on_reading: OnReading,
    on_error: OnError,
    clock: Clock,
    client_id: str,
) -> SensorInputReader:
    """The reader for one configured input."""
    if isinstance(cfg, SerialInput):
        return SerialReader(cfg, on_reading, on_error, clock)
    if isinstance(cfg, MqttInput):
        return MqttReader(cfg, on_reading, on_error, clock, client_id)
    return SimulatedReader(cfg, sensors, on_reading, on_error, clock)
