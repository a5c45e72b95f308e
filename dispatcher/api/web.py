"""The two web pages (worker app at /app/, supervisor dashboard at /dashboard/), their shared
static files, the API's own documentation page (/docs, Swagger UI served from here: nothing
from a CDN), security headers, and logging of refused requests."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
SWAGGER_UI = "/static/vendor/swagger-ui"
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


def add_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the vendored copy (create the app with ``docs_url=None``)."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} – API",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url="/app/icons/icon.svg",
            # no badge fetched from validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )
