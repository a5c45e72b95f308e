"""The FastAPI application around a running Dispatcher."""

from __future__ import annotations

from fastapi import FastAPI

from dispatcher.api.routes import auth, health, open311, tickets
from dispatcher.service import Dispatcher


def create_app(dispatcher: Dispatcher) -> FastAPI:
    app = FastAPI(
        title="gridwatch dispatcher",
        version="1",
        description="Tickets from street cameras and sensors to grid workers, closed on camera proof.",
    )
    app.state.dispatcher = dispatcher
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(tickets.router)
    app.include_router(open311.router)
    return app
