"""The ticket lifecycle: states, the transitions allowed between them, and deadlines."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

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
    Transition.REASSIGNED: (frozenset({Status.ASSIGNED, Status.ACCEPTED, Status.OPEN}), Status.ASSIGNED),
    Transition.UNASSIGNED: (frozenset({Status.ASSIGNED, Status.ACCEPTED}), Status.OPEN),
    Transition.DECLINED: (frozenset({Status.ASSIGNED}), Status.OPEN),
    Transition.ACCEPTED: (frozenset({Status.ASSIGNED}), Status.ACCEPTED),
    Transition.ARRIVED: (frozenset({Status.ACCEPTED}), None),
    Transition.RESOLVED: (frozenset({Status.ACCEPTED, Status.ASSIGNED}), Status.RESOLVED),
    Transition.VERIFIED: (frozenset({Status.RESOLVED}), Status.CLOSED),
    Transition.REOPENED: (frozenset({Status.RESOLVED, Status.CLOSED}), Status.ASSIGNED),
    Transition.ESCALATED: (frozenset(ACTIVE), None),
    Transition.REMINDED: (frozenset({Status.ASSIGNED, Status.ACCEPTED}), None),
    Transition.REJECTED: (frozenset({Status.ASSIGNED, Status.ACCEPTED, Status.OPEN}), Status.REJECTED),
    Transition.CANCELLED: (frozenset({Status.OPEN, Status.ASSIGNED, Status.ACCEPTED}), Status.CANCELLED),
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
