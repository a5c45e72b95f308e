"""Tickets: list and read what you may see; a worker acts only on their own tickets."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status
from sqlalchemy import ColumnElement, false, func, select, true

from dispatcher import tickets as ticket_ops
from dispatcher.api.deps import CurrentUser, DispatcherDep, User
from dispatcher.api.models import ReasonRequest, TicketPage, TicketPublic
from dispatcher.evidence import MAX_IMAGE_BYTES, BadImage
from dispatcher.lifecycle import InvalidTransition, Transition
from dispatcher.service import Dispatcher, NotYours
from dispatcher.store.schema import tickets

log = logging.getLogger(__name__)
router = APIRouter(prefix="/tickets", tags=["tickets"])

NOT_FOUND = {404: {"description": "no such ticket, or not yours to see"}}
CONFLICT = {409: {"description": "the lifecycle does not allow this now"}}


def visible(user: User, d: Dispatcher) -> ColumnElement[bool]:
    """The tickets a user may see: a worker their own, a supervisor their streets', admin all."""
    if user.role == "admin":
        return true()
    if user.role == "worker":
        return tickets.c.worker_id == user.username
    streets = next((s.streets for s in d.site.supervisors if s.id == user.username), ())
    return tickets.c.street_id.in_(streets) if streets else false()


def _get_visible(d: Dispatcher, user: User, ticket_id: int) -> dict[str, Any]:
    with d.engine.connect() as conn:
        row = conn.execute(
            select(tickets).where(tickets.c.id == ticket_id, visible(user, d))
        ).mappings().first()
    if row is None:
        log.warning("denied: %s asked for ticket %s", user.actor, ticket_id,
                    extra={"ticket_id": ticket_id})
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"ticket {ticket_id} not found")
    return dict(row)


@router.get("", response_model=TicketPage)
def list_tickets(
    d: DispatcherDep,
    user: CurrentUser,
    status_: Annotated[list[str] | None, Query(alias="status", max_length=10)] = None,
    grid: Annotated[str | None, Query(max_length=64)] = None,
    category: Annotated[str | None, Query(max_length=48)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> TicketPage:
    where = [visible(user, d)]
    if status_:
        where.append(tickets.c.status.in_(status_))
    if grid:
        where.append(tickets.c.grid_id == grid)
    if category:
        where.append(tickets.c.category == category)
    with d.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(tickets).where(*where)).scalar_one()
        rows = conn.execute(
            select(tickets).where(*where).order_by(tickets.c.priority, tickets.c.id.desc())
            .limit(limit).offset(offset)
        ).mappings().all()
    return TicketPage(
        items=[TicketPublic.from_row(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{ticket_id}", response_model=TicketPublic, responses=NOT_FOUND)
def get_ticket(ticket_id: int, d: DispatcherDep, user: CurrentUser) -> TicketPublic:
    return TicketPublic.from_row(_get_visible(d, user, ticket_id))


def _worker_step(
    d: Dispatcher, user: User, ticket_id: int, transition: Transition, reason: str | None = None
) -> TicketPublic:
    if user.role != "worker":
        log.warning("denied: %s tried to %s ticket %s", user.actor, transition.value, ticket_id)
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the assigned worker can do this")
    _get_visible(d, user, ticket_id)
    try:
        if transition is Transition.DECLINED:
            row = d.decline(ticket_id, worker_id=user.username, reason=reason or "")
        else:
            row = d.act(ticket_id, transition, worker_id=user.username, actor=user.actor,
                        reason=reason)
    except NotYours as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except InvalidTransition as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except ticket_ops.StaleTicket as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, "ticket changed meanwhile; retry") from exc
    return TicketPublic.from_row(row)


@router.post("/{ticket_id}/accept", response_model=TicketPublic, responses=NOT_FOUND | CONFLICT)
def accept(ticket_id: int, d: DispatcherDep, user: CurrentUser) -> TicketPublic:
    return _worker_step(d, user, ticket_id, Transition.ACCEPTED)


@router.post("/{ticket_id}/arrived", response_model=TicketPublic, responses=NOT_FOUND | CONFLICT)
def arrived(ticket_id: int, d: DispatcherDep, user: CurrentUser) -> TicketPublic:
    return _worker_step(d, user, ticket_id, Transition.ARRIVED)


@router.post("/{ticket_id}/decline", response_model=TicketPublic, responses=NOT_FOUND | CONFLICT)
def decline(
    ticket_id: int, body: ReasonRequest, d: DispatcherDep, user: CurrentUser
) -> TicketPublic:
    return _worker_step(d, user, ticket_id, Transition.DECLINED, body.reason)


@router.post(
    "/{ticket_id}/resolve",
    response_model=TicketPublic,
    responses=NOT_FOUND | CONFLICT | {413: {"description": "photo too large"},
                                      422: {"description": "not an image"}},
)
async def resolve(
    ticket_id: int,
    d: DispatcherDep,
    user: CurrentUser,
    photo: Annotated[UploadFile | None, File(description="after-photo (JPEG/PNG/WEBP)")] = None,
    note: Annotated[str | None, Form(max_length=500)] = None,
) -> TicketPublic:
    data = None
    if photo is not None:
        data = await photo.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                                f"photo larger than {MAX_IMAGE_BYTES} bytes")
    if user.role != "worker":
        log.warning("denied: %s tried to resolve ticket %s", user.actor, ticket_id)
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the assigned worker can do this")
    _get_visible(d, user, ticket_id)
    try:
        row = d.resolve(ticket_id, worker_id=user.username, photo=data or None, note=note)
    except BadImage as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from exc
    except NotYours as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except InvalidTransition as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return TicketPublic.from_row(row)
