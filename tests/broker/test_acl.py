"""The generated ACL against a real Mosquitto: devices stay inside their own topics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from broker import topics
from broker.client import BusClient, BusError, BusSettings, Delivery
from broker.mosquitto import MosquittoServer
from config.site import Site


def collect(bus: BusClient, topic_filter: str) -> list[Delivery]:
    got: list[Delivery] = []
    bus.subscribe(topic_filter, got.append)
    return got


def test_device_cannot_publish_as_another_device(
    site: Site, device_bus: Callable[..., BusClient]
) -> None:
    # No session left behind: a persistent one would hold a subscription to every device's
    # events for a day, across broker restarts, and take events meant for the dispatcher.
    watcher = device_bus(
        "dispatcher",
        site.broker.dispatcher_password.get_secret_value(),
        clean_start=True,
        session_expiry_s=0,
    )
    seen = collect(watcher, topics.all_edge("event"))
    watcher.start(wait_s=10)
    intruder = device_bus("edge-01")
    intruder.start(wait_s=10)
    forged = intruder.publish(topics.event("edge-02"), b'{"forged": true}')
    honest = intruder.publish(topics.event("edge-01"), b'{"honest": true}')
    deadline = time.monotonic() + 5
    while not (forged.done() and honest.done() and seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert [d.topic for d in seen] == [topics.event("edge-01")]
    assert intruder.last_error is None


def test_device_cannot_push_tickets_or_read_other_commands(
    site: Site, device_bus: Callable[..., BusClient]
) -> None:
    dispatcher = device_bus(
        "dispatcher",
        site.broker.dispatcher_password.get_secret_value(),
        clean_start=True,
        session_expiry_s=0,
    )
    tickets_seen = collect(dispatcher, f"{topics.ROOT}/worker/+/tickets")
    dispatcher.start(wait_s=10)
    spy = device_bus("edge-01")
    stolen = collect(spy, topics.command("edge-02"))
    own = collect(spy, topics.command("edge-01"))
    spy.start(wait_s=10)
    spy.publish(topics.worker_tickets("w01"), b'{"fake": "ticket"}')
    time.sleep(0.3)
    dispatcher.publish(topics.command("edge-02"), b'{"cmd": "for edge-02"}')
    dispatcher.publish(topics.command("edge-01"), b'{"cmd": "for edge-01"}')
    deadline = time.monotonic() + 5
    while not own and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert [d.payload for d in own] == [b'{"cmd": "for edge-01"}']
    assert stolen == []
    assert tickets_seen == []


@pytest.mark.parametrize("username,password", [(None, None), ("edge-01", "wrong"), ("nobody", "x")])
def test_bad_logins_are_refused(
    mosquitto: MosquittoServer, username: str | None, password: str | None
) -> None:
    bus = BusClient(
        BusSettings(
            client_id=f"bad-{uuid.uuid4().hex[:6]}",
            port=mosquitto.port,
            username=username,
            password=password,
        )
    )
    with pytest.raises(BusError, match=r"Not authorized|refused"):
        bus.start(wait_s=3)
