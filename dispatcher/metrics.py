"""Lifecycle metrics in InfluxDB: one point per ticket transition, and the KPI queries over them.

Writing: each audit row becomes one point of measurement ``ticket`` (tags: grid, street,
category, source, worker, transition; fields: seconds_since_open, sla_met, ticket_id,
priority). A shipper thread sends unsent audit rows in batches and marks them sent, so while
InfluxDB is down the points wait in the ticket store on disk and are backfilled when it
returns. InfluxDB 1.x gets line protocol on ``/write``; 2.x/3.x get influxdb-client's
``WriteApi`` on ``/api/v2/write``. The flavour comes from ``/ping``'s ``X-Influxdb-Version``.

Reading: every KPI is an InfluxQL query on ``/query`` (served by 1.x, 2.x in v1
compatibility and 3.x), all in this module.
"""

from __future__ import annotations

import logging
import statistics
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine, select, update

from dispatcher.lifecycle import Transition
from dispatcher.store.schema import audit, tickets

log = logging.getLogger(__name__)

MEASUREMENT = "ticket"


@dataclass(frozen=True)
class Point:
    """One InfluxDB point."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, float | int | bool | str]
    time_ns: int

    def line(self) -> str:
        """Line protocol, escaped as InfluxDB requires."""

        def esc_key(s: str) -> str:
            return s.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")

        def field(v: float | int | bool | str) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, int):
                return f"{v}i"
            if isinstance(v, float):
                return repr(v)
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

        tags = "".join(
            f",{esc_key(k)}={esc_key(v)}" for k, v in sorted(self.tags.items()) if v != ""
        )
        fields = ",".join(f"{esc_key(k)}={field(v)}" for k, v in self.fields.items())
        return f"{esc_key(self.measurement)}{tags} {fields} {self.time_ns}"


def transition_point(row: Mapping[str, Any], ticket: Mapping[str, Any]) -> Point:
    """The point for one audit row. Its time is the transition time; the audit id is added as
    nanoseconds so two transitions with the same tags and millisecond never overwrite each other."""
    at: datetime = row["at"]
    opened: datetime = ticket["opened_at"]
    fields: dict[str, float | int | bool | str] = {
        "seconds_since_open": max(0.0, (at - opened).total_seconds()),
        "ticket_id": int(ticket["id"]),
        "priority": int(ticket["priority"]),
    }
    if row["transition"] in (Transition.VERIFIED, Transition.CANCELLED, Transition.REJECTED):
        fields["sla_met"] = at <= ticket["deadline"]
    tags = {
        "grid": ticket["grid_id"] or "none",
        "street": ticket["street_id"] or "none",
        "category": ticket["category"],
        "source": ticket["source"],
        "worker": row["worker_id"] or "none",
        "transition": row["transition"],
    }
    ns = int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000 + int(row["id"]) % 1000
    return Point(MEASUREMENT, tags, fields, ns)


class InfluxUnavailable(RuntimeError):
    """InfluxDB did not take the write or answer the query."""


class InfluxClient(Protocol):
    def write(self, points: Sequence[Point]) -> None: ...

    def query(self, influxql: str) -> list[dict[str, Any]]: ...


class InfluxV1:
    """InfluxDB 1.x: line protocol on /write, InfluxQL on /query."""

    def __init__(self, url: str, database: str, *, username: str | None = None,
                 password: str | None = None, timeout_s: float = 10) -> None:
        auth = (username, password or "") if username else None
        self.database = database
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, auth=auth)

    def ensure_database(self) -> None:
        self._post_query(f'CREATE DATABASE "{self.database}"')

    def write(self, points: Sequence[Point]) -> None:
        body = "\n".join(p.line() for p in points).encode()
        try:
            r = self._http.post("/write", params={"db": self.database, "precision": "ns"}, content=body)
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"write failed: {exc}") from exc
        if r.status_code != 204:
            raise InfluxUnavailable(f"write refused ({r.status_code}): {r.text[:300]}")

    def _post_query(self, q: str) -> None:
        try:
            r = self._http.post("/query", params={"q": q})
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"query failed: {exc}") from exc
        if r.status_code != 200:
            raise InfluxUnavailable(f"query refused ({r.status_code}): {r.text[:300]}")

    def query(self, influxql: str) -> list[dict[str, Any]]:
        return _query(self._http, self.database, influxql, {})

    def close(self) -> None:
        self._http.close()


class InfluxV2:
    """InfluxDB 2.x/3.x: influxdb-client's WriteApi, InfluxQL through the v1-compatible /query."""

    def __init__(self, url: str, bucket: str, org: str, token: str, timeout_s: float = 10) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.bucket, self.org = bucket, org
        self._client = InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout_s * 1000))
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self._headers = {"Authorization": f"Token {token}"}
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)

    def write(self, points: Sequence[Point]) -> None:
        try:
            self._write.write(
                bucket=self.bucket,
                org=self.org,
                record=[p.line() for p in points],
                write_precision="ns",
            )
        except Exception as exc:
            raise InfluxUnavailable(f"write failed: {exc}") from exc

    def query(self, influxql: str) -> list[dict[str, Any]]:
        return _query(self._http, self.bucket, influxql, self._headers)

    def close(self) -> None:
        self._client.close()
        self._http.close()


