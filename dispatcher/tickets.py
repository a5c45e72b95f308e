"""Ticket store operations: open a ticket, apply a lifecycle transition, write its audit row."""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, insert, or_, select, update
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
from dispatcher.reasons import CloseReason, Reason, as_reason, audit_columns
from dispatcher.store.schema import audit, incidents, tickets

log = logging.getLogger(__name__)

_KEEP = object()
# The actor of the dispatcher's own assignments.
SYSTEM_ACTOR = "system"
# The actor of reassignments made because a worker did not accept in time; such a worker is
# not offered the same ticket again.
ACCEPT_TIMEOUT_ACTOR = "timer:accept_timeout"


class TicketNotFound(LookupError):
    def __init__(self, ticket_id: int) -> None:
        super().__init__(f"ticket {ticket_id} does not exist")
        self.ticket_id = ticket_id


class StaleTicket(RuntimeError):
    """The ticket changed under us (another process); the caller retries."""


# Statements built once: SQLAlchemy then reuses their compiled form (the hot path runs
# thousands of these a second).
_TICKET = select(tickets).where(tickets.c.id == bindparam("b_id"))
_TICKET_LOCKED = _TICKET.with_for_update()
_INSERT_TICKET = insert(tickets).returning(tickets.c.id)
_INSERT_PLANNED = insert(tickets)  # rows whose ids the caller took up front
_INSERT_AUDIT = insert(audit)
_UPDATE_TICKET = update(tickets).where(
    tickets.c.id == bindparam("b_id"), tickets.c.version == bindparam("b_version")
)
_INCIDENT_STATUS = update(incidents).where(incidents.c.id == bindparam("b_id"))


@cache
def _ignore_statement(dialect: str, table: Table) -> Any:
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"ticket store does not support {dialect}")


