"""The FastAPI application around a running Dispatcher."""

from __future__ import annotations

from fastapi import FastAPI

from dispatcher.api.body_limit import BodyLimits, BodySizeLimit
from dispatcher.api.routes import (
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
from dispatcher.api.web import add_web
from dispatcher.security import LoginThrottle
from dispatcher.service import Dispatcher


def create_app(dispatcher: Dispatcher) -> FastAPI:
    app = FastAPI(
        title="gridwatch dispatcher",
        version="1",
        description="Tickets from street cameras and sensors to grid workers, closed on camera proof.",
    )
    app.state.dispatcher = dispatcher
    app.state.login_throttle = LoginThrottle()
    app.include_router(health.router)
    app.include_router(auth.router)
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
    # Added before add_web's security headers, so they wrap it: a 413 carries them too.
    app.add_middleware(
        BodySizeLimit,
        limits=BodyLimits(
            default=dispatcher.settings.max_body_bytes,
            upload=dispatcher.settings.max_upload_bytes,
        ),
    )
    add_web(app)
    return app
