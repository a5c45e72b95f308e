"""Request body size limits: an over-sized body is refused with 413 before it is read whole.
The OpenAPI document lists, on every operation that takes a body, that 413 and the 400 that
FastAPI gives a body it cannot read (a malformed multipart form, for one)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatcher.api.models import ErrorPublic

log = logging.getLogger(__name__)


def takes_a_file(route: object) -> bool:
    """Whether ``route`` is an API operation with a file upload (a multipart ``File`` field)."""
    return isinstance(route, APIRoute) and any(
        isinstance(p.field_info, params.File) for p in route.dependant.body_params
    )


@dataclass(frozen=True)
class BodyLimits:
    """The largest request body, in bytes: ``upload`` for operations that take a file,
    ``default`` for everything else."""

    default: int
    upload: int

    @property
    def largest(self) -> int:
        return max(self.default, self.upload)

    def for_route(self, route: object) -> int:
        return self.upload if takes_a_file(route) else self.default


class BodyTooLarge(Exception):
    """Raised to the application by ``receive`` when the body is over its limit."""


class BodySizeLimit:
    """Answer 413 when a request's body is over its limit, without reading it whole.

    A ``Content-Length`` over every limit is refused before the application runs. Otherwise the
    limit is that of the operation the request was routed to, known when the application first
    asks for the body: a ``Content-Length`` over it, or streamed (chunked) bytes that pass it,
    make that ``receive`` raise ``BodyTooLarge``; whatever the application answers to that is
    dropped, and the answer is this 413. A plain ASGI middleware, so responses stream untouched.
    """

    def __init__(self, app: ASGIApp, *, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limits.largest:
            detail = f"request body too large: no request may be over {self.limits.largest} bytes"
            await _refuse(scope, receive, send, detail, f"Content-Length {declared}")
            return
        limit: int | None = None
        received = 0
        refusal: str | None = None
        answered = False

        async def counted_receive() -> Message:
            nonlocal limit, received, refusal
            if limit is None:
                limit = self.limits.for_route(scope.get("route"))
                if declared is not None and declared > limit:
                    refusal = f"Content-Length {declared}"
                    raise BodyTooLarge(f"request body over {limit} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refusal = f"cut off after {received} bytes"
                    raise BodyTooLarge(f"request body over {limit} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if refusal is not None and not answered:
                return
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            if answered:
                raise
        if refusal is not None and not answered:
            detail = f"request body too large: the limit for this request is {limit} bytes"
            await _refuse(scope, receive, send, detail, refusal)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


async def _refuse(scope: Scope, receive: Receive, send: Send, detail: str, seen: str) -> None:
    client = scope.get("client")
    log.warning(
        "refused: %s %s from %s: %s (%s)",
        scope["method"],
        scope["path"],
        client[0] if client else "unknown",
        detail,
        seen,
    )
    response = JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})
    await response(scope, receive, send)


ERROR_SCHEMA = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}


def document_body_answers(openapi: dict[str, Any], limits: BodyLimits) -> None:
    """Add the 400 (unreadable body) and 413 (body over its limit) answers to every operation
    of ``openapi`` that takes a request body. An operation that declares either code itself
    keeps its own answer; the body limit is added to the description of its 413."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorPublic", ErrorPublic.model_json_schema())
    too_large = (
        f"the request body is over its limit: {limits.default} bytes, or {limits.upload} "
        "bytes for an operation that takes a file"
    )
    for item in openapi.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "requestBody" not in operation:
                continue
            answers = operation.setdefault("responses", {})
            answers.setdefault(
                "400",
                {"description": "the request body could not be read", "content": ERROR_SCHEMA},
            )
            own = answers.get("413")
            if own is None:
                answers["413"] = {"description": too_large, "content": ERROR_SCHEMA}
            elif too_large not in own.get("description", ""):
                own["description"] = f"{own.get('description', '')}; or {too_large}".lstrip("; ")
