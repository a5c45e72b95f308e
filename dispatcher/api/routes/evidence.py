"""Evidence images (camera snapshots, after-photos, verification frames) for those who may
see their ticket."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from dispatcher.api.deps import CurrentUser, DispatcherDep
from dispatcher.api.models import ErrorPublic
from dispatcher.store.schema import events, evidence, tickets

log = logging.getLogger(__name__)
router = APIRouter(prefix="/evidence", tags=["evidence"])
MEDIA_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


@router.get(
    "/{evidence_id}",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}},
            "description": "the image",
        },
        401: {"model": ErrorPublic, "description": "not logged in"},
        404: {"model": ErrorPublic, "description": "no such image, or not yours to see"},
    },
)
def get_evidence(
    evidence_id: Annotated[int, Path(ge=1, le=2**31 - 1)], d: DispatcherDep, user: CurrentUser
) -> FileResponse:
    """The image bytes. Allowed when you may see the ticket it belongs to (directly, or
    through the events of the ticket's incident)."""
    with d.engine.connect() as conn:
        row = conn.execute(select(evidence).where(evidence.c.id == evidence_id)).mappings().first()
        allowed = False
        if row is not None:
            via_incident = select(events.c.incident_id).where(events.c.evidence_id == evidence_id)
            allowed = (
                conn.execute(
                    select(tickets.c.id)
                    .where(
                        user.tickets_visible(),
                        (tickets.c.id == row["ticket_id"])
                        | tickets.c.incident_id.in_(via_incident),
                    )
                    .limit(1)
                ).first()
                is not None
            )
    if row is None or not allowed:
        log.warning(
            "denied: %s asked for evidence %s (missing or not theirs)", user.actor, evidence_id
        )
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image {evidence_id} not found")
    try:
        path = d.evidence.open(row["path"])
    except FileNotFoundError as exc:
        log.error("evidence %s row points at a missing file %s", evidence_id, row["path"])
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image {evidence_id} not found") from exc
    return FileResponse(
        path,
        media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
