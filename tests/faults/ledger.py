"""The ledger of a fault scenario: what the devices created, what the dispatcher stored, what
the workers were pushed; and from those, what was lost or duplicated.

Ground truth comes from the devices' own outboxes (each event gets its per-device ``seq`` in
the same transaction that stores it, so the outbox's counter is the number of events the box
ever created) and from the readings the scenario wrote. The dispatcher's side is read from
its ticket store (read-only). Pushes are what the ``PushListener`` received, compared with
what the audit rows call for (``dispatcher.push.pushes_for``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.pool import NullPool

from broker.messages import TicketPush
from dispatcher.push import pushes_for
from dispatcher.store.schema import audit, devices, events, incidents, tickets

if TYPE_CHECKING:
    from tests.faults.rig import Rig


@dataclass
class Counts:
    """One scenario's figures (a row of the table in docs/reliability.md)."""

    readings_written: int = 0
    events_sent: int = 0
    events_received: int = 0
    events_lost: int = 0
    events_evicted: int = 0
    events_out_of_order: int = 0
    events_retimed: int = 0
    tickets_expected: int = 0
    tickets_made: int = 0
    tickets_duplicated: int = 0
    tickets_missing: int = 0
    pushes_expected: int = 0
    pushes_delivered: int = 0
    pushes_lost: int = 0
    pushes_redelivered: int = 0
    lost_seqs: dict[str, list[int]] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "lost_seqs"}


