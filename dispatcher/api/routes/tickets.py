"""Tickets: list, search, export and read what you may see; workers act on their own tickets,
supervisors on their streets' tickets."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, UploadFile, status
from fastapi.responses import StreamingResponse
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql import func

from dispatcher import tickets as ticket_ops
from dispatcher.api.deps import CurrentUser, DispatcherDep, SupervisorUser, User, invalid
from dispatcher.api.models import (
    Attention,
    AuditEntryPublic,
    ErrorPublic,
    EvidencePublic,
    FilterTime,
    Identifier,
    ReasonRequest,
    ReassignRequest,
    Responses,
    ReviewRequest,
    Source,
    TicketDetail,
    TicketPage,
    TicketPublic,
    TicketStatus,
    VerificationPublic,
)
from dispatcher.evidence import MAX_IMAGE_BYTES, BadImage
from dispatcher.lifecycle import ACTIVE, InvalidTransition, Transition
from dispatcher.service import Dispatcher, NotYours
from dispatcher.store.schema import audit, events, evidence, incidents, tickets, verifications

log = logging.getLogger(__name__)
router = APIRouter(prefix="/tickets", tags=["tickets"])

AUTH: Responses = {
    401: {"model": ErrorPublic, "description": "not logged in, or the token expired"}
}
NOT_FOUND: Responses = {
    404: {"model": ErrorPublic, "description": "no such ticket, or not yours to see"}
}
CONFLICT: Responses = {
    409: {"model": ErrorPublic, "description": "the lifecycle does not allow this now"}
}
FORBIDDEN: Responses = {403: {"model": ErrorPublic, "description": "your role may not do this"}}
EXPORT_LIMIT = 50_000
SORTS = {
    "priority": (tickets.c.priority, tickets.c.id.desc()),
    "-opened_at": (tickets.c.opened_at.desc(), tickets.c.id.desc()),
    "opened_at": (tickets.c.opened_at, tickets.c.id),
    "deadline": (tickets.c.deadline, tickets.c.id),
}


class TicketFilters:
    """The filters shared by the list and the CSV export."""

    def __init__(
        self,
        status_: Annotated[
            list[TicketStatus] | None,
            Query(alias="status", max_length=7, description="any of these statuses"),
        ] = None,
        active: Annotated[
            bool | None, Query(description="true: open/assigned/accepted/resolved only")
        ] = None,
        grid: Annotated[Identifier | None, Query()] = None,
        street: Annotated[Identifier | None, Query()] = None,
        category: Annotated[Identifier | None, Query()] = None,
        worker: Annotated[Identifier | None, Query(description="assigned worker id")] = None,
        source: Annotated[Source | None, Query()] = None,
        overdue: Annotated[bool | None, Query(description="active and past the deadline")] = None,
        attention: Annotated[
            list[Attention] | None,
            Query(
                max_length=4,
                description="active and needing the supervisor for any of these reasons: "
                "escalated, no_worker (nobody assigned), review (the cameras could not confirm "
                "the fix), overdue",
            ),
        ] = None,
        opened_from: Annotated[FilterTime | None, Query(description="opened at or after")] = None,
        opened_to: Annotated[FilterTime | None, Query(description="opened before")] = None,
        q: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=64,
                description="a ticket id, or part of a grid, category or worker id",
            ),
        ] = None,
    ) -> None:
        self.status, self.active, self.grid, self.street = status_, active, grid, street
        self.category, self.worker, self.source, self.overdue = category, worker, source, overdue
        self.opened_from, self.opened_to, self.q = opened_from, opened_to, q
        self.attention = attention

    def where(self, user: User, now: datetime) -> list[ColumnElement[bool]]:
        active = [s.value for s in ACTIVE]
        where = [user.tickets_visible()]
        if self.status:
            where.append(tickets.c.status.in_(self.status))
        if self.active is not None:
            where.append(
                tickets.c.status.in_(active) if self.active else tickets.c.status.not_in(active)
            )
        for column, value in (
            (tickets.c.grid_id, self.grid),
            (tickets.c.street_id, self.street),
            (tickets.c.category, self.category),
            (tickets.c.worker_id, self.worker),
            (tickets.c.source, self.source),
        ):
            if value is not None:
                where.append(column == value)
        if self.overdue is not None:
            late = tickets.c.status.in_(active) & (tickets.c.deadline < now)
            where.append(late if self.overdue else ~late)
        if self.attention:
            reasons: dict[str, ColumnElement[bool]] = {
                "escalated": tickets.c.escalated.is_(True),
                "no_worker": tickets.c.worker_id.is_(None),
                "review": (tickets.c.status == "resolved") & tickets.c.review_at.is_not(None),
                "overdue": tickets.c.deadline < now,
            }
            where.append(tickets.c.status.in_(active))
            where.append(or_(*(reasons[a] for a in self.attention)))
        if self.opened_from is not None:
            where.append(tickets.c.opened_at >= self.opened_from)
        if self.opened_to is not None:
            where.append(tickets.c.opened_at < self.opened_to)
        if self.q:
            text = self.q.strip()
            if text.isdigit() and len(text) < 10:
                where.append(tickets.c.id == int(text))
            else:
                like = (
                    "%" + text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
                )
                where.append(
                    or_(
                        *(
                            c.like(like, escape="\\")
                            for c in (
                                tickets.c.grid_id,
                                tickets.c.category,
                                tickets.c.worker_id,
                                tickets.c.street_id,
                            )
                        )
                    )
                )
        return where


Filters = Annotated[TicketFilters, Depends()]
TicketId = Annotated[int, Path(ge=1, le=2**31 - 1, description="ticket id")]


def _get_visible(d: Dispatcher, user: User, ticket_id: int) -> RowMapping:
    with d.engine.connect() as conn:
        row = (
            conn.execute(select(tickets).where(tickets.c.id == ticket_id, user.tickets_visible()))
            .mappings()
            .first()
        )
    if row is None:
        log.warning(
            "denied: %s asked for ticket %s (missing or not theirs)",
            user.actor,
            ticket_id,
            extra={"ticket_id": ticket_id},
        )
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"ticket {ticket_id} not found")
    return row


@router.get("", response_model=TicketPage, responses=AUTH)
def list_tickets(
    d: DispatcherDep,
    user: CurrentUser,
    filters: Filters,
    sort: Annotated[str, Query(pattern="^(priority|-opened_at|opened_at|deadline)$")] = "priority",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> TicketPage:
    """Tickets you may see (a worker: their own; a supervisor: their streets'), filtered."""
    where = filters.where(user, d.clock.now())
    with d.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(tickets).where(*where)).scalar_one()
        rows = (
            conn.execute(
                select(tickets).where(*where).order_by(*SORTS[sort]).limit(limit).offset(offset)
            )
            .mappings()
            .all()
        )
    return TicketPage(
        items=[TicketPublic.from_row(r) for r in rows], total=total, limit=limit, offset=offset
    )


