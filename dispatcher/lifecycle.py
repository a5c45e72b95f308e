"""The ticket lifecycle: states, the transitions allowed between them, and deadlines."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from config.site import Category


class Status(StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    RESOLVED = "resolved"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Transition(StrEnum):
    OPENED = "opened"
    ASSIGNED = "assigned"
    REASSIGNED = "reassigned"
    UNASSIGNED = "unassigned"
    DECLINED = "declined"
    ACCEPTED = "accepted"
    ARRIVED = "arrived"
    RESOLVED = "resolved"
    VERIFIED = "verified"
    REOPENED = "reopened"
    ESCALATED = "escalated"
    REMINDED = "reminded"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


ACTIVE = frozenset({Status.OPEN, Status.ASSIGNED, Status.ACCEPTED, Status.RESOLVED})
FINAL = frozenset({Status.CLOSED, Status.CANCELLED, Status.REJECTED})

# transition -> (statuses it may start from, status it leads to; None keeps the status)
RULES: dict[Transition, tuple[frozenset[Status], Status | None]] = {
    Transition.OPENED: (frozenset(), Status.OPEN),
    Transition.ASSIGNED: (frozenset({Status.OPEN}), Status.ASSIGNED),
    Transition.REASSIGNED: (
        frozenset({Status.ASSIGNED, Status.ACCEPTED, Status.OPEN}),
        Status.ASSIGNED,
    ),
    Transition.UNASSIGNED: (frozenset({Status.ASSIGNED, Status.ACCEPTED}), Status.OPEN),
    Transition.DECLINED: (frozenset({Status.ASSIGNED}), Status.OPEN),
    Transition.ACCEPTED: (frozenset({Status.ASSIGNED}), Status.ACCEPTED),
    Transition.ARRIVED: (frozenset({Status.ACCEPTED}), None),
    Transition.RESOLVED: (frozenset({Status.ACCEPTED, Status.ASSIGNED}), Status.RESOLVED),
    Transition.VERIFIED: (frozenset({Status.RESOLVED}), Status.CLOSED),
    Transition.REOPENED: (frozenset({Status.RESOLVED, Status.CLOSED}), Status.ASSIGNED),
    Transition.ESCALATED: (frozenset(ACTIVE), None),
    Transition.REMINDED: (frozenset({Status.ASSIGNED, Status.ACCEPTED}), None),
    Transition.REJECTED: (
        frozenset({Status.ASSIGNED, Status.ACCEPTED, Status.OPEN}),
        Status.REJECTED,
    ),
    Transition.CANCELLED: (
        frozenset({Status.OPEN, Status.ASSIGNED, Status.ACCEPTED}),
        Status.CANCELLED,
    ),
}


class InvalidTransition(ValueError):
    """A transition that the lifecycle does not allow from the ticket's current status."""

    def __init__(self, transition: Transition, current: Status) -> None:
        super().__init__(f"cannot {transition.value} a ticket that is {current.value}")
        self.transition = transition
        self.current = current


def next_status(current: Status | None, transition: Transition) -> Status:
    """The status after ``transition``; raises InvalidTransition when it is not allowed."""
    allowed, target = RULES[transition]
    if current is None:
        if transition is not Transition.OPENED:
            raise ValueError("a new ticket can only be opened")
        return Status.OPEN
    if current not in allowed:
        raise InvalidTransition(transition, current)
    return target if target is not None else current


def deadline(opened_at: datetime, category: Category) -> datetime:
    """When the SLA runs out: opening time plus the category's SLA."""
    return opened_at + timedelta(minutes=category.sla_minutes)


class TimerKind(StrEnum):
    """The timers a ticket can have running, in the order they are handled when due together."""

    VERIFY_TIMEOUT = "verify_timeout"
    ACCEPT_TIMEOUT = "accept_timeout"
    REMINDER = "reminder"
    SLA = "sla"


def timers_of(ticket: Mapping[Any, Any]) -> dict[TimerKind, datetime]:
    """The timers running for a ticket in its current state, and when each is due.

    - accept timeout: an assigned ticket not accepted within the category's time is reassigned;
    - reminder: once, the category's lead time before the SLA deadline, to whoever holds it;
    - SLA: once, at the deadline, an unfinished ticket is escalated to the supervisor;
    - verify timeout: a resolved ticket whose cameras have not answered gets the category's
      policy (once: afterwards it waits for the supervisor's review).
    """
    status = Status(ticket["status"])
    out: dict[TimerKind, datetime] = {}
    if status is Status.RESOLVED and ticket["review_at"] is None and ticket["resolved_at"]:
        out[TimerKind.VERIFY_TIMEOUT] = ticket["resolved_at"] + timedelta(
            seconds=ticket["verify_timeout_s"]
        )
    if status is Status.ASSIGNED and ticket["assigned_at"] is not None:
        out[TimerKind.ACCEPT_TIMEOUT] = ticket["assigned_at"] + timedelta(
            seconds=ticket["accept_timeout_s"]
        )
    if (
        status in (Status.ASSIGNED, Status.ACCEPTED)
        and ticket["reminded_at"] is None
        and ticket["remind_before_s"] > 0
    ):
        out[TimerKind.REMINDER] = ticket["deadline"] - timedelta(seconds=ticket["remind_before_s"])
    if status in (Status.OPEN, Status.ASSIGNED, Status.ACCEPTED) and ticket["breached_at"] is None:
        out[TimerKind.SLA] = ticket["deadline"]
    return out


def next_timer(ticket: Mapping[Any, Any]) -> datetime | None:
    """When the ticket's next timer is due (None: nothing is running)."""
    return min(timers_of(ticket).values(), default=None)


def due_timers(ticket: Mapping[Any, Any], now: datetime) -> list[TimerKind]:
    """The ticket's timers that are due at ``now``, in handling order."""
    running = timers_of(ticket)
    return [k for k in TimerKind if k in running and running[k] <= now]