class Ledger:
    """Read-only view of one rig's dispatcher store and devices."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        assert rig.dispatcher is not None
        path = rig.dispatcher.db_path
        self.engine: Engine = create_engine(
            f"sqlite:///file:{path}?mode=ro&uri=true",
            connect_args={"timeout": 30, "check_same_thread": False},
            poolclass=NullPool,
        )

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.dispose()

    # -- raw reads -----------------------------------------------------------------------
    def rows(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query).mappings().all())

    def online_devices(self) -> set[str]:
        try:
            return {
                r["device_id"]
                for r in self.rows(
                    select(devices.c.device_id).where(
                        devices.c.online.is_(True), devices.c.clock_offset_s.is_not(None)
                    )
                )
            }
        except Exception:  # the store is being created right now
            return set()

    def device_events(self) -> list[Any]:
        return self.rows(
            select(
                events.c.event_id,
                events.c.device_id,
                events.c.source_id,
                events.c.seq,
                events.c.state,
                events.c.kind,
                events.c.ts,
                events.c.device_ts,
                events.c.ts_source,
                events.c.received_at,
                events.c.incident_id,
            ).where(events.c.device_id.in_(list(self.rig.nodes)))
        )

    def tickets_by_source(self) -> dict[str, list[Any]]:
        """Tickets per sensor id (via the incident's first event), oldest first."""
        rows = self.rows(
            select(tickets.c.id, tickets.c.status, tickets.c.opened_at, events.c.source_id)
            .join(incidents, incidents.c.id == tickets.c.incident_id)
            .join(events, events.c.incident_id == incidents.c.id)
            .where(events.c.state == "new")
            .order_by(tickets.c.id)
        )
        out: dict[str, list[Any]] = defaultdict(list)
        seen: set[int] = set()
        for r in rows:
            if r["id"] not in seen:
                seen.add(r["id"])
                out[r["source_id"]].append(r)
        return out

    def unpushed(self) -> int:
        return len(self.rows(select(audit.c.id).where(audit.c.pushed.is_(False))))

    def unsent_metrics(self) -> int:
        return len(self.rows(select(audit.c.id).where(audit.c.metric_sent.is_(False))))

    def audit_rows(self) -> list[Any]:
        return self.rows(select(audit).order_by(audit.c.id))

    def expected_pushes(self) -> set[tuple[str, str, str, str]]:
        """Every worker push the audit trail calls for, keyed like ``PushListener.unique``."""
        joined = self.rows(select(audit, tickets).join(tickets, tickets.c.id == audit.c.ticket_id))
        out: set[tuple[str, str, str, str]] = set()
        for row in joined:
            ticket = {col.name: row[col] for col in tickets.c}
            a = {col.name: row[col] for col in audit.c}
            for topic, msg in pushes_for(a, ticket, self.rig.site):
                if isinstance(msg, TicketPush):
                    out.add((topic, msg.ticket_id, msg.action, msg.ts.isoformat()))
        return out

    # -- the figures ---------------------------------------------------------------------
    def counts(self) -> Counts:
        c = Counts()
        received: dict[str, set[int]] = defaultdict(set)
        by_source: dict[str, list[Any]] = defaultdict(list)
        for e in self.device_events():
            received[e["device_id"]].add(int(e["seq"]))
            by_source[e["source_id"]].append(e)
        for device_id, node in self.rig.nodes.items():
            c.readings_written += len(node.induced)
            created, evicted, _queued = node.outbox_counts()
            c.events_sent += created
            c.events_evicted += evicted
            got = received.get(device_id, set())
            c.events_received += len(got)
            missing = sorted(set(range(1, created + 1)) - got)
            c.events_lost += max(0, len(missing) - evicted)
            if missing:
                c.lost_seqs[device_id] = missing
        c.events_out_of_order = out_of_order(self.device_events())
        c.events_retimed = sum(1 for e in self.device_events() if e["ts_source"] != "device")
        ticket_rows = self.tickets_by_source()
        for source, evs in by_source.items():
            episodes = episodes_of(evs)
            made = len(ticket_rows.get(source, []))
            c.tickets_expected += episodes
            c.tickets_made += made
            c.tickets_duplicated += max(0, made - episodes)
            c.tickets_missing += max(0, episodes - made)
        expected = self.expected_pushes()
        assert self.rig.pushes is not None
        seen = self.rig.pushes.unique()
        c.pushes_expected = len(expected)
        c.pushes_delivered = len(expected & set(seen))
        c.pushes_lost = len(expected - set(seen))
        c.pushes_redelivered = sum(n - 1 for n in seen.values())
        return c


def out_of_order(device_events: list[Any]) -> int:
    """Events the dispatcher took in after a later event of the same device (by ``seq``):
    the device's order was not kept on the way."""
    late = 0
    newest: dict[str, int] = {}
    for e in sorted(device_events, key=lambda r: (r["received_at"], int(r["seq"]))):
        d, seq = str(e["device_id"]), int(e["seq"])
        if seq < newest.get(d, 0):
            late += 1
        newest[d] = max(newest.get(d, 0), seq)
    return late


def episodes_of(source_events: list[Any]) -> int:
    """Alarm episodes of one sensor: ``new`` events that follow a ``cleared`` (or come first),
    in the device's order. Each is one real problem that must make exactly one ticket."""
    count, alarm = 0, False
    for e in sorted(source_events, key=lambda r: int(r["seq"])):
        if e["state"] == "new" and not alarm:
            count, alarm = count + 1, True
        elif e["state"] == "cleared":
            alarm = False
    return count


@dataclass
class TimerCheck:
    """Timers that acted, acted twice, or were lost (still due long after they should have run)."""

    fired: Counter[str] = field(default_factory=Counter)
    twice: Counter[str] = field(default_factory=Counter)
    overdue: list[int] = field(default_factory=list)


def check_timers(ledger: Ledger, now: datetime, grace_s: float) -> TimerCheck:
    """Judge the timers from the audit trail and the tickets' ``timer_at``.

    - twice: a reminder or SLA escalation written twice for one ticket, or an accept timeout
      earlier than the accept time after the assignment it ended (a second firing);
    - overdue: a ticket whose next timer was due more than ``grace_s`` before ``now`` and has
      not run (a lost timer).
    """
    out = TimerCheck()
    terms = {
        int(t["id"]): t
        for t in ledger.rows(select(tickets.c.id, tickets.c.accept_timeout_s, tickets.c.timer_at))
    }
    per_ticket: dict[int, list[Any]] = defaultdict(list)
    for r in ledger.audit_rows():
        per_ticket[int(r["ticket_id"])].append(r)
    for ticket_id, history in per_ticket.items():
        assigned_at: datetime | None = None
        once: Counter[str] = Counter()
        for r in history:
            actor = str(r["actor"])
            if actor.startswith("timer:"):
                kind = actor.split(":", 1)[1]
                out.fired[kind] += 1
                once[kind] += 1
                if kind == "accept_timeout" and assigned_at is not None:
                    due = assigned_at.timestamp() + float(terms[ticket_id]["accept_timeout_s"])
                    if r["at"].timestamp() < due - 0.001:
                        out.twice[kind] += 1
            if r["to_status"] == "assigned":
                assigned_at = r["at"]
        for kind in ("reminder", "sla"):
            out.twice[kind] += max(0, once[kind] - 1)
    for ticket_id, t in terms.items():
        if t["timer_at"] is not None and (now - t["timer_at"]).total_seconds() > grace_s:
            out.overdue.append(ticket_id)
    return out