def _query(http: httpx.Client, db: str, q: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Run InfluxQL; return rows as dicts with their group-by tags merged in."""
    try:
        r = http.get("/query", params={"db": db, "q": q, "epoch": "s"}, headers=headers)
    except httpx.HTTPError as exc:
        raise InfluxUnavailable(f"query failed: {exc}") from exc
    if r.status_code != 200:
        raise InfluxUnavailable(f"query refused ({r.status_code}): {r.text[:300]}")
    out: list[dict[str, Any]] = []
    for result in r.json().get("results", []):
        if "error" in result:
            raise InfluxUnavailable(f"query error: {result['error']}")
        for series in result.get("series", []):
            tags = series.get("tags", {})
            for values in series.get("values", []):
                out.append({**tags, **dict(zip(series["columns"], values, strict=False))})
    return out


def connect(url: str, database: str, *, token: str | None = None, org: str | None = None,
            username: str | None = None, password: str | None = None) -> InfluxV1 | InfluxV2:
    """Pick the client by the server's version header (1.x → InfluxV1, 2.x/3.x → InfluxV2)."""
    try:
        r = httpx.get(url.rstrip("/") + "/ping", timeout=5)
        version = r.headers.get("X-Influxdb-Version", "")
    except httpx.HTTPError as exc:
        log.warning("InfluxDB at %s not reachable (%s); assuming 1.x until it answers", url, exc)
        version = ""
    if version.startswith(("2.", "3.", "v2", "v3")):
        if not token:
            raise ValueError(f"InfluxDB {version} at {url} needs a token (GW_INFLUX_TOKEN)")
        return InfluxV2(url, database, org or "gridwatch", token)
    client = InfluxV1(url, database, username=username, password=password)
    try:
        client.ensure_database()
    except InfluxUnavailable as exc:
        log.warning("cannot create InfluxDB database %s yet: %s", database, exc)
    return client


class MetricsShipper:
    """Background thread: audit rows not yet in InfluxDB → points → marked sent."""

    def __init__(self, engine: Engine, influx: InfluxClient, batch: int = 5000) -> None:
        self.engine, self.influx, self.batch = engine, influx, batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.last_error: str | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metrics-shipper", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                while self.ship_once() == self.batch and not self._stop.is_set():
                    pass
                delay = 1.0
            except InfluxUnavailable as exc:
                if self.last_error is None:
                    log.error("InfluxDB unavailable; points stay buffered in the store: %s", exc)
                self.last_error = str(exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 30)
            except Exception:
                log.exception("metrics shipping failed; will retry")
                self._stop.wait(delay)

    def pending(self) -> int:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).where(audit.c.metric_sent.is_(False))).scalar_one()
            )

    def ship_once(self) -> int:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(audit, tickets)
                    .join(tickets, tickets.c.id == audit.c.ticket_id)
                    .where(audit.c.metric_sent.is_(False))
                    .order_by(audit.c.id)
                    .limit(self.batch)
                )
                .mappings()
                .all()
            )
        if not rows:
            return 0
        points = []
        ids = []
        for row in rows:
            ticket = {k: row[tickets.c[k]] for k in tickets.c.keys()}
            a = {k: row[audit.c[k]] for k in audit.c.keys()}
            points.append(transition_point(a, ticket))
            ids.append(a["id"])
        self.influx.write(points)
        with self.engine.begin() as conn:
            conn.execute(update(audit).where(audit.c.id.in_(ids)).values(metric_sent=True))
        if self.last_error is not None:
            log.info("InfluxDB reachable again; backfilled %d points", len(points))
            self.last_error = None
        self.sent += len(points)
        return len(ids)


