"""Grid workers: the supervisor's table (open, closed today, median time to close) and a
worker's own position updates."""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlalchemy import func, select

from config.site import Worker
from dispatcher import accounts, metrics
from dispatcher.api.deps import CurrentUser, DispatcherDep, SupervisorUser, User, WorkerUser
from dispatcher.api.models import (
    ErrorPublic,
    Identifier,
    PositionPublic,
    PositionUpdate,
    Responses,
    WorkerPage,
    WorkerPublic,
)
from dispatcher.assign import on_duty
from dispatcher.lifecycle import ACTIVE, Status
from dispatcher.service import Dispatcher
from dispatcher.store.schema import tickets, users

log = logging.getLogger(__name__)
router = APIRouter(prefix="/workers", tags=["workers"])
AUTH: Responses = {401: {"model": ErrorPublic, "description": "not logged in"}}
FORBIDDEN: Responses = {403: {"model": ErrorPublic, "description": "your role may not do this"}}


def _in_scope(user: User, worker: Worker) -> bool:
    return user.username == worker.id or user.oversees_grid(worker.grid)


def _rows(d: Dispatcher, workers: list[Worker]) -> list[WorkerPublic]:
    now = d.clock.now()
    local = d.site.local_time(now)
    midnight = datetime.combine(local.date(), time(0), tzinfo=local.tzinfo)
    ids = [w.id for w in workers]
    with d.engine.connect() as conn:
        open_: dict[str, int] = dict(
            conn.execute(
                select(tickets.c.worker_id, func.count())
                .where(
                    tickets.c.worker_id.in_(ids),
                    tickets.c.status.in_([s.value for s in ACTIVE if s is not Status.OPEN]),
                )
                .group_by(tickets.c.worker_id)
            ).all()
        )
        closed: dict[str, int] = dict(
            conn.execute(
                select(tickets.c.worker_id, func.count())
                .where(
                    tickets.c.worker_id.in_(ids),
                    tickets.c.status == Status.CLOSED.value,
                    tickets.c.closed_at >= midnight,
                )
                .group_by(tickets.c.worker_id)
            ).all()
        )
        where = {
            r.username: r
            for r in conn.execute(
                select(users.c.username, users.c.lat, users.c.lon, users.c.position_at).where(
                    users.c.username.in_(ids)
                )
            ).all()
        }
    medians: dict[str, float | None] = {}
    try:
        for k in metrics.kpis(d.influx, metrics.Period.last(timedelta(days=30), now), "worker"):
            medians[k.key] = k.median_close_s
    except metrics.InfluxUnavailable as exc:
        log.warning("worker medians unavailable: %s", exc)
    out = []
    for w in workers:
        pos = where.get(w.id)
        out.append(
            WorkerPublic(
                id=w.id,
                name=w.name,
                grid_id=w.grid,
                phone=w.phone,
                on_duty=on_duty(w, now, d.site),
                open_tickets=int(open_.get(w.id, 0)),
                closed_today=int(closed.get(w.id, 0)),
                median_close_s=medians.get(w.id),
                lat=pos.lat if pos else None,
                lon=pos.lon if pos else None,
                position_at=pos.position_at if pos else None,
            )
        )
    return out


@router.get("", response_model=WorkerPage, responses=AUTH | FORBIDDEN)
def list_workers(
    d: DispatcherDep,
    user: SupervisorUser,
    grid: Annotated[Identifier | None, Query()] = None,
    on_duty_: Annotated[bool | None, Query(alias="on_duty")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> WorkerPage:
    """The workers of your streets with their load and pace."""
    now = d.clock.now()
    chosen = [
        w
        for w in d.site.workers
        if user.oversees_grid(w.grid)
        and (grid is None or w.grid == grid)
        and (on_duty_ is None or on_duty(w, now, d.site) == on_duty_)
    ]
    page = chosen[offset : offset + limit]
    return WorkerPage(items=_rows(d, page), total=len(chosen), limit=limit, offset=offset)


@router.get(
    "/{worker_id}",
    response_model=WorkerPublic,
    responses=AUTH | {404: {"model": ErrorPublic, "description": "no such worker"}},
)
def get_worker(
    worker_id: Annotated[str, Path(max_length=64)], d: DispatcherDep, user: CurrentUser
) -> WorkerPublic:
    """One worker: yourself, or one of your streets' workers."""
    worker = next((w for w in d.site.workers if w.id == worker_id), None)
    if worker is None or not _in_scope(user, worker):
        if worker is not None:
            log.warning("denied: %s asked for worker %s", user.actor, worker_id)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"worker {worker_id!r} not found")
    return _rows(d, [worker])[0]


@router.put("/me/position", response_model=PositionPublic, responses=AUTH | FORBIDDEN)
def update_position(body: PositionUpdate, d: DispatcherDep, user: WorkerUser) -> PositionPublic:
    """The phone's last known position; assignment prefers the nearest on-duty worker."""
    at = d.clock.now()
    with d.engine.begin() as conn:
        accounts.set_position(conn, user.username, body.lat, body.lon, at)
    return PositionPublic(lat=body.lat, lon=body.lon, position_at=at)
