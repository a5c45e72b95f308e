"""What a restarted Mosquitto 2.0 remembers of its sessions, and what that does to a PUBACK.

A persistent session's plain subscription is saved and restored; a shared one is not (until
its client subscribes again). So after a restart the broker answers a publish with "No
matching subscribers" only when no other session subscribes: one left behind by any other
client makes it a plain success, though the dispatcher got nothing. The edge outbox must not
take that success for delivery (tests/edge/test_outbox_delivery.py); and a client that will
not come back ends its session (``BusClient.stop(end_session=True)``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import topics
from broker.client import BusClient
from broker.mosquitto import MosquittoServer
from config.site import Site
from tests.conftest import DeviceFactory, broker_of_its_own, wait_until


@pytest.fixture
def own_broker(site: Site, tmp_path: Path) -> Iterator[tuple[MosquittoServer, DeviceFactory]]:
    """A Mosquitto that only this test uses (same accounts and ACL), and connections to it."""
    with broker_of_its_own(site, tmp_path) as pair:
        yield pair


def answer(device: BusClient, payload: bytes) -> str:
    """Publish one event as the device; the broker's answer."""
    answers: dict[int, str] = {}

    def acknowledged(mid: int, ok: bool) -> None:
        answers[mid] = "ok" if ok else "refused"

    def unrouted(mid: int) -> None:
        answers[mid] = "no matching subscribers"

    device.on_acknowledged(acknowledged)
    device.on_unrouted(unrouted)
    p = device.publish(topics.event("edge-02"), payload)
    wait_until(lambda: p.mid in answers, 10)
    return answers[p.mid]


def test_after_a_restart_another_sessions_subscription_hides_the_lost_shared_one(
    site: Site, own_broker: tuple[MosquittoServer, DeviceFactory]
) -> None:
    server, connect = own_broker
    password = site.broker.dispatcher_password.get_secret_value()
    dispatcher = connect("dispatcher", password, client_id=f"t-d-{uuid.uuid4().hex[:6]}")
    dispatcher.subscribe(topics.shared(topics.all_edge("event"), "g"), lambda d: None)
    dispatcher.start(wait_s=10)
    monitor = connect("dispatcher", password, client_id=f"t-m-{uuid.uuid4().hex[:6]}")
    monitor.subscribe(topics.all_edge("event"), lambda d: None)
    monitor.start(wait_s=10)
    monitor.stop()  # its session stays (a day, by default), subscribed
    dispatcher.stop()
    server.stop()
    server.start()
    device = connect("edge-02")
    device.start(wait_s=10)
    assert answer(device, b'{"n": 1}') == "ok"  # yet no dispatcher is subscribed

    ended = connect("dispatcher", password, client_id=monitor.settings.client_id)
    ended.start(wait_s=10)  # the monitor's session is still there ...
    ended.stop(end_session=True)  # ... until its client ends it
    assert answer(device, b'{"n": 2}') == "no matching subscribers"
