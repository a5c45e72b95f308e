"""Pushes to workers and supervisors, shipped from the audit table after each commit.

Every transition's audit row is also the record of what must be pushed: a shipper thread
turns unpushed rows into messages, publishes them (QoS 1) and marks the rows pushed once the
broker acknowledged every message. A crash between commit and push only delays the push
(a crash between PUBACK and the mark sends it twice: pushes are at-least-once, and carry the
ticket's status and time so the app keeps the latest). On PostgreSQL several dispatcher
processes share the audit table; a transaction-scoped advisory lock lets one of them ship at a
time, in audit order.
The web pages receive the same messages: each dispatcher process subscribes to the worker and
supervisor topics and fans them out to its server-sent-event clients (see ``PushHub``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, text, update

from broker import topics
from broker.client import Delivery, Handler, Published
from broker.messages import Message, SupervisorAlert, TicketAction, TicketPush
from config.site import GeoPoint, Site
from dispatcher.assign import supervisor_for
from dispatcher.lifecycle import Transition
from dispatcher.shipping import ShipperThread, unshipped
from dispatcher.store.db import SqliteEngine
from dispatcher.store.schema import audit
from dispatcher.verify import REVIEW_ACTOR

log = logging.getLogger(__name__)

# Any constant: the PostgreSQL advisory lock that lets one process at a time ship pushes.
SHIP_LOCK_KEY = 0x67770002

_WORKER_ACTION: dict[str, TicketAction] = {
    Transition.ASSIGNED: "assigned",
    Transition.REASSIGNED: "assigned",
    Transition.REOPENED: "reopened",
    Transition.REMINDED: "reminder",
    Transition.CANCELLED: "cancelled",
    Transition.VERIFIED: "closed",
    Transition.REJECTED: "closed",
    Transition.ACCEPTED: "updated",
    Transition.ARRIVED: "updated",
    Transition.RESOLVED: "updated",
    Transition.ESCALATED: "escalated",
}


class Publisher(Protocol):
    """What the shipper needs from the bus."""

    def publish(
        self, topic: str, payload: Message | bytes, *, qos: int = 1, retain: bool = False
    ) -> Published: ...


def pushes_for(
    row: Mapping[str, Any], ticket: Mapping[str, Any], site: Site
) -> list[tuple[str, Message]]:
    """The messages one audit row causes: to the new worker, the previous one, the supervisor."""
    transition = Transition(row["transition"])
    out: list[tuple[str, Message]] = []

    def ticket_push(worker_id: str, action: TicketAction) -> None:
        out.append(
            (
                topics.worker_tickets(worker_id),
                TicketPush(
                    ticket_id=str(ticket["id"]),
                    worker_id=worker_id,
                    action=action,
                    status=row["to_status"],
                    category=ticket["category"],
                    priority=ticket["priority"],
                    grid_id=ticket["grid_id"],
                    position=GeoPoint(lat=ticket["lat"], lon=ticket["lon"]),
                    opened_at=ticket["opened_at"],
                    deadline=ticket["deadline"],
                    note=(row["reason"] or None) and str(row["reason"])[:500],
                    ts=row["at"],
                ),
            )
        )

    def alert(reason: str) -> None:
        sup = supervisor_for(site, ticket["street_id"])
        if sup is None:
            return
        out.append(
            (
                topics.supervisor_alerts(sup),
                SupervisorAlert(
                    supervisor_id=sup,
                    ticket_id=str(ticket["id"]),
                    reason=reason,
                    category=ticket["category"],
                    grid_id=ticket["grid_id"],
                    note=(row["reason"] or None) and str(row["reason"])[:500],
                    ts=row["at"],
                ),
            )
        )

    worker, previous = row["worker_id"], row["from_worker_id"]
    if (
        previous
        and previous != worker
        and transition
        in (
            Transition.REASSIGNED,
            Transition.UNASSIGNED,
            Transition.DECLINED,
        )
    ):
        ticket_push(previous, "unassigned")
    action = _WORKER_ACTION.get(transition)
    if worker and action and transition is not Transition.ESCALATED:
        ticket_push(worker, action)
    if transition is Transition.OPENED and site.categories[ticket["category"]].notify_supervisor:
        alert("safety")
    if transition is Transition.ESCALATED:
        if row["actor"] == REVIEW_ACTOR:
            alert("review")
        else:
            alert("no_worker" if worker is None else "escalated")
    return out


class PushShipper(ShipperThread):
    """Background thread: unpushed audit rows → MQTT messages → marked pushed after PUBACK."""

    thread_name = "push-shipper"

    def __init__(self, engine: Engine, site: Site, bus: Publisher, batch: int = 500) -> None:
        super().__init__()
        self.engine, self.site, self.bus, self.batch = engine, site, bus, batch
        self._unmarked: list[int] = []
        self.sent = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.ship_all()
            except Exception:
                log.exception("push shipping failed; will retry")
                self._stop.wait(2)
        try:
            self.mark_published()
        except Exception:
            log.exception(
                "could not mark %d published pushes; they will be sent again", len(self._unmarked)
            )

    def ship_all(self) -> int:
        """Ship until nothing is pending (or another process holds the shipping lock)."""
        total, busy = 0, 0
        while not self._stop.is_set():
            n = self.ship_once()
            if n is None:
                # Another process is shipping (our rows too, if they were committed in
                # time); look again shortly, a few times, then wait for the next wake.
                busy += 1
                if busy > 10:
                    break
                self._stop.wait(0.01)
                continue
            total += n
            if n < self.batch:
                break
        return total

    def _pending(self, conn: Connection, after: int = 0) -> list[dict[str, Any]]:
        return [
            {"audit": row, "ticket": ticket}
            for row, ticket in unshipped(conn, audit.c.pushed, after=after, limit=self.batch)
        ]

    def _publish(self, rows: list[dict[str, Any]], ack_timeout_s: float) -> bool:
        """Publish the rows' messages; True once the broker acknowledged all of them."""
        pending: list[Published] = []
        for row in rows:
            for topic, msg in pushes_for(row["audit"], row["ticket"], self.site):
                pending.append(self.bus.publish(topic, msg))
        deadline = time.monotonic() + ack_timeout_s
        for p in pending:
            while not p.wait(0.1):
                if time.monotonic() > deadline or self._stop.is_set():
                    log.warning("pushes not acknowledged yet; will resend (%d rows)", len(rows))
                    return False
        self.sent += len(pending)
        return True

    def ship_once(self, ack_timeout_s: float = 10) -> int | None:
        """Publish one batch of pending pushes; the number of audit rows shipped, or None when
        another process is shipping right now."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:
                if not conn.execute(
                    text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SHIP_LOCK_KEY}
                ).scalar():
                    return None
                rows = self._pending(conn)
                if not rows or not self._publish(rows, ack_timeout_s):
                    return 0
                self._mark(conn, rows)
            return len(rows)
        # SQLite: one process, whose audit ids grow in commit order. Rows published but not
        # yet marked are skipped by id, and marked when the store is free, so a push never
        # waits for the intake's transaction to end.
        after = self._unmarked[-1] if self._unmarked else 0
        with self.engine.connect() as conn:
            rows = self._pending(conn, after)
        if rows:
            if not self._publish(rows, ack_timeout_s):
                return 0
            self._unmarked += [r["audit"]["id"] for r in rows]
        self.mark_published(wait=not rows)
        return len(rows)

    def mark_published(self, wait: bool = True) -> None:
        """Mark the rows published so far (on SQLite); without ``wait``, only if no other
        thread of the process is writing."""
        if not self._unmarked:
            return
        ids, engine = list(self._unmarked), self.engine
        if isinstance(engine, SqliteEngine) and not wait:
            with engine.try_begin() as maybe:
                if maybe is None:
                    return
                self._mark(maybe, ids)
        else:
            with engine.begin() as conn:
                self._mark(conn, ids)
        del self._unmarked[: len(ids)]

    @staticmethod
    def _mark(conn: Connection, rows: list[dict[str, Any]] | list[int]) -> None:
        ids = [r if isinstance(r, int) else r["audit"]["id"] for r in rows]
        conn.execute(update(audit).where(audit.c.id.in_(ids)).values(pushed=True))


SUPERVISOR_ALERTS = f"{topics.ROOT}/supervisor/+/alerts"
EVERY_TICKET = "tickets"
EVERY_ALERT = "alerts"

LivePush = tuple[str, bytes]
"""One message for a live connection: its event name (``ticket`` or ``alert``) and its JSON."""


def worker_channel(worker_id: str) -> str:
    return f"worker:{worker_id}"


class Subscriber(Protocol):
    """What the hub needs from the bus to follow a topic."""

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None: ...


class PushHub:
    """Fan-out of the bus's pushes to the web pages' live connections (server-sent events).

    A connection listens on channels: ``worker:{id}`` (that worker's ticket pushes), ``tickets``
    (every worker's ticket pushes) and ``alerts`` (every supervisor alert); whoever serves the
    connection keeps only what its user may see.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[queue.Queue[LivePush]]] = defaultdict(list)
        self._following: set[str] = set()

    def follow(self, bus: Subscriber, topic_filter: str) -> None:
        """Deliver ``topic_filter``'s messages from ``bus`` (once, however often it is asked).

        At QoS 0: a live view wants what happens now, not a replay of what the broker queued
        while this process was away, and it costs the bus no acknowledgement per push."""
        with self._lock:
            if topic_filter in self._following:
                return
            self._following.add(topic_filter)
        bus.subscribe(topic_filter, self.deliver, qos=0)

    def subscribe(self, *channels: str) -> queue.Queue[LivePush]:
        q: queue.Queue[LivePush] = queue.Queue(maxsize=1000)
        with self._lock:
            for channel in channels:
                self._subscribers[channel].append(q)
        return q

    def unsubscribe(self, q: queue.Queue[LivePush]) -> None:
        with self._lock:
            for subs in self._subscribers.values():
                if q in subs:
                    subs.remove(q)

    def deliver(self, delivery: Delivery) -> None:
        """MQTT handler for ``gw/v1/worker/+/tickets`` and ``gw/v1/supervisor/+/alerts``: hand
        the payload to the streams listening on its channels."""
        parts = delivery.topic.split("/")
        family, name = (parts[2], parts[4]) if len(parts) == 5 else ("", "")
        channels: tuple[str, ...]
        if (family, name) == ("worker", "tickets"):
            event, channels = "ticket", (worker_channel(parts[3]), EVERY_TICKET)
        elif (family, name) == ("supervisor", "alerts"):
            event, channels = "alert", (EVERY_ALERT,)
        else:
            log.warning("not a push topic: %s", delivery.topic, extra={"topic": delivery.topic})
            delivery.ack()
            return
        with self._lock:
            subs = {id(q): q for c in channels for q in self._subscribers.get(c, ())}
        for q in subs.values():
            try:
                q.put_nowait((event, delivery.payload))
            except queue.Full:
                log.warning(
                    "web push queue full; dropping a live update", extra={"topic": delivery.topic}
                )
        delivery.ack()
