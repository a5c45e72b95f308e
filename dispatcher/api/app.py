"""The FastAPI application around a running Dispatcher."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from dispatcher.api.body_limit import BodyLimits, BodySizeLimit, document_body_answers
from dispatcher.api.routes import (
    accounts,
    auth,
    devices,
    evidence,
    grids,
    health,
    incidents,
    metrics,
    open311,
    site,
    stream,
    tickets,
    workers,
)
from dispatcher.api.web import add_docs, add_web
from dispatcher.push import SUPERVISOR_ALERTS
from dispatcher.security import LoginThrottle
from dispatcher.service import Dispatcher


def create_app(dispatcher: Dispatcher) -> FastAPI:
    app = FastAPI(
        title="gridwatch dispatcher",
        version="1",
        description="Tickets from street cameras and sensors to grid workers, closed on camera proof.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.dispatcher = dispatcher
    app.state.login_throttle = LoginThrottle()
    # The dashboard's live alerts: this process's hub fans the supervisors' topics out too.
    dispatcher.hub.follow(dispatcher.bus, SUPERVISOR_ALERTS)
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(accounts.router)
    app.include_router(tickets.router)
    for router in (
        incidents.router,
        workers.router,
        devices.router,
        grids.router,
        metrics.router,
        evidence.router,
        site.router,
        stream.router,
    ):
        app.include_router(router)
    app.include_router(open311.router)
    limits = BodyLimits(
        default=dispatcher.settings.max_body_bytes, upload=dispatcher.settings.max_upload_bytes
    )
    # Added before add_web's security headers, so they wrap it: a 413 carries them too.
    app.add_middleware(BodySizeLimit, limits=limits)

    def openapi() -> dict[str, Any]:
        document = FastAPI.openapi(app)
        document_body_answers(document, limits)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    add_web(app)
    add_docs(app)
    return app
