"""Incidents: one real-world problem, the events that saw it, and its ticket."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlalchemy import ColumnElement, false, func, select, true

from dispatcher.api.deps import CurrentUser, DispatcherDep, User
from dispatcher.api.models import (
    ErrorPublic,
    Identifier,
    IncidentPage,
    IncidentPublic,
    Responses,
    Source,
)
from dispatcher.store.schema import incidents, tickets

log = logging.getLogger(__name__)
router = APIRouter(prefix="/incidents", tags=["incidents"])
AUTH: Responses = {401: {"model": ErrorPublic, "description": "not logged in"}}


def _visible(user: User) -> ColumnElement[bool]:
    if user.role == "admin":
        return true()
    if user.role == "worker":
        return incidents.c.id.in_(
            select(tickets.c.incident_id).where(tickets.c.worker_id == user.username)
        )
    return incidents.c.street_id.in_(sorted(user.streets)) if user.streets else false()


@router.get("", response_model=IncidentPage, responses=AUTH)
def list_incidents(
    d: DispatcherDep,
    user: CurrentUser,
    status_: Annotated[Literal["open", "closed"] | None, Query(alias="status")] = None,
    kind: Annotated[Identifier | None, Query()] = None,
    grid: Annotated[Identifier | None, Query()] = None,
    source: Annotated[Source | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> IncidentPage:
    """Incidents you may see, newest first."""
    where = [_visible(user)]
    for column, value in (
        (incidents.c.status, status_),
        (incidents.c.kind, kind),
        (incidents.c.grid_id, grid),
        (incidents.c.source, source),
    ):
        if value is not None:
            where.append(column == value)
    with d.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(incidents).where(*where)).scalar_one()
        rows = (
            conn.execute(
                select(incidents, tickets.c.id.label("ticket_id"))
                .outerjoin(tickets, tickets.c.incident_id == incidents.c.id)
                .where(*where)
                .order_by(incidents.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
            .mappings()
            .all()
        )
    return IncidentPage(
        items=[IncidentPublic.from_row(r, r["ticket_id"]) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/{incident_id}",
    response_model=IncidentPublic,
    responses=AUTH | {404: {"model": ErrorPublic, "description": "no such incident"}},
)
def get_incident(
    incident_id: Annotated[int, Path(ge=1, le=2**31 - 1)], d: DispatcherDep, user: CurrentUser
) -> IncidentPublic:
    with d.engine.connect() as conn:
        row = (
            conn.execute(
                select(incidents, tickets.c.id.label("ticket_id"))
                .outerjoin(tickets, tickets.c.incident_id == incidents.c.id)
                .where(incidents.c.id == incident_id, _visible(user))
            )
            .mappings()
            .first()
        )
    if row is None:
        log.warning(
            "denied: %s asked for incident %s (missing or not theirs)", user.actor, incident_id
        )
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"incident {incident_id} not found")
    return IncidentPublic.from_row(row, row["ticket_id"])
