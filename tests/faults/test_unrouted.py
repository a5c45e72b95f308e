"""A publish nobody is subscribed to: Mosquitto PUBACKs it with "No matching subscribers" and
drops it. A sender that must not lose it (the edge outbox) hears of it through ``on_unrouted``
instead of ``on_acknowledged``, and keeps the message.

The test has a broker of its own: on the session's broker, the persistent sessions of earlier
tests' dispatchers still hold subscriptions to every device's events, so nothing is unrouted
there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import topics
from broker.client import Delivery
from config.site import Site
from tests.conftest import DeviceFactory, broker_of_its_own, wait_until


@pytest.fixture
def own_broker(site: Site, tmp_path: Path) -> Iterator[DeviceFactory]:
    """Connections to a Mosquitto that only this test uses (same accounts and ACL)."""
    with broker_of_its_own(site, tmp_path) as (_, connect):
        yield connect


def test_unrouted_publish_is_not_reported_as_acknowledged(
    site: Site, own_broker: DeviceFactory
) -> None:
    group = f"g{uuid.uuid4().hex[:8]}"
    device = own_broker("edge-02")
    acked: list[tuple[int, bool]] = []
    unrouted: list[int] = []
    device.on_acknowledged(lambda mid, ok: acked.append((mid, ok)))
    device.on_unrouted(unrouted.append)
    device.start(wait_s=10)

    lonely = device.publish(topics.event("edge-02"), b'{"nobody": "listens"}')
    wait_until(lambda: lonely.mid in unrouted)
    assert acked == []

    consumer = own_broker("dispatcher", site.broker.dispatcher_password.get_secret_value())
    got: list[Delivery] = []
    consumer.subscribe(topics.shared(topics.all_edge("event"), group), got.append)
    consumer.start(wait_s=10)

    def routed() -> bool:
        """Publish once; True if a subscriber got it (the SUBSCRIBE may still be on its way)."""
        p = device.publish(topics.event("edge-02"), b'{"someone": "listens"}')
        wait_until(lambda: p.mid in unrouted or (p.mid, True) in acked)
        return (p.mid, True) in acked

    wait_until(routed)
    wait_until(lambda: got)
    assert {d.payload for d in got} == {b'{"someone": "listens"}'}
    assert unrouted[0] == lonely.mid
