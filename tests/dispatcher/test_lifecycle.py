"""The lifecycle as pure rules: every transition from every status, and the timers each state runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dispatcher.lifecycle import (
    RULES,
    InvalidTransition,
    Status,
    TimerKind,
    Transition,
    due_timers,
    next_status,
    next_timer,
    timers_of,
)

S, T = Status, Transition

# The whole table: (from, transition) -> to. Anything not listed must be refused.
ALLOWED: dict[tuple[Status, Transition], Status] = {
    (S.OPEN, T.ASSIGNED): S.ASSIGNED,
    (S.OPEN, T.REASSIGNED): S.ASSIGNED,
    (S.ASSIGNED, T.REASSIGNED): S.ASSIGNED,
    (S.ACCEPTED, T.REASSIGNED): S.ASSIGNED,
    (S.ASSIGNED, T.UNASSIGNED): S.OPEN,
    (S.ACCEPTED, T.UNASSIGNED): S.OPEN,
    (S.ASSIGNED, T.DECLINED): S.OPEN,
    (S.ASSIGNED, T.ACCEPTED): S.ACCEPTED,
    (S.ACCEPTED, T.ARRIVED): S.ACCEPTED,
    (S.ACCEPTED, T.RESOLVED): S.RESOLVED,
    (S.ASSIGNED, T.RESOLVED): S.RESOLVED,
    (S.RESOLVED, T.VERIFIED): S.CLOSED,
    (S.RESOLVED, T.REOPENED): S.ASSIGNED,
    (S.CLOSED, T.REOPENED): S.ASSIGNED,
    (S.ASSIGNED, T.REMINDED): S.ASSIGNED,
    (S.ACCEPTED, T.REMINDED): S.ACCEPTED,
    (S.OPEN, T.REJECTED): S.REJECTED,
    (S.ASSIGNED, T.REJECTED): S.REJECTED,
    (S.ACCEPTED, T.REJECTED): S.REJECTED,
    (S.OPEN, T.CANCELLED): S.CANCELLED,
    (S.ASSIGNED, T.CANCELLED): S.CANCELLED,
    (S.ACCEPTED, T.CANCELLED): S.CANCELLED,
} | {(s, T.ESCALATED): s for s in (S.OPEN, S.ASSIGNED, S.ACCEPTED, S.RESOLVED)}


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("transition", [t for t in Transition if t is not T.OPENED])
def test_every_transition_from_every_status(status: Status, transition: Transition) -> None:
    expected = ALLOWED.get((status, transition))
    if expected is None:
        with pytest.raises(InvalidTransition, match=f"cannot {transition.value}"):
            next_status(status, transition)
    else:
        assert next_status(status, transition) is expected


def test_a_ticket_starts_open_and_final_states_are_final() -> None:
    assert next_status(None, T.OPENED) is S.OPEN
    with pytest.raises(ValueError):
        next_status(None, T.ASSIGNED)
    assert set(RULES) == set(Transition)
    leaving_final = [(s, t) for (s, t) in ALLOWED if s in (S.CANCELLED, S.REJECTED)]
    assert leaving_final == []  # only a closed ticket can come back (reopened)


T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)


def ticket(status: Status, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "status": status.value,
        "opened_at": T0,
        "deadline": T0 + timedelta(minutes=240),
        "assigned_at": None,
        "resolved_at": None,
        "reminded_at": None,
        "breached_at": None,
        "review_at": None,
        "accept_timeout_s": 600.0,
        "remind_before_s": 1800.0,
        "verify_timeout_s": 120.0,
    }
    row.update(fields)
    return row


def test_timers_by_state() -> None:
    assert timers_of(ticket(S.OPEN)) == {TimerKind.SLA: T0 + timedelta(minutes=240)}
    assigned = ticket(S.ASSIGNED, assigned_at=T0)
    assert timers_of(assigned) == {
        TimerKind.ACCEPT_TIMEOUT: T0 + timedelta(minutes=10),
        TimerKind.REMINDER: T0 + timedelta(minutes=210),
        TimerKind.SLA: T0 + timedelta(minutes=240),
    }
    assert next_timer(assigned) == T0 + timedelta(minutes=10)
    accepted = ticket(S.ACCEPTED, assigned_at=T0, reminded_at=T0)
    assert set(timers_of(accepted)) == {TimerKind.SLA}
    resolved = ticket(S.RESOLVED, resolved_at=T0)
    assert timers_of(resolved) == {TimerKind.VERIFY_TIMEOUT: T0 + timedelta(seconds=120)}
    assert timers_of(ticket(S.RESOLVED, resolved_at=T0, review_at=T0)) == {}
    for final in (S.CLOSED, S.CANCELLED, S.REJECTED):
        assert next_timer(ticket(final)) is None
    assert due_timers(assigned, T0 + timedelta(hours=5)) == [
        TimerKind.ACCEPT_TIMEOUT,
        TimerKind.REMINDER,
        TimerKind.SLA,
    ]