def insert_ignore(conn: Connection, table: Any, values: Mapping[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True when a row was inserted."""
    return bool(conn.execute(_ignore_statement(conn.dialect.name, table), dict(values)).rowcount)


def load(conn: Connection, ticket_id: int, *, for_update: bool = False) -> RowMapping:
    locked = for_update and conn.dialect.name == "postgresql"
    row = (
        conn.execute(_TICKET_LOCKED if locked else _TICKET, {"b_id": ticket_id}).mappings().first()
    )
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
    return load(conn, create(conn, site=site, incident=incident, at=at, actor=actor)["id"])


def create(
    conn: Connection,
    *,
    site: Site,
    incident: Mapping[str, Any],
    at: datetime,
    actor: str,
) -> dict[str, Any]:
    """Create the ticket of an incident (status open) and its ``opened`` audit row; returns
    the new row.

    The category's terms (SLA deadline, accept timeout, reminder lead, verification timeout)
    are copied onto the ticket: a later change of the site file does not move its timers.
    """
    values = _new_row(site, incident, at)
    values["id"] = conn.execute(_INSERT_TICKET, values).scalar_one()
    _audit(conn, values["id"], Transition.OPENED, None, Status.OPEN, at, actor, None, None, None)
    return values


def plan_assigned(
    *,
    site: Site,
    incident: Mapping[str, Any],
    ticket_id: int,
    at: datetime,
    actor: str,
    assign_at: datetime,
    positions: Mapping[str, tuple[float, float]],
    load_by_worker: MutableMapping[str, int],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``create`` then ``assign_row`` as rows to insert: the ticket (id ``ticket_id``, taken
    up front by the caller) in its state after both steps, and both audit rows (opened, then
    assigned or escalated). The intake's hot path, which inserts the rows of many tickets
    together; the history is the same as doing the two steps one after the other."""
    row = _new_row(site, incident, at)
    choice = choose_worker(
        site=site,
        grid_id=row["grid_id"],
        at=assign_at,
        open_load=load_by_worker,
        positions=positions,
        target=(row["lat"], row["lon"]),
    )
    second = Transition.ASSIGNED if choice.worker_id else Transition.ESCALATED
    values, current, target, worker = transition_values(
        row, second, assign_at, choice.worker_id if choice.worker_id else _KEEP, {}
    )
    row.update(values)
    row["timer_at"] = next_timer(row)
    row["id"] = ticket_id
    audits = [
        audit_row(ticket_id, Transition.OPENED, None, Status.OPEN, at, actor, None, None, None),
        audit_row(
            ticket_id, second, current, target, assign_at, SYSTEM_ACTOR, worker, None, choice.reason
        ),
    ]
    if choice.worker_id:
        load_by_worker[choice.worker_id] = load_by_worker.get(choice.worker_id, 0) + 1
    log.info(
        "ticket %s opened and %s%s (%s)",
        ticket_id,
        second.value,
        f" to {worker}" if worker else "",
        choice.reason.text,
        extra={"ticket_id": ticket_id, "worker_id": worker},
    )
    return row, audits


def insert_planned(
    conn: Connection, rows: Sequence[Mapping[str, Any]], audit_rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert tickets planned by ``plan_assigned`` and their audit rows (in the order given:
    the audit id orders the pushes), one statement each."""
    if rows:
        conn.execute(_INSERT_PLANNED, list(rows))
        conn.execute(_INSERT_AUDIT, list(audit_rows))


def _new_row(site: Site, incident: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """The columns of a just-opened ticket (without its id)."""
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
        "accepted_at": None,
        "arrived_at": None,
        "resolved_at": None,
        "closed_at": None,
        "close_reason": None,
        "note": None,
        "reminded_at": None,
        "breached_at": None,
        "review_at": None,
    }
    values["timer_at"] = next_timer(values)
    return values


def apply(
    conn: Connection,
    ticket_id: int,
    transition: Transition,
    *,
    at: datetime,
    actor: str,
    worker_id: Any = _KEEP,
    reason: Reason | str | None = None,
    **changes: Any,
) -> RowMapping:
    """Move a ticket through one lifecycle step; one audit row per call. ``reason`` is a
    Reason, or a person's own words.

    Raises InvalidTransition when the lifecycle does not allow it, StaleTicket when another
    writer changed the ticket between our read and our write. The ticket's next timer is
    recomputed from its new state.
    """
    row = load(conn, ticket_id, for_update=True)
    step(conn, row, transition, at=at, actor=actor, worker_id=worker_id, reason=reason, **changes)
    return load(conn, ticket_id)


def step(
    conn: Connection,
    row: Mapping[Any, Any],
    transition: Transition,
    *,
    at: datetime,
    actor: str,
    worker_id: Any = _KEEP,
    reason: Reason | str | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """``apply`` on a row the caller has read (and on PostgreSQL locked) in this transaction;
    returns the ticket as it is now."""
    ticket_id = int(row["id"])
    why = as_reason(reason)
    values, current, target, new_worker = transition_values(row, transition, at, worker_id, changes)
    after = {**row, **values}
    values["timer_at"] = after["timer_at"] = next_timer(after)
    done = conn.execute(
        _UPDATE_TICKET, {**values, "b_id": ticket_id, "b_version": row["version"]}
    ).rowcount
    if not done:
        raise StaleTicket(f"ticket {ticket_id} changed concurrently")
    _audit(
        conn,
        ticket_id,
        transition,
        current,
        target,
        at,
        actor,
        new_worker,
        row["worker_id"],
        why,
    )
    if target in FINAL:
        conn.execute(_INCIDENT_STATUS, {"b_id": row["incident_id"], "status": "closed"})
    elif current in FINAL:
        conn.execute(_INCIDENT_STATUS, {"b_id": row["incident_id"], "status": "open"})
    log.info(
        "ticket %s %s: %s -> %s%s",
        ticket_id,
        transition.value,
        current.value,
        target.value,
        f" ({why.text})" if why else "",
        extra={"ticket_id": ticket_id, "worker_id": new_worker},
    )
    return after


def transition_values(
    row: Mapping[Any, Any],
    transition: Transition,
    at: datetime,
    worker_id: Any,
    changes: Mapping[str, Any],
) -> tuple[dict[str, Any], Status, Status, str | None]:
    """What one lifecycle step changes on a ticket row: the new column values, the status
    before and after, and the assignee after. Raises InvalidTransition."""
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
            {
                Status.CLOSED: CloseReason.FIXED,
                Status.CANCELLED: CloseReason.CLEARED,
                Status.REJECTED: CloseReason.FALSE_ALARM,
            }[target].value,
        )
    values["version"] = row["version"] + 1
    return values, current, target, new_worker


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
    reason: Reason | str | None,
) -> None:
    conn.execute(
        _INSERT_AUDIT,
        audit_row(
            ticket_id, transition, current, target, at, actor, worker_id, from_worker_id, reason
        ),
    )


def audit_row(
    ticket_id: int,
    transition: Transition,
    current: Status | None,
    target: Status,
    at: datetime,
    actor: str,
    worker_id: str | None,
    from_worker_id: str | None,
    reason: Reason | str | None,
) -> dict[str, Any]:
    """One audit row: who (actor), when, from, to, why (the English text, and the code and
    parameters that the pages translate); not yet pushed or in InfluxDB."""
    return {
        "ticket_id": ticket_id,
        "at": at,
        "actor": actor[:80],
        "transition": transition.value,
        "from_status": current.value if current else None,
        "to_status": target.value,
        "worker_id": worker_id,
        "from_worker_id": from_worker_id,
        **audit_columns(reason),
        "pushed": False,
        "metric_sent": False,
    }


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
    reason: Reason | str | None = None,
    load_by_worker: MutableMapping[str, int] | None = None,
    escalate_if_none: bool = True,
) -> RowMapping:
    """Give a ticket to the best on-duty worker; see ``assign_row``."""
    assign_row(
        conn,
        site,
        load(conn, ticket_id, for_update=True),
        at=at,
        actor=actor,
        exclude=exclude,
        positions=positions,
        reason=reason,
        load_by_worker=load_by_worker,
        escalate_if_none=escalate_if_none,
    )
    return load(conn, ticket_id)


def assign_row(
    conn: Connection,
    site: Site,
    row: Mapping[Any, Any],
    *,
    at: datetime,
    actor: str,
    exclude: frozenset[str] = frozenset(),
    positions: Mapping[str, tuple[float, float]] | None = None,
    reason: Reason | str | None = None,
    load_by_worker: MutableMapping[str, int] | None = None,
    escalate_if_none: bool = True,
) -> Mapping[Any, Any]:
    """Give a ticket (a row read in this transaction) to the best on-duty worker (first time: assigned, later: reassigned).

    Workers who declined it or let it time out are never chosen again. With nobody available
    the ticket goes back to open (if someone had it) and is escalated to the street
    supervisor's queue (unless ``escalate_if_none`` is off: then nothing changes). ``reason``
    (why the ticket is being assigned again, if it is) is kept as the cause of the choice.
    ``load_by_worker`` is a running count of open tickets per worker that the caller keeps
    across many assignments (one query instead of one per ticket); it is updated here.
    """
    ticket_id = int(row["id"])
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
            previous = row["worker_id"]
            row = step(
                conn,
                row,
                Transition.UNASSIGNED,
                at=at,
                actor=actor,
                worker_id=None,
                reason=reason,
            )
            if load_by_worker is not None and load_by_worker.get(previous, 0) > 0:
                load_by_worker[previous] -= 1
        return step(conn, row, Transition.ESCALATED, at=at, actor=actor, reason=choice.reason)
    first = Status(row["status"]) is Status.OPEN and row["assigned_at"] is None
    transition = Transition.ASSIGNED if first else Transition.REASSIGNED
    why = choice.reason.because(as_reason(reason))
    out = step(conn, row, transition, at=at, actor=actor, worker_id=choice.worker_id, reason=why)
    if load_by_worker is not None:
        load_by_worker[choice.worker_id] = load_by_worker.get(choice.worker_id, 0) + 1
        previous = row["worker_id"]
        if previous and previous != choice.worker_id and load_by_worker.get(previous, 0) > 0:
            load_by_worker[previous] -= 1
    return out
