"""Supervisor figures: KPI cards, time series and per-cell reports, read from InfluxDB through
``dispatcher.metrics``; the live backlog comes from the ticket store."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import func, select

from dispatcher import metrics
from dispatcher.api.deps import DispatcherDep, SupervisorUser, User
from dispatcher.api.models import (
    ErrorPublic,
    GridReportPublic,
    Identifier,
    KpiPublic,
    Period,
    Responses,
    SeriesLine,
    SeriesPublic,
)
from dispatcher.lifecycle import ACTIVE, Transition
from dispatcher.service import Dispatcher
from dispatcher.store.schema import tickets

log = logging.getLogger(__name__)
router = APIRouter(prefix="/metrics", tags=["metrics"])
RESPONSES: Responses = {
    401: {"model": ErrorPublic, "description": "not logged in"},
    403: {"model": ErrorPublic, "description": "only for supervisors and the admin"},
    404: {"model": ErrorPublic, "description": "not one of your streets"},
}
SPANS: dict[Period, tuple[timedelta, metrics.Interval]] = {
    "day": (timedelta(hours=24), "hour"),
    "week": (timedelta(days=7), "day"),
    "month": (timedelta(days=30), "day"),
}
PeriodQuery = Annotated[Period, Query(description="the last 24 hours, 7 days or 30 days")]
StreetQuery = Annotated[Identifier | None, Query(description="one street (default: all yours)")]


def scope(user: User, d: Dispatcher, street: str | None) -> list[str] | None:
    """The streets to report on; None means the whole site (the admin without a street)."""
    if street is not None:
        if street not in {s.id for s in d.site.streets} or (
            user.streets is not None and street not in user.streets
        ):
            log.warning("denied: %s asked for metrics of street %s", user.actor, street)
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"street {street!r} not found")
        return [street]
    return None if user.streets is None else sorted(user.streets)


def _period(d: Dispatcher, period: Period) -> tuple[metrics.Period, metrics.Interval]:
    span, interval = SPANS[period]
    return metrics.Period.last(span, d.clock.now()), interval


def _live_backlog(d: Dispatcher, streets: list[str] | None) -> tuple[int, int]:
    where = [tickets.c.status.in_([s.value for s in ACTIVE])]
    if streets is not None:
        where.append(tickets.c.street_id.in_(streets))
    with d.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(tickets).where(*where)).scalar_one()
        late = conn.execute(
            select(func.count())
            .select_from(tickets)
            .where(*where, tickets.c.deadline < d.clock.now())
        ).scalar_one()
    return int(total), int(late)


def _filters(streets: list[str] | None) -> metrics.Filters:
    return {} if streets is None else {"street": streets}


@router.get("/kpis", response_model=KpiPublic, responses=RESPONSES)
def kpis(
    d: DispatcherDep,
    user: SupervisorUser,
    period: PeriodQuery = "day",
    street: StreetQuery = None,
) -> KpiPublic:
    """Closure rate, median and p90 time to close, SLA compliance, reopen rate and discovery
    by source over the period; backlog and overdue now."""
    streets = scope(user, d, street)
    window, _ = _period(d, period)
    backlog, overdue = _live_backlog(d, streets)
    kpi, found, error = None, {"camera": 0, "sensor": 0, "citizen": 0}, None
    try:
        kpi = metrics.totals(d.influx, window, _filters(streets))
        for s in metrics.discovery(d.influx, window, None, _filters(streets)):
            found = {
                "camera": found["camera"] + s.camera,
                "sensor": found["sensor"] + s.sensor,
                "citizen": found["citizen"] + s.citizen,
            }
    except metrics.InfluxUnavailable as exc:
        log.warning("KPIs unavailable: %s", exc)
        error = str(exc)[:300]
    if kpi is None:
        return KpiPublic(
            period=period,
            opened=0,
            closed=0,
            closure_rate=None,
            median_close_s=None,
            p90_close_s=None,
            sla_compliance=None,
            reopen_rate=None,
            backlog=backlog,
            overdue=overdue,
            discovered_by=found,
            metrics_error=error,
        )
    return KpiPublic(
        period=period,
        opened=kpi.opened,
        closed=kpi.closed,
        closure_rate=kpi.closure_rate,
        median_close_s=kpi.median_close_s,
        p90_close_s=kpi.p90_close_s,
        sla_compliance=kpi.sla_compliance,
        reopen_rate=kpi.reopen_rate,
        backlog=backlog,
        overdue=overdue,
        discovered_by=found,
        metrics_error=error,
    )


SeriesTransition = Literal["opened", "verified", "reopened", "rejected", "cancelled"]


@router.get("/series", response_model=SeriesPublic, responses=RESPONSES)
def series(
    d: DispatcherDep,
    user: SupervisorUser,
    period: PeriodQuery = "day",
    transition: Annotated[SeriesTransition, Query(description="what to count")] = "opened",
    group_by: Annotated[Literal["grid", "category"], Query()] = "grid",
    street: StreetQuery = None,
) -> SeriesPublic:
    """Counts per hour (day) or per day (week, month), one line per grid cell or category."""
    streets = scope(user, d, street)
    window, interval = _period(d, period)
    starts = metrics.buckets(window, interval, d.site.tz)
    lines: dict[str, list[float]] = {}
    error = None
    try:
        ts = metrics.series(
            d.influx,
            Transition(transition),
            window,
            interval,
            d.site.tz,
            group_by,
            _filters(streets),
        )
        starts, lines = ts.starts, ts.values
    except metrics.InfluxUnavailable as exc:
        log.warning("series unavailable: %s", exc)
        error = str(exc)[:300]
    bucket_s = 3600 if interval == "hour" else 86400
    return SeriesPublic(
        period=period,
        transition=transition,
        group_by=group_by,
        bucket_s=bucket_s,
        times=[int(s.timestamp()) for s in starts],
        lines=[SeriesLine(key=k, values=list(v)) for k, v in sorted(lines.items())],
        metrics_error=error,
    )


@router.get(
    "/grids",
    response_model=list[GridReportPublic],
    responses=RESPONSES | {503: {"model": ErrorPublic, "description": "InfluxDB is unavailable"}},
)
def grid_reports(
    d: DispatcherDep,
    user: SupervisorUser,
    period: PeriodQuery = "day",
    street: StreetQuery = None,
) -> list[GridReportPublic]:
    """Per grid cell: opened, closed, closure rate, time to close and SLA compliance."""
    streets = scope(user, d, street)
    window, _ = _period(d, period)
    grids = {g.id for g in d.site.grids if streets is None or g.street in streets}
    try:
        rows = metrics.kpis(d.influx, window, "grid", _filters(streets))
    except metrics.InfluxUnavailable as exc:
        log.warning("grid report unavailable: %s", exc)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "InfluxDB is unavailable") from exc
    return [
        GridReportPublic(
            grid=r.key,
            opened=r.opened,
            assigned=r.assigned,
            closed=r.closed,
            cancelled=r.cancelled,
            closure_rate=r.closure_rate,
            median_close_s=r.median_close_s,
            p90_close_s=r.p90_close_s,
            sla_compliance=r.sla_compliance,
        )
        for r in rows
        if r.key in grids
    ]
