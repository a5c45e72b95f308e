"""MQTT v5 message expiry against a real Mosquitto: a heartbeat published with ``expiry_s`` is
dropped by the broker once it is that old, from a persistent session's queue and as the
retained message, so a subscriber that was away never takes a stale one for a live one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from broker import topics
from broker.client import BusClient, Delivery
from broker.messages import DeviceStatus
from config.site import Site

DEVICE = "edge-04"
EXPIRY_S = 1
# Mosquitto counts expiry in whole seconds: a message may live up to a second longer.
PAST_EXPIRY_S = EXPIRY_S + 1.5


def heartbeat(uptime_s: float) -> bytes:
    now = datetime.now(UTC)
    return DeviceStatus(device_id=DEVICE, online=True, ts=now, uptime_s=uptime_s).to_json()


def uptimes(got: list[Delivery]) -> list[float]:
    return [DeviceStatus.from_json(d.payload).uptime_s for d in got if d.payload]


def acknowledged(
    bus: BusClient,
    topic: str,
    payload: bytes,
    *,
    retain: bool = False,
    expiry_s: int | None = None,
) -> None:
    done = bus.publish(topic, payload, retain=retain, expiry_s=expiry_s)
    deadline = time.monotonic() + 5
    while not done.done():
        assert time.monotonic() < deadline, "no PUBACK"
        time.sleep(0.02)


def wait_for(got: list[Delivery], count: int, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_queued_message_past_its_expiry_is_not_delivered_when_the_session_returns(
    site: Site, device_bus: Callable[..., BusClient]
) -> None:
    password = site.broker.dispatcher_password.get_secret_value()
    session = f"t-expiry-{uuid.uuid4().hex[:6]}"
    subscriber = device_bus("dispatcher", password, client_id=session, clean_start=False)
    subscriber.subscribe(topics.status(DEVICE), lambda d: None)
    subscriber.start(wait_s=10)
    time.sleep(0.3)  # the subscription is made
    subscriber.stop()  # the session stays on the broker and queues what it would get

    device = device_bus(DEVICE)
    device.start(wait_s=10)
    topic = topics.status(DEVICE)
    acknowledged(device, topic, heartbeat(1.0), expiry_s=EXPIRY_S)
    acknowledged(device, topic, heartbeat(2.0), expiry_s=300)
    acknowledged(device, topic, heartbeat(3.0))  # no expiry
    time.sleep(PAST_EXPIRY_S)

    got: list[Delivery] = []
    back = device_bus("dispatcher", password, client_id=session, clean_start=False)
    back.subscribe(topics.status(DEVICE), got.append)
    back.start(wait_s=10)
    wait_for(got, 2)
    time.sleep(0.5)  # anything else queued would have come by now
    assert uptimes([d for d in got if not d.retain]) == [2.0, 3.0]


def test_a_retained_message_past_its_expiry_is_gone(
    site: Site, device_bus: Callable[..., BusClient]
) -> None:
    password = site.broker.dispatcher_password.get_secret_value()
    topic = topics.status(DEVICE)
    device = device_bus(DEVICE)
    device.start(wait_s=10)

    def retained_now() -> list[float]:
        got: list[Delivery] = []
        watcher = device_bus("dispatcher", password, clean_start=True)
        watcher.subscribe(topic, got.append)
        watcher.start(wait_s=10)
        wait_for(got, 1, timeout_s=1.5)
        watcher.stop()
        return uptimes([d for d in got if d.retain])

    try:
        acknowledged(device, topic, heartbeat(10.0), retain=True, expiry_s=300)
        assert retained_now() == [10.0]
        acknowledged(device, topic, heartbeat(11.0), retain=True, expiry_s=EXPIRY_S)
        assert retained_now() == [11.0]
        time.sleep(PAST_EXPIRY_S)
        assert retained_now() == []
    finally:
        acknowledged(device, topic, b"", retain=True)


def test_an_expiry_below_one_second_is_refused(device_bus: Callable[..., BusClient]) -> None:
    device = device_bus(DEVICE)
    with pytest.raises(ValueError, match="at least 1 s"):
        device.publish(topics.status(DEVICE), heartbeat(0.0), expiry_s=0)