# -- KPI queries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GridReport:
    """Closure figures for one grid cell over a period, read back from InfluxDB."""

    grid: str
    opened: int
    assigned: int
    closed: int
    cancelled: int
    closure_rate: float | None
    median_close_s: float | None
    p90_close_s: float | None
    sla_compliance: float | None


def _since(period: str) -> str:
    if not period.replace("h", "").replace("d", "").replace("m", "").isdigit():
        raise ValueError(f"period must look like 30m, 24h or 7d, not {period!r}")
    return f"time > now() - {period}"


def count_by(influx: InfluxClient, transition: str, period: str, tag: str = "grid") -> dict[str, int]:
    """How many transitions of one kind per tag value in the period."""
    rows = influx.query(
        f'SELECT count("ticket_id") AS n FROM "{MEASUREMENT}" WHERE "transition" = '
        f"'{transition}' AND {_since(period)} GROUP BY \"{tag}\""
    )
    return {str(r[tag]): int(r["n"]) for r in rows}


def close_times(influx: InfluxClient, period: str, tag: str = "grid") -> dict[str, list[float]]:
    """Seconds from opening to verified closure, per tag value."""
    rows = influx.query(
        f'SELECT "seconds_since_open", "sla_met" FROM "{MEASUREMENT}" WHERE "transition" = '
        f"'verified' AND {_since(period)} GROUP BY \"{tag}\""
    )
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(str(r[tag]), []).append(float(r["seconds_since_open"]))
    return out


def grid_report(influx: InfluxClient, period: str = "24h") -> list[GridReport]:
    """Per grid: opened, assigned, closed, closure rate, median/p90 time to close, SLA compliance."""
    opened = count_by(influx, "opened", period)
    assigned = count_by(influx, "assigned", period)
    closed = count_by(influx, "verified", period)
    cancelled = count_by(influx, "cancelled", period)
    rows = influx.query(
        f'SELECT "sla_met" FROM "{MEASUREMENT}" WHERE "transition" = '
        f"'verified' AND {_since(period)} GROUP BY \"grid\""
    )
    met: dict[str, list[bool]] = {}
    for r in rows:
        met.setdefault(str(r["grid"]), []).append(bool(r["sla_met"]))
    times = close_times(influx, period)
    grids = sorted(set(opened) | set(closed) | set(assigned))
    out = []
    for g in grids:
        t = sorted(times.get(g, []))
        due = opened.get(g, 0) - cancelled.get(g, 0)
        out.append(
            GridReport(
                grid=g,
                opened=opened.get(g, 0),
                assigned=assigned.get(g, 0),
                closed=closed.get(g, 0),
                cancelled=cancelled.get(g, 0),
                closure_rate=(closed.get(g, 0) / due) if due > 0 else None,
                median_close_s=statistics.median(t) if t else None,
                p90_close_s=t[min(len(t) - 1, int(0.9 * len(t)))] if t else None,
                sla_compliance=(sum(met[g]) / len(met[g])) if met.get(g) else None,
            )
        )
    return out
