"""Why a ticket changed: a stable code with parameters, which the web pages translate, and the
English sentence that the API, the pushes and the logs carry.

Each audit row stores all three (``reason_code``, ``reason_params``, ``reason``). Parameters
are plain JSON values named by what they hold, so a page knows how to show each: ``grid`` and
``neighbour`` (grid cell ids), ``worker`` (a worker id), ``seconds`` (a duration),
``deadline`` (an ISO 8601 time in UTC, shown in the site's time zone), ``by`` (``camera`` or
``sensor``), ``id``/``ids`` (a device's camera or sensor ids) and ``text`` (a person's own
words, shown as typed). A reason that follows from another one (a reassignment because a
worker did not accept in time) keeps that one as its ``cause``, stored as the parameter
``cause`` (``{"code": ..., "params": ...}``) and written first in the English sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

ReasonParam = str | int | float | list[str]


class ReasonCode(StrEnum):
    """Every reason the dispatcher writes into an audit row; values never change."""

    NOTE = "note"
    ASSIGN_HOME = "assign.home"
    ASSIGN_NEIGHBOUR = "assign.neighbour"
    ASSIGN_NOBODY = "assign.nobody"
    ASSIGN_OUTSIDE = "assign.outside_grid"
    DECLINED_BY = "assign.declined_by"
    ACCEPT_TIMEOUT = "timer.accept_timeout"
    REMINDER = "timer.reminder"
    SLA_BREACHED = "timer.sla_breached"
    SHIFT_CHANGE = "timer.shift_change"
    ON_DUTY_NOW = "timer.on_duty_now"
    VERIFY_STILL_PRESENT = "verify.still_present"
    VERIFY_CLEAR = "verify.clear"
    VERIFY_WAITING = "verify.waiting"
    VERIFY_TIMEOUT_PHOTO = "verify.timeout_photo"
    VERIFY_TIMEOUT_REVIEW = "verify.timeout_review"
    VERIFY_UNCOVERED_PHOTO = "verify.uncovered_photo"
    VERIFY_UNCOVERED_REVIEW = "verify.uncovered_review"
    VERIFY_UNDECIDED = "verify.undecided"
    CLEARED = "intake.cleared"


class CloseReason(StrEnum):
    """Why a ticket reached a final status (``tickets.close_reason``)."""

    FIXED = "fixed"
    CLEARED = "cleared"
    CLEARED_BY_CAMERA = "cleared_by_camera"
    CLEARED_BY_SENSOR = "cleared_by_sensor"
    FALSE_ALARM = "false_alarm"


def _utc(iso: Any) -> str:
    return f"{datetime.fromisoformat(str(iso)).astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _ids(p: Mapping[str, Any]) -> str:
    return ", ".join(str(i) for i in p["ids"])


_ENGLISH: dict[ReasonCode, Callable[[Mapping[str, Any]], str]] = {
    ReasonCode.NOTE: lambda p: str(p["text"]),
    ReasonCode.ASSIGN_HOME: lambda p: f"on duty in {p['grid']}",
    ReasonCode.ASSIGN_NEIGHBOUR: lambda p: (
        f"nobody on duty in {p['grid']}; {p['neighbour']} covers"
    ),
    ReasonCode.ASSIGN_NOBODY: lambda p: f"nobody on duty in {p['grid']} or its neighbours",
    ReasonCode.ASSIGN_OUTSIDE: lambda p: "position is outside every grid cell",
    ReasonCode.DECLINED_BY: lambda p: f"declined by {p['worker']}",
    ReasonCode.ACCEPT_TIMEOUT: lambda p: (
        f"{p['worker']} did not accept within {float(p['seconds']) / 60:g} min"
    ),
    ReasonCode.REMINDER: lambda p: f"due by {_utc(p['deadline'])}",
    ReasonCode.SLA_BREACHED: lambda p: f"SLA deadline {_utc(p['deadline'])} passed",
    ReasonCode.SHIFT_CHANGE: lambda p: "shift change",
    ReasonCode.ON_DUTY_NOW: lambda p: "a worker is on duty now",
    ReasonCode.VERIFY_STILL_PRESENT: lambda p: f"{p['by']} {_ids(p)} still sees it",
    ReasonCode.VERIFY_CLEAR: lambda p: f"verified clear by {p['by']} {_ids(p)}",
    ReasonCode.VERIFY_WAITING: lambda p: f"waiting for the {p['by']}",
    ReasonCode.VERIFY_TIMEOUT_PHOTO: lambda p: (
        f"no {p['by']} answered in time; accepted on the worker's photo"
    ),
    ReasonCode.VERIFY_TIMEOUT_REVIEW: lambda p: (
        f"no {p['by']} answered in time; needs the supervisor's review"
    ),
    ReasonCode.VERIFY_UNCOVERED_PHOTO: lambda p: (
        "no camera covers it; accepted on the worker's photo"
    ),
    ReasonCode.VERIFY_UNCOVERED_REVIEW: lambda p: (
        "no camera covers it; needs the supervisor's review"
    ),
    ReasonCode.VERIFY_UNDECIDED: lambda p: "verification undecided",
    ReasonCode.CLEARED: lambda p: f"cleared by {p['by']} {p['id']} before anyone arrived",
}


@dataclass(frozen=True)
class Reason:
    """One reason: its code, its parameters and, if it follows from another, that cause."""

    code: ReasonCode
    params: Mapping[str, ReasonParam] = field(default_factory=dict)
    cause: Reason | None = None

    @classmethod
    def note(cls, text: str) -> Reason:
        """A person's own words (a worker's decline, a supervisor's reassignment…)."""
        return cls(ReasonCode.NOTE, {"text": text})

    def because(self, cause: Reason | None) -> Reason:
        """This reason, following from ``cause``."""
        return replace(self, cause=cause)

    @property
    def text(self) -> str:
        """The English sentence (API, CSV, pushes, logs)."""
        own = _ENGLISH[self.code](self.params)
        return own if self.cause is None else f"{self.cause.text}; {own}"

    def params_json(self) -> dict[str, Any]:
        """The parameters as stored (``audit.reason_params``), the cause included."""
        out: dict[str, Any] = {
            k: list(v) if isinstance(v, list) else v for k, v in self.params.items()
        }
        if self.cause is not None:
            out["cause"] = {"code": self.cause.code.value, "params": self.cause.params_json()}
        return out

    def __str__(self) -> str:
        return self.text


def as_reason(value: Reason | str | None) -> Reason | None:
    """A reason from what a caller gives: a Reason, a person's words, or nothing."""
    if value is None or value == "":
        return None
    return value if isinstance(value, Reason) else Reason.note(value)


def audit_columns(value: Reason | str | None) -> dict[str, Any]:
    """The audit row's reason columns: the English text, the code and its parameters."""
    why = as_reason(value)
    if why is None:
        return {"reason": None, "reason_code": None, "reason_params": None}
    return {"reason": why.text, "reason_code": why.code.value, "reason_params": why.params_json()}


def utc_iso(at: datetime) -> str:
    """A time as a reason parameter: ISO 8601 in UTC (the pages show it in the site's zone)."""
    return at.astimezone(UTC).isoformat()
