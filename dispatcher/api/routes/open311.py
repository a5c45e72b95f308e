"""Open311 GeoReport v2 (JSON): citizens' apps list services, post requests and follow them.

Errors follow the standard's shape: an HTTP status with ``[{"code": …, "description": …}]``.
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from dispatcher import open311
from dispatcher.api.deps import DispatcherDep
from dispatcher.api.models import Open311ErrorPublic, Responses
from dispatcher.open311 import (
    Open311Error,
    Service,
    ServiceRequest,
    ServiceRequestCreate,
    ServiceRequestCreated,
)
from dispatcher.service import Dispatcher

log = logging.getLogger(__name__)
router = APIRouter(prefix="/open311/v2", tags=["open311"])
ERRORS: Responses = {
    400: {"model": list[Open311ErrorPublic], "description": "a missing or invalid field"},
    403: {"model": list[Open311ErrorPublic], "description": "missing or wrong api_key"},
    404: {"model": list[Open311ErrorPublic], "description": "no such service_code or request"},
}
_REQUEST_FIELDS = ServiceRequestCreate.model_json_schema()
REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "form-encoded as GeoReport v2 has it, or the same fields as JSON",
        "content": {
            "application/x-www-form-urlencoded": {"schema": _REQUEST_FIELDS},
            "application/json": {"schema": _REQUEST_FIELDS},
        },
    }
}
DEFAULT_WINDOW = timedelta(days=90)


def _error(exc: Open311Error) -> JSONResponse:
    return JSONResponse(
        status_code=exc.code, content=[{"code": exc.code, "description": exc.description}]
    )


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
        for e in exc.errors(include_url=False)[:5]
    )


@router.get("/services.json", response_model=list[Service])
def list_services(d: DispatcherDep) -> list[Service]:
    """The kinds of problem a citizen may report here."""
    return open311.services(d.site)


def _create(d: Dispatcher, data: dict[str, Any]) -> list[ServiceRequestCreated]:
    try:
        body = ServiceRequestCreate.model_validate(data)
    except ValidationError as exc:
        raise Open311Error(400, _describe(exc)) from exc
    key = d.settings.open311_api_key
    if key is not None and not hmac.compare_digest(
        (body.api_key or "").encode(), key.get_secret_value().encode()
    ):
        log.warning("denied: Open311 request with a missing or wrong api_key")
        raise Open311Error(403, "missing or wrong api_key")
    kind = open311.category_for(d.site, body.service_code)
    if d.intake.grids.locate(body.lat, body.long) is None:
        raise Open311Error(400, "lat/long is outside the area this office serves")
    report_id, _ = d.report_citizen(kind=kind, lat=body.lat, lon=body.long, details=body.details())
    return [
        ServiceRequestCreated(
            service_request_id=str(report_id), service_notice=open311.NOTES["open"]
        )
    ]


async def _fields(request: Request) -> dict[str, Any]:
    """The posted fields, from JSON or a form (the form's files, if any, are ignored)."""
    if request.headers.get("content-type", "").startswith("application/json"):
        data = await request.json()
        if not isinstance(data, dict):
            raise Open311Error(400, "the JSON body must be an object")
        return data
    try:
        form = await request.form()
    except HTTPException as exc:
        raise Open311Error(400, f"unreadable form: {exc.detail}") from exc
    return {k: v for k, v in form.items() if isinstance(v, str)}


@router.post(
    "/requests.json",
    response_model=list[ServiceRequestCreated],
    status_code=201,
    responses=ERRORS,
    openapi_extra=REQUEST_BODY,
)
async def create_request(request: Request, d: DispatcherDep) -> Any:
    """Post a report (form-encoded as the standard says, or JSON); it joins the same
    incident as a camera's sighting of the same problem, or opens a ticket."""
    try:
        data = await _fields(request)
        return await run_in_threadpool(_create, d, data)
    except Open311Error as exc:
        return _error(exc)
    except ValueError as exc:
        return _error(Open311Error(400, f"unreadable request body: {exc}"))


def _when(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Open311Error(400, f"{name}: not an ISO 8601 date-time: {value!r}") from exc
    if at.tzinfo is None:
        raise Open311Error(400, f"{name}: needs a time zone (e.g. Z or +08:00)")
    return at


@router.get("/requests.json", response_model=list[ServiceRequest], responses=ERRORS)
def list_requests(
    d: DispatcherDep,
    service_request_id: Annotated[
        str | None, Query(max_length=2000, description="ids, comma-separated")
    ] = None,
    service_code: Annotated[
        str | None, Query(max_length=500, description="codes, comma-separated")
    ] = None,
    start_date: Annotated[str | None, Query(max_length=40)] = None,
    end_date: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[Literal["open", "closed"] | None, Query()] = None,
) -> Any:
    """Reports and their status; without ids or dates, those of the last 90 days."""
    try:
        ids = None
        if service_request_id:
            try:
                ids = [int(i) for i in service_request_id.split(",") if i.strip()]
            except ValueError as exc:
                raise Open311Error(
                    400, "service_request_id: a comma-separated list of ids"
                ) from exc
        start, end = _when("start_date", start_date), _when("end_date", end_date)
        if ids is None and start is None:
            start = (end or d.clock.now()) - DEFAULT_WINDOW
        with d.engine.connect() as conn:
            return open311.find_requests(
                conn,
                d.site,
                ids=ids,
                service_codes=service_code.split(",") if service_code else None,
                start=start,
                end=end,
                status=status,
            )
    except Open311Error as exc:
        return _error(exc)


@router.get("/requests/{request_id}.json", response_model=list[ServiceRequest], responses=ERRORS)
def get_request(request_id: str, d: DispatcherDep) -> Any:
    """One report (as a list of one, as the standard has it)."""
    if not request_id.isdigit():
        return _error(Open311Error(404, f"request {request_id!r} not found"))
    with d.engine.connect() as conn:
        found = open311.find_requests(conn, d.site, ids=[int(request_id)])
    if not found:
        return _error(Open311Error(404, f"request {request_id!r} not found"))
    return found
