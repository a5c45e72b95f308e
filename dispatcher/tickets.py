"""Ticket store operations: open a ticket, apply a lifecycle transition, write its audit row."""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from config.site import Site
from dispatcher.assign import choose_worker
from dispatcher.lifecycle import (
    ACTIVE,
    FINAL,
    Status,
    Transition,
    deadline,
    next_status,
    next_timer,
)
from dispatcher.store.schema import audit, incidents, tickets

log = logging.getLogger(__name__)

_KEEP = object()
# The actor of reassignments made because a worker did not accept in time; such a worker is
# not offered the same ticket again.
ACCEPT_TIMEOUT_ACTOR = "timer:accept_timeout"


class TicketNotFound(LookupError):
    def __init__(self, ticket_id: int) -> None:
        super().__init__(f"ticket {ticket_id} does not exist")
        self.ticket_id = ticket_id


class StaleTicket(RuntimeError):
    """The ticket changed under us (another process); the caller retries."""


def insert_ignore(conn: Connection, table: Any, values: Mapping[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True when a row was inserted."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        stmt: Any = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    elif dialect == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    else:
        raise NotImplementedError(f"ticket store does not support {dialect}")
    return bool(conn.execute(stmt).rowcount)


def load(conn: Connection, ticket_id: int, *, for_update: bool = False) -> RowMapping:
    stmt = select(tickets).where(tickets.c.id == ticket_id)
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise TicketNotFound(ticket_id)
    return row


def open_ticket(
    conn: Connection,
    *,
    site: Site,
    incident: Mapping[str, Any],
    at: datetime,
    actor: str,
) -> RowMapping:
    """Create the ticket of an incident (status open) and its ``opened`` audit row.

    The category's terms (SLA deadline, accept timeout, reminder lead, verification timeout)
    are copied onto the ticket: a later change of the site file does not move its timers.
    """
    category = site.categories[incident["kind"]]
    values: dict[str, Any] = {
        "incident_id": incident["id"],
        "category": incident["kind"],
        "priority": category.priority,
        "status": Status.OPEN.value,
        "grid_id": incident["grid_id"],
        "street_id": incident["street_id"],
        "worker_id": None,
        "source": incident["source"],
        "lat": incident["lat"],
        "lon": incident["lon"],
        "opened_at": at,
        "deadline": deadline(at, category),
        "reopen_count": 0,
        "escalated": False,
        "version": 1,
        "accept_timeout_s": category.accept_timeout_minutes * 60,
        "remind_before_s": category.remind_before_minutes * 60,
        "verify_timeout_s": category.verify_timeout_seconds,
        "assigned_at": None,
        "resolved_at": None,
        "reminded_at": None,
        "breached_at": None,
        "review_at": None,
    }
    values["timer_at"] = next_timer(values)
    ticket_id = conn.execute(insert(tickets).values(**values).returning(tickets.c.id)).scalar_one()
    _audit(conn, ticket_id, Transition.OPENED, None, Status.OPEN, at, actor, None, None, None)
    return load(conn, ticket_id)


def apply(
    conn: Connection,
    ticket_id: int,
    transition: Transition,
    *,
    at: datetime,
    actor: str,
    worker_id: Any = _KEEP,
    reason: str | None = None,
    **changes: Any,
) -> RowMapping:
    """Move a ticket through one lifecycle step; one audit row per call.

    Raises InvalidTransition when the lifecycle does not allow it, StaleTicket when another
    writer changed the ticket between our read and our write. The ticket's next timer is
    recomputed from its new state.
    """
    row = load(conn, ticket_id, for_update=True)
    current = Status(row["status"])
    target = next_status(current, transition)
    values: dict[str, Any] = dict(changes)
    values["status"] = target.value
    if worker_id is not _KEEP:
        values["worker_id"] = worker_id
    new_worker = values.get("worker_id", row["worker_id"])
    if transition in (Transition.ASSIGNED, Transition.REASSIGNED, Transition.REOPENED):
        values.setdefault("assigned_at", at)
        values.setdefault("accepted_at", None)
        values.setdefault("arrived_at", None)
    if transition is Transition.ACCEPTED:
        values["accepted_at"] = at
    if transition is Transition.ARRIVED:
        values["arrived_at"] = at
    if transition is Transition.RESOLVED:
        values["resolved_at"] = at
        values["review_at"] = None
    if transition is Transition.REOPENED:
        values["reopen_count"] = row["reopen_count"] + 1
        values["resolved_at"] = None
        values["closed_at"] = None
        values["close_reason"] = None
        values["review_at"] = None
    if transition is Transition.ESCALATED:
        values["escalated"] = True
    if transition is Transition.REMINDED:
        values.setdefault("reminded_at", at)
    if target in FINAL:
        values["closed_at"] = at
        values.setdefault(
            "close_reason",
            {Status.CLOSED: "fixed", Status.CANCELLED: "cleared", Status.REJECTED: "false_alarm"}[
                target
            ],
        )
    values["version"] = row["version"] + 1
    values["timer_at"] = next_timer({**row, **values})
    done = conn.execute(
        update(tickets)
        .where(tickets.c.id == ticket_id, tickets.c.version == row["version"])
        .values(**values)
    ).rowcount
    if not done:
        raise StaleTicket(f"ticket {ticket_id} changed concurrently")
    _audit(
        conn, ticket_id, transition, current, target, at, actor, new_worker, row["worker_id"], reason
    )
    if target in FINAL:
        conn.execute(
            update(incidents).where(incidents.c.id == row["incident_id"]).values(status="closed")
        )
    elif current in FINAL:
        conn.execute(
            update(incidents).where(incidents.c.id == row["incident_id"]).values(status="open")
        )
    log.info(
        "ticket %s %s: %s -> %s%s",
        ticket_id,
        transition.value,
        current.value,
        target.value,
        f" ({reason})" if reason else "",
        extra={"ticket_id": ticket_id, "worker_id": new_worker},
    )
    return load(conn, ticket_id)


def _audit(
    conn: Connection,
    ticket_id: int,
    transition: Transition,
    current: Status | None,
    target: Status,
    at: datetime,
    actor: str,
    worker_id: str | None,
    from_worker_id: str | None,
    reason: str | None,
) -> None:
    conn.execute(
        insert(audit).values(
            ticket_id=ticket_id,
            at=at,
            actor=actor[:80],
            transition=transition.value,
            from_status=current.value if current else None,
            to_status=target.value,
            worker_id=worker_id,
            from_worker_id=from_worker_id,
            reason=reason,
            pushed=False,
            metric_sent=False,
        )
    )


def open_load(conn: Connection) -> dict[str, int]:
    """Open tickets per worker (assigned, accepted or resolved awaiting verification)."""
    rows = conn.execute(
        select(tickets.c.worker_id, func.count())
        .where(
            tickets.c.worker_id.is_not(None),
            tickets.c.status.in_([s.value for s in ACTIVE if s is not Status.OPEN]),
        )
        .group_by(tickets.c.worker_id)
    ).all()
    return {str(w): int(n) for w, n in rows}


def refusers(conn: Connection, ticket_id: int) -> frozenset[str]:
    """Workers who declined this ticket or let it time out: not offered it again."""
    rows = conn.execute(
        select(audit.c.from_worker_id).where(
            audit.c.ticket_id == ticket_id,
            audit.c.from_worker_id.is_not(None),
            or_(
                audit.c.transition == Transition.DECLINED.value,
                audit.c.actor == ACCEPT_TIMEOUT_ACTOR,
            ),
        )
    ).scalars()
    return frozenset(str(w) for w in rows)


def assign(
    conn: Connection,
    site: Site,
    ticket_id: int,
    *,
    at: datetime,
    actor: str,
    exclude: frozenset[str] = frozenset(),
    positions: Mapping[str, tuple[float, float]] | None = None,
    reason: str | None = None,
    load_by_worker: MutableMapping[str, int] | None = None,
    escalate_if_none: bool = True,
) -> RowMapping:
    """Give a ticket to the best on-duty worker (first time: assigned, later: reassigned).

    Workers who declined it or let it time out are never chosen again. With nobody available
    the ticket goes back to open (if someone had it) and is escalated to the street
    supervisor's queue (unless ``escalate_if_none`` is off: then nothing changes).
    ``load_by_worker`` is a running count of open tickets per worker that the caller keeps
    across many assignments (one query instead of one per ticket); it is updated here.
    """
    row = load(conn, ticket_id)
    if row["assigned_at"] is not None:
        exclude = exclude | refusers(conn, ticket_id)
    current_load = load_by_worker if load_by_worker is not None else open_load(conn)
    choice = choose_worker(
        site=site,
        grid_id=row["grid_id"],
        at=at,
        open_load=current_load,
        positions=positions or {},
        target=(row["lat"], row["lon"]),
        exclude=exclude,
    )
    if choice.worker_id is None:
        if not escalate_if_none:
            return row
        if row["worker_id"] is not None:
            apply(
                conn, ticket_id, Transition.UNASSIGNED, at=at, actor=actor, worker_id=None,
                reason=reason,
            )
            if load_by_worker is not None and load_by_worker.get(row["worker_id"], 0) > 0:
                load_by_worker[row["worker_id"]] -= 1
        return apply(conn, ticket_id, Transition.ESCALATED, at=at, actor=actor, reason=choice.reason)
    first = Status(row["status"]) is Status.OPEN and row["assigned_at"] is None
    transition = Transition.ASSIGNED if first else Transition.REASSIGNED
    note = choice.reason if reason is None else f"{reason}; {choice.reason}"
    out = apply(
        conn, ticket_id, transition, at=at, actor=actor, worker_id=choice.worker_id, reason=note
    )
    if load_by_worker is not None:
        load_by_worker[choice.worker_id] = load_by_worker.get(choice.worker_id, 0) + 1
        previous = row["worker_id"]
        if previous and previous != choice.worker_id and load_by_worker.get(previous, 0) > 0:
            load_by_worker[previous] -= 1
    return out
