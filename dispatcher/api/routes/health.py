"""Liveness and readiness: is the bus connected, does the store take writes, is work piling up."""

from __future__ import annotations

from fastapi import APIRouter

from dispatcher.api.deps import DispatcherDep
from dispatcher.api.models import HealthPublic

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
def health(d: DispatcherDep) -> HealthPublic:
    connected = d.bus.connected
    store_error = d.intake.store_error
    healthy = connected and d.metrics.last_error is None and store_error is None
    return HealthPublic(
        status="ok" if healthy else "degraded",
        mqtt_connected=connected,
        intake_backlog=d.intake.backlog(),
        metrics_pending=d.metrics.pending(),
        influx_error=d.metrics.last_error,
        store_error=store_error,
        events_received=d.intake.stats.received,
        dead_letters=d.intake.stats.dead_letters,
    )
