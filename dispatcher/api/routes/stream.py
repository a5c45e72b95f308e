"""Live ticket pushes to the worker app as server-sent events.

The browser reads the stream with ``fetch`` (so the token travels in the Authorization header,
not in the URL where logs would keep it). Each dispatcher process receives every worker's MQTT
pushes (see ``PushHub``), so any process can serve any worker. The stream ends when the token
expires or is revoked; the app then logs in again. After any reconnect the app re-reads its
ticket list, so nothing pushed while it was away is missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from dispatcher.accounts import find_user
from dispatcher.api.deps import DispatcherDep, User, WorkerUser
from dispatcher.api.models import ErrorPublic
from dispatcher.service import Dispatcher

log = logging.getLogger(__name__)
router = APIRouter(tags=["stream"])
POLL_S = 0.2
KEEPALIVE_S = 15.0


def _still_valid(d: Dispatcher, user: User, version: int, expires_ts: float) -> bool:
    if d.clock.now().timestamp() >= expires_ts:
        return False
    with d.engine.connect() as conn:
        row = find_user(conn, user.username)
    return row is not None and row["token_version"] == version


async def ticket_events(
    request: Request, d: DispatcherDep, user: User, version: int, expires_ts: float
) -> AsyncIterator[str]:
    q = d.hub.subscribe(user.username)
    log.info("live stream opened for %s", user.username, extra={"worker_id": user.username})
    try:
        yield "retry: 3000\n\n"
        yield f"event: hello\ndata: {json.dumps({'worker_id': user.username})}\n\n"
        idle = 0.0
        while True:
            try:
                payload = q.get_nowait()
            except queue.Empty:
                if await request.is_disconnected():
                    return
                await asyncio.sleep(POLL_S)
                idle += POLL_S
                if idle >= KEEPALIVE_S:
                    idle = 0.0
                    if not await asyncio.to_thread(_still_valid, d, user, version, expires_ts):
                        yield "event: logout\ndata: {}\n\n"
                        return
                    yield ": keepalive\n\n"
                continue
            idle = 0.0
            text = payload.decode("utf-8", errors="replace").replace("\n", " ")
            yield f"event: ticket\ndata: {text}\n\n"
    finally:
        d.hub.unsubscribe(user.username, q)
        log.info("live stream closed for %s", user.username, extra={"worker_id": user.username})


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "events: hello, ticket (a gw.ticket push as JSON), logout",
        },
        401: {"model": ErrorPublic, "description": "not logged in"},
        403: {"model": ErrorPublic, "description": "only workers have a live stream"},
    },
)
async def stream(request: Request, d: DispatcherDep, user: WorkerUser) -> StreamingResponse:
    """Server-sent events with the worker's ticket pushes, as they happen."""
    claims = request.state.token_claims
    return StreamingResponse(
        ticket_events(request, d, user, claims.version, claims.expires.timestamp()),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
