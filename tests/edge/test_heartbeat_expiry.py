"""The agent's heartbeats expire after one status interval (MQTT v5 message expiry): a
persistent session that was away (the dispatcher, restarting) gets no heartbeat queued while it
was gone except the last one or two, never a stale one taken for live. Real Mosquitto."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from broker import topics
from broker.client import BusClient, Delivery
from broker.messages import DeviceStatus
from broker.mosquitto import MosquittoServer
from broker.topics import status_expiry_s
from config.site import Site
from edge.agent import EdgeAgent
from edge.settings import load_edge_settings
from tests.conftest import wait_until
from tests.edge.conftest import edge_yaml

AWAY_S = 6.0
# One status interval (1 s) of expiry, up to a second more (Mosquitto counts whole seconds),
# and time for a busy machine to deliver.
OLDEST_DELIVERED_S = 3.5


class Heartbeats:
    """Statuses received, each with the time it arrived."""

    def __init__(self) -> None:
        self.got: list[tuple[DeviceStatus, bool, datetime]] = []
        self.lock = threading.Lock()

    def on_status(self, d: Delivery) -> None:
        if d.payload:
            with self.lock:
                self.got.append((DeviceStatus.from_json(d.payload), d.retain, datetime.now(UTC)))

    def live(self) -> list[tuple[DeviceStatus, datetime]]:
        with self.lock:
            return [(s, at) for s, retained, at in self.got if s.online and not retained]


def test_status_expiry_is_one_interval_in_whole_seconds() -> None:
    assert status_expiry_s(15) == 15
    assert status_expiry_s(1) == 1
    assert status_expiry_s(0.2) == 1
    assert status_expiry_s(2.5) == 3


def test_heartbeats_queued_while_the_dispatcher_session_is_away_expire(
    tmp_path: Path,
    site: Site,
    mosquitto: MosquittoServer,
    device_bus: Callable[..., BusClient],
) -> None:
    password = site.broker.dispatcher_password.get_secret_value()
    session = f"t-dispatcher-{uuid.uuid4().hex[:6]}"
    before = Heartbeats()
    subscriber = device_bus("dispatcher", password, client_id=session, clean_start=False)
    subscriber.subscribe(topics.status("edge-01"), before.on_status)
    subscriber.start(wait_s=10)

    agent = EdgeAgent(load_edge_settings(edge_yaml(tmp_path, site, mosquitto.port)))
    assert agent.status_interval_s == 1
    agent.start()
    try:
        wait_until(lambda: before.live(), 15)
        subscriber.stop()  # the session stays on the broker; the agent keeps beating
        time.sleep(AWAY_S)
        back_at = datetime.now(UTC)
        after = Heartbeats()
        back = device_bus("dispatcher", password, client_id=session, clean_start=False)
        back.subscribe(topics.status("edge-01"), after.on_status)
        back.start(wait_s=10)
        wait_until(lambda: [s for s, _ in after.live() if s.ts > back_at], 10)
    finally:
        agent.stop()
    late = [(s, at) for s, at in after.live() if s.ts < back_at]
    ages = [round((at - s.ts).total_seconds(), 1) for s, at in late]
    assert len(late) <= 2, f"{len(late)} heartbeats queued while away were delivered: ages {ages}"
    assert all(age <= OLDEST_DELIVERED_S for age in ages), f"stale heartbeats delivered: {ages}"
