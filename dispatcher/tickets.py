"""Ticket store operations: open a ticket, apply a lifecycle transition, write its audit row."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from config.site import Site
from dispatcher.assign import choose_worker
from dispatcher.lifecycle import ACTIVE, Status, Transition, deadline, next_status
from dispatcher.store.schema import audit, incidents, tickets

log = logging.getLogger(__name__)

_KEEP = object()


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
    """Create the ticket of an incident (status open) and its ``opened`` audit row."""
    category = site.categories[incident["kind"]]
    ticket_id = conn.execute(
        insert(tickets)
        .values(
            incident_id=incident["id"],
            category=incident["kind"],
            priority=category.priority,
            status=Status.OPEN.value,
            grid_id=incident["grid_id"],
            street_id=incident["street_id"],
            worker_id=None,
            source=incident["source"],
            lat=incident["lat"],
            lon=incident["lon"],
            opened_at=at,
            deadline=deadline(at, category),
            reopen_count=0,
            escalated=False,
            version=1,
        )
        .returning(tickets.c.id)
    ).scalar_one()
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
    writer changed the ticket between our read and our write.
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
    if transition is Transition.REOPENED:
        values["reopen_count"] = row["reopen_count"] + 1
        values["resolved_at"] = None
        values["closed_at"] = None
        values["close_reason"] = None
    if transition is Transition.ESCALATED:
        values["escalated"] = True
    if target in (Status.CLOSED, Status.CANCELLED, Status.REJECTED):
        values["closed_at"] = at
        values.setdefault(
            "close_reason",
            {Status.CLOSED: "fixed", Status.CANCELLED: "cleared", Status.REJECTED: "false_alarm"}[
                target
            ],
        )
    values["version"] = row["version"] + 1
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
    if target in (Status.CLOSED, Status.CANCELLED, Status.REJECTED):
        conn.execute(
            update(incidents).where(incidents.c.id == row["incident_id"]).values(status="closed")
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
            actor=actor,
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
) -> RowMapping:
    """Give a ticket to the best on-duty worker (first time: assigned, later: reassigned).

    With nobody available the ticket goes back to open (if someone had it) and is escalated
    to the street supervisor's queue.
    """
    row = load(conn, ticket_id)
    choice = choose_worker(
        site=site,
        grid_id=row["grid_id"],
        at=at,
        open_load=open_load(conn),
        positions=positions or {},
        target=(row["lat"], row["lon"]),
        exclude=exclude,
    )
    if choice.worker_id is None:
        if row["worker_id"] is not None:
            apply(
                conn, ticket_id, Transition.UNASSIGNED, at=at, actor=actor, worker_id=None,
                reason=reason,
            )
        return apply(conn, ticket_id, Transition.ESCALATED, at=at, actor=actor, reason=choice.reason)
    first = Status(row["status"]) is Status.OPEN and row["assigned_at"] is None
    transition = Transition.ASSIGNED if first else Transition.REASSIGNED
    note = choice.reason if reason is None else f"{reason}; {choice.reason}"
    return apply(
        conn, ticket_id, transition, at=at, actor=actor, worker_id=choice.worker_id, reason=note
    )