CSV_COLUMNS = (
    "id",
    "category",
    "priority",
    "status",
    "street_id",
    "grid_id",
    "worker_id",
    "source",
    "lat",
    "lon",
    "opened_at",
    "deadline",
    "assigned_at",
    "accepted_at",
    "arrived_at",
    "resolved_at",
    "closed_at",
    "close_reason",
    "reopen_count",
    "escalated",
)


def _csv_cell(value: Any) -> Any:
    """Neutralise text a spreadsheet would run as a formula."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses=AUTH
    | FORBIDDEN
    | {200: {"content": {"text/csv": {}}, "description": "CSV, UTF-8 with BOM (opens in Excel)"}},
)
def export_tickets(d: DispatcherDep, user: SupervisorUser, filters: Filters) -> StreamingResponse:
    """The filtered tickets as CSV (at most 50,000 rows), for supervisors and the admin."""
    where = filters.where(user, d.clock.now())
    with d.engine.connect() as conn:
        rows = conn.execute(
            select(*(tickets.c[c] for c in CSV_COLUMNS))
            .where(*where)
            .order_by(tickets.c.id)
            .limit(EXPORT_LIMIT)
        ).all()

    def lines() -> Iterator[str]:
        buf = io.StringIO()
        out = csv.writer(buf)
        buf.write("\ufeff")
        out.writerow(CSV_COLUMNS)
        for i, row in enumerate(rows):
            out.writerow([_csv_cell(v) for v in row])
            if i % 500 == 499:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    log.info("%s exported %d tickets", user.actor, len(rows))
    stamp = d.site.local_time(d.clock.now()).strftime("%Y%m%d-%H%M")
    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="tickets-{stamp}.csv"'},
    )


@router.get("/{ticket_id}", response_model=TicketDetail, responses=AUTH | NOT_FOUND)
def get_ticket(ticket_id: TicketId, d: DispatcherDep, user: CurrentUser) -> TicketDetail:
    """One ticket with its evidence images, camera verifications and audit trail."""
    row = _get_visible(d, user, ticket_id)
    with d.engine.connect() as conn:
        incident = (
            conn.execute(select(incidents).where(incidents.c.id == row["incident_id"]))
            .mappings()
            .one()
        )
        from_events = select(events.c.evidence_id).where(
            events.c.incident_id == row["incident_id"], events.c.evidence_id.is_not(None)
        )
        images = (
            conn.execute(
                select(evidence)
                .where(or_(evidence.c.ticket_id == ticket_id, evidence.c.id.in_(from_events)))
                .order_by(evidence.c.id)
            )
            .mappings()
            .all()
        )
        checks = (
            conn.execute(
                select(verifications)
                .where(verifications.c.ticket_id == ticket_id)
                .order_by(verifications.c.asked_at)
            )
            .mappings()
            .all()
        )
        trail = (
            conn.execute(select(audit).where(audit.c.ticket_id == ticket_id).order_by(audit.c.id))
            .mappings()
            .all()
        )
    base = TicketPublic.from_row(row).model_dump()
    return TicketDetail(
        **base,
        note=row["note"],
        incident_events=incident["events"],
        camera_ids=list(incident["camera_ids"] or []),
        evidence=[
            EvidencePublic(
                id=e["id"],
                kind=e["kind"],
                created_at=e["created_at"],
                bytes=e["bytes"],
                url=f"/evidence/{e['id']}",
            )
            for e in images
        ],
        verifications=[
            VerificationPublic(
                camera_id=v["camera_id"],
                asked_at=v["asked_at"],
                answered_at=v["answered_at"],
                outcome=v["outcome"],
                evidence_id=v["evidence_id"],
            )
            for v in checks
        ],
        audit=[
            AuditEntryPublic(
                at=a["at"],
                actor=a["actor"],
                transition=a["transition"],
                from_status=a["from_status"],
                to_status=a["to_status"],
                worker_id=a["worker_id"],
                reason=a["reason"],
                reason_code=a["reason_code"],
                reason_params=a["reason_params"],
            )
            for a in trail
        ],
    )


VERBS = {
    Transition.ACCEPTED: "accept",
    Transition.ARRIVED: "report arrival at",
    Transition.DECLINED: "decline",
    Transition.RESOLVED: "resolve",
    Transition.REJECTED: "reject",
    Transition.REASSIGNED: "reassign",
    Transition.ASSIGNED: "assign",
    Transition.VERIFIED: "close",
    Transition.REOPENED: "reopen",
}


def _refuse_role(user: User, allowed: tuple[str, ...], what: str, ticket_id: int) -> None:
    if user.role not in allowed:
        log.warning(
            "denied: %s tried to %s ticket %s",
            user.actor,
            what,
            ticket_id,
            extra={"ticket_id": ticket_id},
        )
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"your role may not {what} tickets")


def _lifecycle_errors(ticket_id: int, call: Any, *args: Any, **kwargs: Any) -> TicketPublic:
    try:
        row = call(*args, **kwargs)
    except NotYours as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"ticket {ticket_id} not found") from exc
    except InvalidTransition as exc:
        verb = VERBS.get(exc.transition, exc.transition.value)
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"cannot {verb} ticket {ticket_id}: it is {exc.current.value}",
        ) from exc
    except ticket_ops.StaleTicket as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, "ticket changed meanwhile; retry") from exc
    return TicketPublic.from_row(row)


def _worker_step(
    d: Dispatcher, user: User, ticket_id: int, transition: Transition, reason: str | None = None
) -> TicketPublic:
    _refuse_role(user, ("worker",), VERBS[transition], ticket_id)
    _get_visible(d, user, ticket_id)
    if transition is Transition.DECLINED:
        return _lifecycle_errors(
            ticket_id, d.decline, ticket_id, worker_id=user.username, reason=reason or ""
        )
    return _lifecycle_errors(
        ticket_id,
        d.act,
        ticket_id,
        transition,
        worker_id=user.username,
        actor=user.actor,
        reason=reason,
    )


WORKER_STEP: Responses = AUTH | FORBIDDEN | NOT_FOUND | CONFLICT


@router.post("/{ticket_id}/accept", response_model=TicketPublic, responses=WORKER_STEP)
def accept(ticket_id: TicketId, d: DispatcherDep, user: CurrentUser) -> TicketPublic:
    """The assigned worker takes the ticket."""
    return _worker_step(d, user, ticket_id, Transition.ACCEPTED)


@router.post("/{ticket_id}/arrived", response_model=TicketPublic, responses=WORKER_STEP)
def arrived(ticket_id: TicketId, d: DispatcherDep, user: CurrentUser) -> TicketPublic:
    """The worker is at the spot."""
    return _worker_step(d, user, ticket_id, Transition.ARRIVED)


@router.post("/{ticket_id}/decline", response_model=TicketPublic, responses=WORKER_STEP)
def decline(
    ticket_id: TicketId, body: ReasonRequest, d: DispatcherDep, user: CurrentUser
) -> TicketPublic:
    """The worker cannot take it (reason required); the dispatcher gives it to someone else."""
    return _worker_step(d, user, ticket_id, Transition.DECLINED, body.reason)


@router.post(
    "/{ticket_id}/resolve",
    response_model=TicketPublic,
    responses=WORKER_STEP
    | {
        413: {"model": ErrorPublic, "description": "photo too large"},
    },
)
async def resolve(
    ticket_id: TicketId,
    d: DispatcherDep,
    user: CurrentUser,
    photo: Annotated[
        UploadFile, File(description="after-photo of the fixed spot (JPEG/PNG/WEBP), required")
    ],
    note: Annotated[str | None, Form(max_length=500)] = None,
) -> TicketPublic:
    """The worker fixed it: an after-photo (required: without one the request is refused,
    422) and a note; the cameras are asked to confirm."""
    data = await photo.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        log.warning("refused: %s sent a photo over %s bytes", user.actor, MAX_IMAGE_BYTES)
        raise HTTPException(413, f"photo larger than {MAX_IMAGE_BYTES} bytes")
    _refuse_role(user, ("worker",), "resolve", ticket_id)
    _get_visible(d, user, ticket_id)
    try:
        return _lifecycle_errors(
            ticket_id, d.resolve, ticket_id, worker_id=user.username, photo=data, note=note
        )
    except BadImage as exc:
        raise invalid(("body", "photo"), str(exc)) from exc


@router.post("/{ticket_id}/reject", response_model=TicketPublic, responses=WORKER_STEP)
def reject(
    ticket_id: TicketId, body: ReasonRequest, d: DispatcherDep, user: CurrentUser
) -> TicketPublic:
    """A false alarm, said by the assigned worker or the street's supervisor (reason required).
    The ticket closes as rejected; its snapshots are kept as hard negatives for retraining."""
    _get_visible(d, user, ticket_id)
    worker = user.username if user.role == "worker" else None
    return _lifecycle_errors(
        ticket_id, d.reject, ticket_id, actor=user.actor, worker_id=worker, reason=body.reason
    )


@router.post(
    "/{ticket_id}/reassign",
    response_model=TicketPublic,
    responses=AUTH | FORBIDDEN | NOT_FOUND | CONFLICT,
)
def reassign(
    ticket_id: TicketId, body: ReassignRequest, d: DispatcherDep, user: SupervisorUser
) -> TicketPublic:
    """A supervisor gives an unfinished ticket to a worker of their streets (or lets the
    dispatcher choose another one)."""
    _get_visible(d, user, ticket_id)
    if body.worker_id is not None:
        worker = next((w for w in d.site.workers if w.id == body.worker_id), None)
        if worker is None or not user.oversees_grid(worker.grid):
            log.warning(
                "denied: %s tried to give ticket %s to %s",
                user.actor,
                ticket_id,
                body.worker_id,
                extra={"ticket_id": ticket_id},
            )
            raise invalid(("body", "worker_id"), f"no worker {body.worker_id!r} in your streets")
    return _lifecycle_errors(
        ticket_id,
        d.reassign,
        ticket_id,
        actor=user.actor,
        to_worker=body.worker_id,
        reason=body.reason,
    )


@router.post(
    "/{ticket_id}/review",
    response_model=TicketPublic,
    responses=AUTH | FORBIDDEN | NOT_FOUND | CONFLICT,
)
def review(
    ticket_id: TicketId, body: ReviewRequest, d: DispatcherDep, user: SupervisorUser
) -> TicketPublic:
    """A supervisor judges a resolved ticket the cameras could not confirm: close it, or
    reopen it for its worker."""
    _get_visible(d, user, ticket_id)
    transition = Transition.VERIFIED if body.decision == "close" else Transition.REOPENED
    return _lifecycle_errors(
        ticket_id,
        d.act,
        ticket_id,
        transition,
        worker_id=None,
        actor=user.actor,
        reason=body.reason,
    )
