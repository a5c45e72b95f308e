"""What a PUBACK does not prove, against a real Mosquitto of the test's own that restarts or is
killed: events the broker acknowledged but never delivered still reach the dispatcher, and
events a broker could not route reach it in the device's order.

- A restarted Mosquitto 2.0 forgets the dispatchers' shared subscription; until the dispatcher
  subscribes again it routes events to nobody, and says so ("No matching subscribers") only if
  no other session subscribes to them. Another one (a monitoring client, a test listener left
  behind) makes its PUBACK a plain success: the outbox resends what was acknowledged in the
  first ``resend_after_connect_s`` of a connection.
- A Mosquitto killed with SIGKILL loses what it acknowledged since its last save: the outbox
  resends what was acknowledged in the ``resend_before_loss_s`` before the connection broke.
- While the broker has no subscriber, the outbox sends one event at a time, so a dispatcher
  that subscribes meanwhile gets every event in order.

Here "the dispatcher" is a shared subscription on the dispatcher's account, as the
dispatcher makes it; only it (and in the first test, a monitor) subscribes to the events."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from broker import topics
from broker.client import BusClient, Delivery
from broker.messages import Event
from broker.mosquitto import BrokerOptions, MosquittoServer
from config.site import Site
from edge.agent import EdgeAgent
from edge.settings import load_edge_settings
from tests.conftest import DeviceFactory, broker_of_its_own, wait_until
from tests.edge.conftest import edge_yaml
from tests.edge.test_store_and_forward import SENSOR, pty_line

DISPATCHER_ID = "t-dispatcher"


@dataclass
class Dispatcher:
    """The dispatcher's subscription: a persistent session with a shared subscription; every
    event it receives, in arrival order."""

    connect: DeviceFactory
    password: str
    group: str = field(default_factory=lambda: f"g{uuid.uuid4().hex[:8]}")
    events: list[Event] = field(default_factory=list)
    bus: BusClient | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, d: Delivery) -> None:
        with self.lock:
            self.events.append(Event.from_json(d.payload))

    def start(self) -> None:
        self.bus = self.connect("dispatcher", self.password, client_id=DISPATCHER_ID)
        self.bus.subscribe(topics.shared(topics.all_edge("event"), self.group), self.on_event)
        self.bus.start(wait_s=10)

    def away(self) -> None:
        assert self.bus is not None
        self.bus.stop()

    def seqs(self) -> list[int]:
        """The sequence numbers received, duplicates left out, in the order they first came."""
        with self.lock:
            return list(dict.fromkeys(e.seq for e in self.events))


@dataclass
class Rig:
    broker: MosquittoServer
    connect: DeviceFactory
    dispatcher: Dispatcher
    folder: Path
    site: Site


@pytest.fixture
def rig(site: Site, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    opts: BrokerOptions = getattr(request, "param", BrokerOptions())
    with broker_of_its_own(site, tmp_path / "broker", opts) as (broker, connect):
        password = site.broker.dispatcher_password.get_secret_value()
        yield Rig(broker, connect, Dispatcher(connect, password), tmp_path, site)


def start_agent(rig: Rig, tty: str, **outbox: Any) -> EdgeAgent:
    path = edge_yaml(
        rig.folder / "edge",
        rig.site,
        rig.broker.port,
        [],
        outbox={"path": str(rig.folder / "outbox.sqlite"), **outbox},
        sensors=[SENSOR],
        sensor_inputs=[{"type": "serial", "port": tty}],
    )
    agent = EdgeAgent(load_edge_settings(path))
    agent.start()
    wait_until(lambda: agent.bus is not None and agent.bus.connected, 15)
    return agent


def crossing(master: int, i: int) -> None:
    """A reading that crosses the threshold one way or the other: event ``i + 1``."""
    os.write(master, b"tilt-t1 20\n" if i % 2 == 0 else b"tilt-t1 1\n")


def all_acknowledged(agent: EdgeAgent, last_seq: int) -> bool:
    return (
        agent.outbox is not None
        and agent.outbox.last_seq == last_seq
        and agent.outbox.depth == 0
        and agent.publisher is not None
        and agent.publisher.in_flight == 0
    )


def restart(agent: EdgeAgent, broker: MosquittoServer, *, kill: bool = False) -> None:
    """Stop the broker (or kill it: no final save), wait until the agent noticed, start it."""
    assert agent.bus is not None
    bus = agent.bus
    if kill:
        broker.kill()
    else:
        broker.stop()
    wait_until(lambda: not bus.connected, 10)
    broker.start()


def connected(agent: EdgeAgent) -> None:
    wait_until(lambda: agent.bus is not None and agent.bus.connected, 30)


@pytest.mark.slow
def test_events_a_restarted_broker_routed_to_another_subscriber_reach_the_dispatcher(
    rig: Rig,
) -> None:
    password = rig.dispatcher.password
    monitor = rig.connect("dispatcher", password, client_id="t-monitor")
    monitor.subscribe(topics.all_edge("event"), lambda d: None)
    monitor.start(wait_s=10)
    monitor.stop()  # away; its persistent session stays subscribed, across restarts too
    rig.dispatcher.start()
    with pty_line() as (master, tty):
        agent = start_agent(rig, tty, resend_after_connect_s=15, resend_before_loss_s=0)
        try:
            crossing(master, 0)
            wait_until(lambda: rig.dispatcher.seqs() == [1], 15)
            rig.dispatcher.away()  # it comes back after the agent
            restart(agent, rig.broker)  # the dispatcher's shared subscription is forgotten
            connected(agent)
            crossing(master, 1)
            crossing(master, 2)
            wait_until(lambda: all_acknowledged(agent, 3), 15)
            assert agent.publisher is not None and agent.publisher.unrouted == 0
            assert rig.dispatcher.seqs() == [1]  # the broker said "delivered"; it was not
            rig.dispatcher.start()
            wait_until(lambda: sorted(rig.dispatcher.seqs()) == [1, 2, 3], 40)
            assert agent.publisher.resent >= 2
        finally:
            agent.stop()


@pytest.mark.slow
@pytest.mark.parametrize("rig", [BrokerOptions(autosave_interval_s=3600)], indirect=True)
def test_events_a_killed_broker_acknowledged_but_never_saved_reach_the_dispatcher(
    rig: Rig,
) -> None:
    """The broker saves its memory to disk every hour here (every second by default): what it
    acknowledged for a dispatcher that was away is lost when it is killed."""
    rig.dispatcher.start()
    rig.dispatcher.away()  # its session queues the events meanwhile
    with pty_line() as (master, tty):
        agent = start_agent(rig, tty, resend_after_connect_s=0, resend_before_loss_s=5)
        try:
            crossing(master, 0)
            crossing(master, 1)
            wait_until(lambda: all_acknowledged(agent, 2), 15)
            restart(agent, rig.broker, kill=True)
            rig.dispatcher.start()
            connected(agent)
            wait_until(lambda: sorted(rig.dispatcher.seqs()) == [1, 2], 40)
            assert rig.dispatcher.seqs() == [1, 2]
        finally:
            agent.stop()


@pytest.mark.slow
def test_while_nobody_subscribes_one_event_at_a_time_and_then_all_in_order(rig: Rig) -> None:
    events = 30
    with pty_line() as (master, tty):
        agent = start_agent(rig, tty)
        try:
            for i in range(events):
                crossing(master, i)
                time.sleep(0.02)
            assert agent.outbox is not None and agent.publisher is not None
            outbox, publisher = agent.outbox, agent.publisher
            wait_until(lambda: outbox.last_seq == events and publisher.unrouted >= 2, 15)
            time.sleep(6)  # several rounds of back-off
            assert outbox.depth == events
            assert publisher.published <= 8, (
                f"{publisher.published} publishes while nobody subscribed: only the oldest"
                " event should go, one at a time"
            )
            rig.dispatcher.start()
            wait_until(lambda: len(rig.dispatcher.seqs()) == events, 60)
            assert rig.dispatcher.seqs() == list(range(1, events + 1))
            wait_until(lambda: all_acknowledged(agent, events), 15)
        finally:
            agent.stop()
