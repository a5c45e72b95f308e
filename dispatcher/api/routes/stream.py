"""Live pushes to the web pages as server-sent events.

A worker's stream carries that worker's ticket pushes (``ticket``). A supervisor's stream
carries the supervisor alerts (``alert``: a safety hazard, an SLA escalation, no worker on duty,
a ticket waiting for review) and the ticket pushes of the grid cells of their streets, so the
dashboard can refresh as things happen; the admin's carries all of them.

The browser reads the stream with ``fetch`` (so the token travels in the Authorization header,
not in the URL where logs would keep it). Each dispatcher process receives every worker's and
supervisor's MQTT pushes (see ``PushHub``), so any process can serve anyone. The stream ends
when the token expires or is revoked; the page then logs in again. After any reconnect the
pages re-read what they show, so nothing pushed while they were away is missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from dispatcher.accounts import find_user, is_disabled
from dispatcher.api.deps import CurrentUser, DispatcherDep, User
from dispatcher.api.models import ErrorPublic
from dispatcher.push import EVERY_ALERT, EVERY_TICKET, worker_channel
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
    return row is not None and row["token_version"] == version and not is_disabled(row)


def concerns(user: User, event: str, payload: bytes) -> bool:
    """Whether a push on a shared channel is for this supervisor (their streets' grid cells,
    or an alert addressed to them) or the admin (everything)."""
    if user.role == "admin":
        return True
    try:
        data = json.loads(payload)
    except ValueError:
        log.warning("unreadable %s push dropped from %s's stream", event, user.username)
        return False
    if not isinstance(data, dict):
        log.warning("%s push that is not an object dropped from %s's stream", event, user.username)
        return False
    grid = data.get("grid_id")
    if user.oversees_grid(grid if isinstance(grid, str) else None):
        return True
    return event == "alert" and data.get("supervisor_id") == user.username


async def live_events(
    request: Request, d: DispatcherDep, user: User, version: int, expires_ts: float
) -> AsyncIterator[str]:
    worker = user.role == "worker"
    channels = (worker_channel(user.username),) if worker else (EVERY_TICKET, EVERY_ALERT)
    q = d.hub.subscribe(*channels)
    context = {"worker_id": user.username} if worker else {}
    log.info("live stream opened for %s", user.actor, extra=context)
    try:
        yield "retry: 3000\n\n"
        hello = {"username": user.username, "role": user.role}
        yield f"event: hello\ndata: {json.dumps(hello)}\n\n"
        idle = 0.0
        while True:
            try:
                event, payload = q.get_nowait()
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
            if not worker and not concerns(user, event, payload):
                continue
            text = payload.decode("utf-8", errors="replace").replace("\n", " ")
            yield f"event: {event}\ndata: {text}\n\n"
    finally:
        d.hub.unsubscribe(q)
        log.info("live stream closed for %s", user.actor, extra=context)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "events: hello; ticket (a gw.ticket push as JSON: a worker's own, a "
            "supervisor's streets'); alert (a gw.alert as JSON, supervisors and the admin); "
            "logout",
        },
        401: {"model": ErrorPublic, "description": "not logged in"},
    },
)
async def stream(request: Request, d: DispatcherDep, user: CurrentUser) -> StreamingResponse:
    """Server-sent events with the pushes for this user, as they happen."""
    claims = request.state.token_claims
    return StreamingResponse(
        live_events(request, d, user, claims.version, claims.expires.timestamp()),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
