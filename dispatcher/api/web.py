"""The two web pages (worker app at /app/, supervisor dashboard at /dashboard/), their shared
static files, security headers, and logging of refused requests."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
PAGES = ("/app", "/dashboard", "/static")
NO_CACHE = (".html", "/", "sw.js", ".webmanifest", ".js", ".css", ".json")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; manifest-src 'self'; worker-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """No sniffing, no framing, no referrers; a strict content policy on our own pages.

    A plain ASGI middleware, so streamed responses (server-sent events) pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("X-Frame-Options", "DENY")
                if path.startswith(PAGES):
                    headers["Content-Security-Policy"] = CSP
                    if path.endswith(NO_CACHE) or "/i18n/" in path:
                        headers["Cache-Control"] = "no-cache"
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def log_validation_error(request: Request, exc: Exception) -> Response:
    """Answer as FastAPI does (422 naming each bad field), and log which request it was."""
    assert isinstance(exc, RequestValidationError)
    fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()[:5])
    log.info("refused: invalid request %s %s (%s)", request.method, request.url.path, fields)
    return await request_validation_exception_handler(request, exc)


def add_web(app: FastAPI) -> None:
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(RequestValidationError, log_validation_error)
    app.mount("/app", StaticFiles(directory=STATIC / "app", html=True), name="worker-app")
    app.mount(
        "/dashboard", StaticFiles(directory=STATIC / "dashboard", html=True), name="dashboard"
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/app/")
