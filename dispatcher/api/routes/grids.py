"""Grid cells: their polygons (for the SVG maps) and, for those who oversee them, the backlog."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from sqlalchemy import case, func, select

from config.site import GridCell
from dispatcher.api.deps import CurrentUser, DispatcherDep, User
from dispatcher.api.models import ErrorPublic, GridPublic, Responses
from dispatcher.lifecycle import ACTIVE
from dispatcher.service import Dispatcher
from dispatcher.store.schema import tickets

log = logging.getLogger(__name__)
router = APIRouter(prefix="/grids", tags=["grids"])
AUTH: Responses = {401: {"model": ErrorPublic, "description": "not logged in"}}


def _shown(user: User, cell: GridCell) -> bool:
    """Workers see the whole map (they cover neighbours); supervisors their streets'."""
    return user.role in ("worker", "admin") or user.oversees_grid(cell.id)


def _backlog(d: Dispatcher) -> dict[str, tuple[int, int]]:
    now = d.clock.now()
    with d.engine.connect() as conn:
        rows = conn.execute(
            select(
                tickets.c.grid_id,
                func.count(),
                func.sum(case((tickets.c.deadline < now, 1), else_=0)),
            )
            .where(tickets.c.status.in_([s.value for s in ACTIVE]))
            .group_by(tickets.c.grid_id)
        ).all()
    return {str(g): (int(n), int(late or 0)) for g, n, late in rows}


def _public(cell: GridCell, user: User, backlog: dict[str, tuple[int, int]]) -> GridPublic:
    counts = backlog.get(cell.id, (0, 0)) if user.oversees_grid(cell.id) else (None, None)
    return GridPublic(
        id=cell.id,
        name=cell.name,
        name_en=cell.name_en,
        street_id=cell.street,
        neighbours=list(cell.neighbours),
        polygon=[(float(x), float(y)) for x, y in cell.polygon.exterior.coords],
        backlog=counts[0],
        overdue=counts[1],
    )


@router.get("", response_model=list[GridPublic], responses=AUTH)
def list_grids(d: DispatcherDep, user: CurrentUser) -> list[GridPublic]:
    """The grid cells you may see, with their backlog where you oversee them."""
    backlog = _backlog(d)
    return [_public(c, user, backlog) for c in d.site.grids if _shown(user, c)]


@router.get(
    "/{grid_id}",
    response_model=GridPublic,
    responses=AUTH | {404: {"model": ErrorPublic, "description": "no such grid cell"}},
)
def get_grid(
    grid_id: Annotated[str, Path(max_length=64)], d: DispatcherDep, user: CurrentUser
) -> GridPublic:
    cell = next((c for c in d.site.grids if c.id == grid_id), None)
    if cell is None or not _shown(user, cell):
        if cell is not None:
            log.warning("denied: %s asked for grid %s", user.actor, grid_id)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"grid cell {grid_id!r} not found")
    return _public(cell, user, _backlog(d))
