"""Closure verified by the camera: on resolve, ask the cameras that saw it; judge their answers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, insert, select

from broker.messages import Command, CommandResult
from config.site import Category, Site
from dispatcher import tickets as ticket_ops
from dispatcher.lifecycle import Status, Transition
from dispatcher.reasons import Reason, ReasonCode
from dispatcher.store.schema import evidence, incident_tracks, incidents, verifications

log = logging.getLogger(__name__)

Verdict = Literal["close", "reopen", "wait", "review"]


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: Reason


def judge(
    *,
    category: Category,
    outcomes: Mapping[str, str],
    asked: Iterable[str],
    resolved_at: datetime,
    now: datetime,
    photo: bool,
    timeout_s: float | None = None,
) -> Judgement:
    """Decide a resolved ticket's fate from the cameras' answers so far.

    Any camera that still sees the problem reopens it; all asked cameras clear closes it; while
    answers are missing we wait until the timeout (the category's, unless the ticket carries
    its own), then apply its policy (close on the worker's photo, or send it to the
    supervisor for review). ``photo`` says whether this resolution carries the worker's
    after-photo: without one, nothing closes on it, and the supervisor reviews instead.
    """
    timeout = category.verify_timeout_seconds if timeout_s is None else timeout_s
    asked = list(asked)
    by = "sensor" if category.verify == "sensor" else "camera"
    if any(o == "still_present" for o in outcomes.values()):
        seen = [c for c, o in outcomes.items() if o == "still_present"]
        return Judgement("reopen", Reason(ReasonCode.VERIFY_STILL_PRESENT, {"by": by, "ids": seen}))
    if asked and all(outcomes.get(c) == "clear" for c in asked):
        return Judgement("close", Reason(ReasonCode.VERIFY_CLEAR, {"by": by, "ids": asked}))
    if asked and now < resolved_at + timedelta(seconds=timeout):
        return Judgement("wait", Reason(ReasonCode.VERIFY_WAITING, {"by": by}))
    accept = photo and category.on_no_verification == "accept_with_photo"
    if asked:
        code = ReasonCode.VERIFY_TIMEOUT_PHOTO if accept else ReasonCode.VERIFY_TIMEOUT_REVIEW
        return Judgement("close" if accept else "review", Reason(code, {"by": by}))
    code = ReasonCode.VERIFY_UNCOVERED_PHOTO if accept else ReasonCode.VERIFY_UNCOVERED_REVIEW
    return Judgement("close" if accept else "review", Reason(code))


def cameras_for(site: Site, incident: Mapping[Any, Any]) -> list[str]:
    """Cameras that saw the incident (and still exist in the site)."""
    known = {c.id for c in site.cameras}
    return [c for c in (incident.get("camera_ids") or []) if c in known]


def verify_commands(
    site: Site, ticket: Mapping[Any, Any], incident: Mapping[Any, Any], at: datetime
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


def ask_cameras(
    conn: Connection, site: Site, ticket: Mapping[Any, Any], at: datetime
) -> list[Command]:
    """Record one verify question per camera that saw the ticket's incident; returns the
    commands to publish once the transaction has committed."""
    incident = (
        conn.execute(select(incidents).where(incidents.c.id == ticket["incident_id"]))
        .mappings()
        .one()
    )
    commands = verify_commands(site, ticket, incident, at)
    for cmd in commands:
        conn.execute(
            insert(verifications).values(
                command_id=str(cmd.command_id),
                ticket_id=ticket["id"],
                camera_id=cmd.camera_id,
                device_id=cmd.device_id,
                asked_at=at,
            )
        )
    return commands


def transition_for(verdict: Verdict) -> Transition | None:
    return {"close": Transition.VERIFIED, "reopen": Transition.REOPENED}.get(verdict)


def result_outcome(result: CommandResult) -> str | None:
    """The verify outcome a result carries, or None for other commands or errors."""
    if result.action != "verify" or result.outcome not in ("clear", "still_present"):
        return None
    return result.outcome


# Actors of the verification's own transitions (pushes tell a review from an escalation).
VERIFY_ACTOR = "system:verify"
REVIEW_ACTOR = "system:review"


def answers(
    conn: Connection, category: Category, ticket: Mapping[Any, Any]
) -> tuple[list[str], dict[str, str]]:
    """Who was asked to confirm a resolved ticket, and what each has said so far.

    Cameras: the verify commands sent at the latest resolution and their results. Sensors: the
    incident's sensors, clear once each has reported its reading back to normal. Photo
    categories ask nobody.
    """
    if category.verify == "camera":
        # Only this resolution's round: a reopened ticket's earlier answers no longer count.
        rows = conn.execute(
            select(verifications.c.camera_id, verifications.c.outcome).where(
                verifications.c.ticket_id == ticket["id"],
                verifications.c.asked_at >= ticket["resolved_at"],
            )
        ).all()
        return [c for c, _ in rows], {c: o for c, o in rows if o}
    if category.verify == "sensor":
        rows = conn.execute(
            select(incident_tracks.c.track_key, incident_tracks.c.cleared_at).where(
                incident_tracks.c.incident_id == ticket["incident_id"]
            )
        ).all()
        return [k for k, _ in rows], {k: "clear" for k, cleared in rows if cleared is not None}
    return [], {}


def has_after_photo(conn: Connection, ticket: Mapping[Any, Any]) -> bool:
    """Whether the worker's latest resolution came with an after-photo: one stored with it
    (a reopened ticket's earlier photo shows the earlier fix, not this one)."""
    found = conn.execute(
        select(evidence.c.id)
        .where(
            evidence.c.ticket_id == ticket["id"],
            evidence.c.kind == "after_photo",
            evidence.c.created_at >= ticket["resolved_at"],
        )
        .limit(1)
    ).first()
    return found is not None


def settle(conn: Connection, site: Site, ticket_id: int, now: datetime) -> Judgement | None:
    """Apply the verification judgement to a resolved ticket if one can be made at ``now``:
    close it, reopen it to the same worker, or (once) ask the supervisor to review it.
    Returns the judgement acted on, or None (not resolved, or still waiting)."""
    row = ticket_ops.load(conn, ticket_id, for_update=True)
    if Status(row["status"]) is not Status.RESOLVED:
        return None
    category = site.categories[row["category"]]
    asked, outcomes = answers(conn, category, row)
    judgement = judge(
        category=category,
        outcomes=outcomes,
        asked=asked,
        resolved_at=row["resolved_at"],
        now=now,
        photo=has_after_photo(conn, row),
        timeout_s=row["verify_timeout_s"],
    )
    transition = transition_for(judgement.verdict)
    if transition is not None:
        ticket_ops.apply(
            conn, ticket_id, transition, at=now, actor=VERIFY_ACTOR, reason=judgement.reason
        )
        return judgement
    if judgement.verdict == "review" and row["review_at"] is None:
        ticket_ops.apply(
            conn,
            ticket_id,
            Transition.ESCALATED,
            at=now,
            actor=REVIEW_ACTOR,
            reason=judgement.reason,
            review_at=now,
        )
        return judgement
    return None
