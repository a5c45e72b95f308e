"""Closure verified by the camera: on resolve, ask the cameras that saw it; judge their answers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, select

from broker.messages import Command, CommandResult
from config.site import Category, Site
from dispatcher.lifecycle import Status, Transition
from dispatcher.store.schema import incidents, tickets

log = logging.getLogger(__name__)

Verdict = Literal["close", "reopen", "wait", "review"]


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str


def judge(
    *,
    category: Category,
    outcomes: Mapping[str, str],
    asked: Iterable[str],
    resolved_at: datetime,
    now: datetime,
) -> Judgement:
    """Decide a resolved ticket's fate from the cameras' answers so far.

    Any camera that still sees the problem reopens it; all asked cameras clear closes it; while
    answers are missing we wait until the category's timeout, then apply its policy (close
    on the worker's photo, or send it to the supervisor for review).
    """
    asked = list(asked)
    if any(o == "still_present" for o in outcomes.values()):
        cams = ", ".join(c for c, o in outcomes.items() if o == "still_present")
        return Judgement("reopen", f"camera {cams} still sees it")
    if asked and all(outcomes.get(c) == "clear" for c in asked):
        return Judgement("close", f"verified clear by camera {', '.join(asked)}")
    if asked and now < resolved_at + timedelta(seconds=category.verify_timeout_seconds):
        return Judgement("wait", "waiting for the camera")
    why = "no camera answered in time" if asked else "no camera covers it"
    if category.on_no_verification == "accept_with_photo":
        return Judgement("close", f"{why}; accepted on the worker's photo")
    return Judgement("review", f"{why}; needs the supervisor's review")


def cameras_for(site: Site, incident: Mapping[str, Any]) -> list[str]:
    """Cameras that saw the incident (and still exist in the site)."""
    known = {c.id for c in site.cameras}
    return [c for c in (incident.get("camera_ids") or []) if c in known]


def verify_commands(
    site: Site, ticket: Mapping[str, Any], incident: Mapping[str, Any], at: datetime
) -> list[Command]:
    """One ``verify`` command per camera that saw the incident."""
    category = site.categories[ticket["category"]]
    if category.verify != "camera":
        return []
    by_id = {c.id: c for c in site.cameras}
    cmds = []
    for cam_id in cameras_for(site, incident):
        cam = by_id[cam_id]
        bbox = incident.get("bbox")
        cmds.append(
            Command(
                command_id=uuid.uuid4(),
                device_id=cam.device,
                action="verify",
                issued_at=at,
                camera_id=cam.id,
                kind=ticket["category"],
                region=tuple(bbox) if bbox else None,
                ticket_id=str(ticket["id"]),
                timeout_s=min(600.0, category.verify_timeout_seconds),
            )
        )
    return cmds


def resolved_waiting(conn: Connection) -> list[dict[str, Any]]:
    """Resolved tickets (awaiting verification) with their incidents."""
    rows = conn.execute(
        select(tickets, incidents.c.camera_ids, incidents.c.bbox)
        .join(incidents, incidents.c.id == tickets.c.incident_id)
        .where(tickets.c.status == Status.RESOLVED.value)
    ).mappings()
    return [dict(r) for r in rows]


def transition_for(verdict: Verdict) -> Transition | None:
    return {"close": Transition.VERIFIED, "reopen": Transition.REOPENED}.get(verdict)


def result_outcome(result: CommandResult) -> str | None:
    """The verify outcome a result carries, or None for other commands or errors."""
    if result.action != "verify" or result.outcome not in ("clear", "still_present"):
        return None
    return result.outcome
