"""Sensor thresholds with hysteresis and debounce, and the readers (a real pty, a real broker)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.client import BusClient, BusSettings
from broker.mosquitto import free_port, wait_for_port
from config.clock import SystemClock
from config.site import GeoPoint, Sensor
from edge.sensors import (
    MqttReader,
    Reading,
    ReadingError,
    SensorState,
    SerialReader,
    SimulatedReader,
    judge_reading,
    parse_reading,
)
from edge.settings import MqttInput, SerialInput, SimulatedInput
from tests.conftest import wait_until

TILT = Sensor(
    id="mh-tilt-01",
    device="node-01",
    kind="manhole_tilt",
    measure="tilt_deg",
    position=GeoPoint(lat=39.9, lon=116.4),
    threshold=15,
    clear_below=5,
    debounce_seconds=10,
)


def feed(values: list[tuple[float, float]], sensor: Sensor = TILT) -> list[tuple[float, str]]:
    state = SensorState()
    out = []
    for t, v in values:
        state, action = judge_reading(state, sensor, v, t)
        if action:
            out.append((t, action))
    return out


def test_alarm_after_debounce_and_clear_below_the_lower_threshold() -> None:
    values = [(float(t), 2.0) for t in range(10)]
    values += [(float(t), 18.0) for t in range(10, 30)]  # above threshold from 10 s
    values += [(float(t), 10.0) for t in range(30, 60)]  # between: still alarmed
    values += [(float(t), 3.0) for t in range(60, 80)]  # below clear_below from 60 s
    assert feed(values) == [(20.0, "new"), (70.0, "cleared")]


def test_a_spike_shorter_than_the_debounce_is_ignored() -> None:
    values = [(float(t), 30.0 if 5 <= t < 12 else 1.0) for t in range(60)]
    assert feed(values) == []


def test_no_debounce_fires_at_once() -> None:
    quick = TILT.model_copy(update={"debounce_seconds": 0})
    assert feed([(0.0, 1.0), (1.0, 16.0), (2.0, 16.0), (3.0, 4.0)], quick) == [
        (1.0, "new"),
        (3.0, "cleared"),
    ]


def test_parse_reading() -> None:
    assert parse_reading("mh-tilt-01 17.5") == ("mh-tilt-01", 17.5)
    assert parse_reading("mh-tilt-01,17.5\r") == ("mh-tilt-01", 17.5)
    assert parse_reading('{"sensor": "bin-fill-01", "value": 93}') == ("bin-fill-01", 93.0)
    for bad in ("", "mh-tilt-01", "mh-tilt-01 abc", "a b c", '{"value": 1}', "x nan"):
        with pytest.raises(ReadingError):
            parse_reading(bad)


class Collected:
    """What a reader handed over: readings and error reports (None: the error went away)."""

    def __init__(self) -> None:
        self.got: list[Reading] = []
        self.errors: list[str | None] = []

    def reading(self, r: Reading) -> None:
        self.got.append(r)

    def error(self, e: str | None) -> None:
        self.errors.append(e)


def test_serial_reader_on_a_pty() -> None:
    master, slave = os.openpty()
    c = Collected()
    reader = SerialReader(
        SerialInput(port=Path(os.ttyname(slave)), baud=9600), c.reading, c.error, SystemClock()
    )
    reader.start()
    try:
        wait_until(lambda: c.errors == [None], 10)  # opened and configured
        os.write(master, b"mh-tilt-01 3.5\nnonsense\n")
        os.write(master, b'{"sensor": "mh-tilt-01", "va')
        os.write(master, b'lue": 21}\n')
        wait_until(lambda: len(c.got) == 2, 10)
        assert [(r.sensor_id, r.value) for r in c.got] == [
            ("mh-tilt-01", 3.5),
            ("mh-tilt-01", 21.0),
        ]
    finally:
        reader.stop()
        os.close(master)
        os.close(slave)


def test_serial_reader_reports_a_missing_port(tmp_path: Path) -> None:
    c = Collected()
    reader = SerialReader(SerialInput(port=tmp_path / "ttyUSB9"), c.reading, c.error, SystemClock())
    reader.start()
    try:
        wait_until(lambda: c.errors, 5)
        assert "ttyUSB9" in str(c.errors[0]) and "cannot open" in str(c.errors[0])
    finally:
        reader.stop()


@pytest.fixture(scope="module")
def field_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A plain local Mosquitto as a sensor gateway would run it (anonymous, loopback only)."""
    state = tmp_path_factory.mktemp("field-broker")
    port = free_port()
    conf = state / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert wait_for_port("127.0.0.1", port, 10)
    yield port
    proc.terminate()
    proc.wait(10)


def test_mqtt_reader(field_broker: int) -> None:
    c = Collected()
    reader = MqttReader(
        MqttInput(port=field_broker, topic="sensors/#"),
        c.reading,
        c.error,
        SystemClock(),
        client_id="t-field-reader",
    )
    reader.start()
    node = BusClient(BusSettings(client_id="t-node", port=field_broker))
    try:
        wait_until(lambda: reader.bus.connected, 10)
        node.start(wait_s=10)
        node.publish("sensors/bin-fill-01", b"91.5")
        node.publish("sensors/any", b'{"sensor": "water-01", "value": 12}')
        node.publish("sensors/any", b"not a number")
        wait_until(lambda: len(c.got) == 2, 10)
        assert sorted((r.sensor_id, r.value) for r in c.got) == [
            ("bin-fill-01", 91.5),
            ("water-01", 12.0),
        ]
    finally:
        node.stop()
        reader.stop()


def test_simulated_reader_makes_excursions_that_outlast_the_debounce() -> None:
    c = Collected()
    sim = SimulatedReader(
        SimulatedInput(problem_rate_per_min=6, seed=3), [TILT], c.reading, c.error, SystemClock()
    )
    state = SensorState()
    actions = []
    for i in range(600):
        sim.step(1.0)
        state, action = judge_reading(state, TILT, c.got[-1].value, float(i))
        if action:
            actions.append(action)
    assert actions[:4] == ["new", "cleared", "new", "cleared"]
