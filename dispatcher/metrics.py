"""Lifecycle metrics in InfluxDB: one point per ticket transition, and the KPI queries over them.

Writing: each audit row becomes one point of measurement ``ticket`` (tags: grid, street,
category, source, worker, transition; fields: seconds_since_open, sla_met on closing
transitions, ticket_id, priority, open_delta) and, when the ticket changes hands, points of
measurement ``workload`` (tags as above without transition; field delta: +1 for the worker who
now holds it, -1 for the one who no longer does). A shipper thread sends unsent audit rows in
batches and marks them sent, so while InfluxDB is down the points wait in the ticket store on
disk and are backfilled when it returns. A point's time is the transition time plus the audit
id in nanoseconds, so a resent point is identical to the first (same series and timestamp) and
overwrites it instead of counting twice. InfluxDB 1.x gets line protocol on ``/write``;
2.x/3.x get influxdb-client's ``WriteApi`` on ``/api/v2/write``. The flavour comes from
``/ping``'s ``X-Influxdb-Version``.

Reading: every KPI is an InfluxQL query on ``/query`` (served by 1.x, 2.x in v1
compatibility and 3.x), all in this module. Definitions:

- closure rate: tickets verified closed ÷ tickets due (opened − cancelled − rejected) in the
  period; for a worker, closed ÷ distinct tickets given to them in the period;
- time to close: seconds from opening to the ``verified`` transition, median and p90
  (InfluxDB's nearest-rank percentile);
- SLA compliance: verified closures within the category's SLA ÷ verified closures;
- reopen rate: ``reopened`` ÷ ``resolved`` (how often the camera bounced a fix back);
- backlog: tickets not yet closed, cancelled or rejected at the period's end (for a worker:
  tickets they hold: assigned, accepted or resolved awaiting verification);
- discovery by source: tickets opened from cameras, sensors and citizens.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, Protocol, get_args
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import Connection, Engine, func, select, text, update

from dispatcher.lifecycle import ACTIVE, Status, Transition
from dispatcher.shipping import ShipperThread, unshipped
from dispatcher.store.schema import audit

log = logging.getLogger(__name__)

MEASUREMENT = "ticket"
WORKLOAD = "workload"
HELD = frozenset({Status.ASSIGNED, Status.ACCEPTED, Status.RESOLVED})
CLOSING = frozenset({Transition.VERIFIED, Transition.CANCELLED, Transition.REJECTED})
# Any constant: PostgreSQL advisory lock that lets one process at a time ship points.
SHIP_LOCK_KEY = 0x67770001


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
            return (
                s.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")
            )

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


def _status(value: str | None) -> Status | None:
    return Status(value) if value else None


def _time_ns(row: Mapping[str, Any]) -> int:
    """The transition time plus the audit id's last three digits in nanoseconds, so that two
    transitions of one series in the same microsecond never overwrite each other."""
    at: datetime = row["at"]
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000 + int(row["id"]) % 1000


def _base_tags(ticket: Mapping[str, Any]) -> dict[str, str]:
    return {
        "grid": ticket["grid_id"] or "none",
        "street": ticket["street_id"] or "none",
        "category": ticket["category"],
        "source": ticket["source"],
    }


def transition_point(row: Mapping[str, Any], ticket: Mapping[str, Any]) -> Point:
    """The ``ticket`` point for one audit row."""
    at: datetime = row["at"]
    opened: datetime = ticket["opened_at"]
    before, after = _status(row["from_status"]), Status(row["to_status"])
    fields: dict[str, float | int | bool | str] = {
        "seconds_since_open": max(0.0, (at - opened).total_seconds()),
        "ticket_id": int(ticket["id"]),
        "priority": int(ticket["priority"]),
        "open_delta": int(after in ACTIVE) - int(before in ACTIVE),
    }
    if row["transition"] in CLOSING:
        fields["sla_met"] = at <= ticket["deadline"]
    tags = _base_tags(ticket) | {
        "worker": row["worker_id"] or "none",
        "transition": row["transition"],
    }
    return Point(MEASUREMENT, tags, fields, _time_ns(row))


def workload_points(row: Mapping[str, Any], ticket: Mapping[str, Any]) -> list[Point]:
    """``workload`` points for one audit row: -1 for a worker who stops holding the ticket,
    +1 for one who starts (nothing when the holder stays the same)."""
    before, after = _status(row["from_status"]), Status(row["to_status"])
    held_by = row["from_worker_id"] if before in HELD else None
    holder = row["worker_id"] if after in HELD else None
    if held_by == holder:
        return []
    ns, tags = _time_ns(row), _base_tags(ticket)
    out = []
    for worker, delta in ((held_by, -1), (holder, 1)):
        if worker:
            out.append(
                Point(
                    WORKLOAD,
                    tags | {"worker": worker},
                    {"delta": delta, "ticket_id": int(ticket["id"])},
                    ns,
                )
            )
    return out


def points_for(row: Mapping[str, Any], ticket: Mapping[str, Any]) -> list[Point]:
    """Every point one audit row produces."""
    return [transition_point(row, ticket), *workload_points(row, ticket)]


class InfluxUnavailable(RuntimeError):
    """InfluxDB did not take the write or answer the query."""


class InfluxQueryError(ValueError):
    """InfluxDB answered, but refused the query itself (a bug in the query)."""


class InfluxClient(Protocol):
    def write(self, points: Sequence[Point]) -> None: ...

    def query(self, influxql: str) -> list[dict[str, Any]]: ...

    def query_each(self, statements: Sequence[str]) -> list[list[dict[str, Any]]]: ...


class InfluxV1:
    """InfluxDB 1.x: line protocol on /write, InfluxQL on /query."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10,
    ) -> None:
        auth = (username, password or "") if username else None
        self.database = database
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, auth=auth)

    def ensure_database(self) -> None:
        self._post_query(f'CREATE DATABASE "{self.database}"')

    def write(self, points: Sequence[Point]) -> None:
        body = "\n".join(p.line() for p in points).encode()
        try:
            r = self._http.post(
                "/write", params={"db": self.database, "precision": "ns"}, content=body
            )
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
        return self.query_each([influxql])[0]

    def query_each(self, statements: Sequence[str]) -> list[list[dict[str, Any]]]:
        return _query(self._http, self.database, statements, {})

    def close(self) -> None:
        self._http.close()


class InfluxV2:
    """InfluxDB 2.x/3.x: influxdb-client's WriteApi, InfluxQL through the v1-compatible /query."""

    def __init__(self, url: str, bucket: str, org: str, token: str, timeout_s: float = 10) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.domain.write_precision import WritePrecision

        self._precision = WritePrecision.NS

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
                write_precision=self._precision,  # type: ignore[arg-type]
            )
        except Exception as exc:
            raise InfluxUnavailable(f"write failed: {exc}") from exc

    def query(self, influxql: str) -> list[dict[str, Any]]:
        return self.query_each([influxql])[0]

    def query_each(self, statements: Sequence[str]) -> list[list[dict[str, Any]]]:
        return _query(self._http, self.bucket, statements, self._headers)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
        self._http.close()


def _query(
    http: httpx.Client, db: str, statements: Sequence[str], headers: dict[str, str]
) -> list[list[dict[str, Any]]]:
    """Run InfluxQL statements in one request; per statement, rows as dicts with their
    group-by tags merged in."""
    try:
        r = http.get(
            "/query", params={"db": db, "q": ";\n".join(statements), "epoch": "s"}, headers=headers
        )
    except httpx.HTTPError as exc:
        raise InfluxUnavailable(f"query failed: {exc}") from exc
    if r.status_code >= 500:
        raise InfluxUnavailable(f"query refused ({r.status_code}): {r.text[:300]}")
    if r.status_code != 200:
        raise InfluxQueryError(f"query refused ({r.status_code}): {r.text[:300]}")
    out: list[list[dict[str, Any]]] = [[] for _ in statements]
    for result in r.json().get("results", []):
        if "error" in result:
            raise InfluxQueryError(f"query error: {result['error']}")
        rows = out[int(result.get("statement_id", 0))]
        for series in result.get("series", []):
            tags = series.get("tags", {})
            for values in series.get("values", []):
                rows.append({**tags, **dict(zip(series["columns"], values, strict=False))})
    return out


def connect(
    url: str,
    database: str,
    *,
    token: str | None = None,
    org: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> InfluxV1 | InfluxV2:
    """Pick the client by the server's version header (1.x → InfluxV1, 2.x/3.x → InfluxV2).

    A server that does not answer at start is taken for what the settings imply: 2.x/3.x when
    a token is configured (1.x has no tokens), else 1.x; points wait in the store meanwhile.
    """
    try:
        r = httpx.get(url.rstrip("/") + "/ping", timeout=5)
        version = r.headers.get("X-Influxdb-Version", "")
    except httpx.HTTPError as exc:
        version = ""
        log.warning(
            "InfluxDB at %s not reachable (%s); taking it for %s until it answers",
            url,
            exc,
            "2.x/3.x (a token is configured)" if token else "1.x",
        )
        if token:
            return InfluxV2(url, database, org or "gridwatch", token)
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


class MetricsShipper(ShipperThread):
    """Background thread: audit rows not yet in InfluxDB → points → marked sent.

    On PostgreSQL several dispatcher processes share the audit table; a transaction-scoped
    advisory lock lets one of them ship at a time (the others find it taken and retry), so
    no row is written twice or skipped. On SQLite there is one process.
    """

    thread_name = "metrics-shipper"

    def __init__(
        self, engine: Engine, influx: InfluxClient, batch: int = 5000, every_s: float = 0.5
    ) -> None:
        super().__init__()
        self.engine, self.influx, self.batch = engine, influx, batch
        # At most one round per ``every_s``: a point may wait that long, and a busy intake,
        # which wakes this after every commit, shares its write lock with a round a
        # second rather than with one per commit.
        self.every_s = every_s
        self.sent = 0
        self.last_error: str | None = None

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.ship_all()
                delay = 1.0
                self._stop.wait(self.every_s)
            except InfluxUnavailable as exc:
                if self.last_error is None:
                    log.error("InfluxDB unavailable; points stay buffered in the store: %s", exc)
                self.last_error = str(exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 30)
            except Exception:
                log.exception("metrics shipping failed; will retry")
                self._stop.wait(delay)

    def ship_all(self) -> int:
        """Ship until nothing is pending (or another process holds the shipping lock)."""
        total = 0
        while not self._stop.is_set():
            n = self.ship_once()
            if n is None:  # another process ships now; the next wake (or a second) retries
                break
            total += n
            if n < self.batch:
                break
        return total

    def pending(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(audit.c.metric_sent.is_(False))
                ).scalar_one()
            )

    def _unsent(self, conn: Connection) -> list[tuple[int, list[Point]]]:
        return [
            (int(row["id"]), points_for(row, ticket))
            for row, ticket in unshipped(conn, audit.c.metric_sent, limit=self.batch)
        ]

    def ship_once(self) -> int | None:
        """Write one batch of pending points; the number of audit rows shipped, or None when
        another process is shipping right now."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:
                if not conn.execute(
                    text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SHIP_LOCK_KEY}
                ).scalar():
                    return None
                batch = self._unsent(conn)
                if batch:
                    self.influx.write([p for _, pts in batch for p in pts])
                    self._mark(conn, [i for i, _ in batch])
        else:
            with self.engine.connect() as conn:
                batch = self._unsent(conn)
            if not batch:
                return 0
            # Written outside the store's write lock; a crash before the mark resends
            # identical points, which InfluxDB stores once.
            self.influx.write([p for _, pts in batch for p in pts])
            with self.engine.begin() as conn:
                self._mark(conn, [i for i, _ in batch])
        if batch and self.last_error is not None:
            log.info("InfluxDB reachable again; backfilled %d transitions", len(batch))
            self.last_error = None
        self.sent += len(batch)
        return len(batch)

    @staticmethod
    def _mark(conn: Connection, ids: list[int]) -> None:
        if ids:
            conn.execute(update(audit).where(audit.c.id.in_(ids)).values(metric_sent=True))


# -- KPI queries ---------------------------------------------------------------------------

Dimension = Literal["grid", "street", "category", "worker", "source"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)
Interval = Literal["hour", "day", "week", "month"]
_SPAN = re.compile(r"^(\d{1,6})([mhdw])$")
_SPAN_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Period:
    """A half-open time range [start, end) in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a Period needs timezone-aware datetimes")
        if self.end <= self.start:
            raise ValueError(f"period end {self.end} is not after its start {self.start}")

    @classmethod
    def last(cls, span: str | timedelta, now: datetime) -> Period:
        """The span before ``now``; a span is a timedelta or text like 30m, 24h, 7d, 4w."""
        if isinstance(span, str):
            m = _SPAN.match(span.strip())
            if m is None:
                raise ValueError(f"period must look like 30m, 24h, 7d or 4w, not {span!r}")
            span = timedelta(**{_SPAN_UNITS[m.group(2)]: int(m.group(1))})
        return cls(now - span, now)

    def where(self) -> str:
        return f"time >= '{_rfc3339(self.start)}' AND time < '{_rfc3339(self.end)}'"


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


Filters = Mapping[Dimension, str | Sequence[str]]


def _conditions(*parts: str, filters: Filters | None = None) -> str:
    """WHERE clauses joined by AND; a filter's value is one tag value or a list (any of them;
    an empty list matches nothing)."""
    where = [p for p in parts if p]
    for dim, value in (filters or {}).items():
        if dim not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dim!r}; use one of {DIMENSIONS}")
        values = [value] if isinstance(value, str) else list(value)
        if not values:
            where.append('"ticket_id" < 0')  # no point has one
            continue
        where.append("(" + " OR ".join(f'"{dim}" = {_literal(v)}' for v in values) + ")")
    return " AND ".join(where)


def _group(by: Dimension | None, *extra: str) -> str:
    if by is not None and by not in DIMENSIONS:
        raise ValueError(f"unknown dimension {by!r}; use one of {DIMENSIONS}")
    parts = [*extra, *([f'"{by}"'] if by else [])]
    return f" GROUP BY {', '.join(parts)}" if parts else ""


def _transition_is(*names: Transition) -> str:
    return "(" + " OR ".join(f'"transition" = {_literal(n.value)}' for n in names) + ")"


ALL = "all"
TAG_TRANSITION = '"transition"'
TAG_SOURCE = '"source"'
SLA_MET = '"sla_met" = true'


def _key(row: Mapping[str, Any], by: Dimension | None) -> str:
    return str(row.get(by, "none")) if by else ALL


@dataclass(frozen=True)
class Kpi:
    """The closure figures of one group (a grid cell, street, category, worker, source, or
    ``all``) over a period."""

    key: str
    opened: int
    assigned: int
    given: int | None  # distinct tickets given to the worker (worker rows only)
    resolved: int
    closed: int
    cancelled: int
    rejected: int
    reopened: int
    escalated: int
    closure_rate: float | None
    median_close_s: float | None
    p90_close_s: float | None
    sla_met: int
    sla_total: int
    sla_compliance: float | None
    reopen_rate: float | None
    backlog: int


def _backlog_statement(by: Dimension | None, before: str, filters: Filters | None) -> str:
    if by == "worker":
        return (
            f'SELECT SUM("delta") AS n FROM "{WORKLOAD}" WHERE '
            f"{_conditions(before, filters=filters)}{_group(by)}"
        )
    return (
        f'SELECT SUM("open_delta") AS n FROM "{MEASUREMENT}" WHERE '
        f"{_conditions(before, filters=filters)}{_group(by)}"
    )


def kpis(
    influx: InfluxClient,
    period: Period,
    by: Dimension | None = None,
    filters: Filters | None = None,
) -> list[Kpi]:
    """Closure rate, time to close (median, p90), SLA compliance, reopen rate and backlog per
    group of ``by`` (one ``all`` row when None), over ``period``, optionally filtered
    (e.g. ``{"grid": "g1"}`` or ``{"street": ["s1", "s2"]}``). One request to InfluxDB."""
    within = period.where()
    verified = _transition_is(Transition.VERIFIED)
    statements = [
        f'SELECT COUNT("ticket_id") AS n FROM "{MEASUREMENT}" WHERE '
        f"{_conditions(within, filters=filters)}{_group(by, TAG_TRANSITION)}",
        f'SELECT MEDIAN("seconds_since_open") AS median, '
        f'PERCENTILE("seconds_since_open", 90) AS p90 FROM "{MEASUREMENT}" WHERE '
        f"{_conditions(verified, within, filters=filters)}{_group(by)}",
        f'SELECT COUNT("sla_met") AS n FROM "{MEASUREMENT}" WHERE '
        f"{_conditions(verified, within, SLA_MET, filters=filters)}{_group(by)}",
        _backlog_statement(by, f"time < '{_rfc3339(period.end)}'", filters),
    ]
    if by == "worker":
        statements.append(
            f'SELECT COUNT(DISTINCT("ticket_id")) AS n FROM "{MEASUREMENT}" WHERE '
            + _conditions(
                _transition_is(Transition.ASSIGNED, Transition.REASSIGNED, Transition.REOPENED),
                within,
                filters=filters,
            )
            + _group(by)
        )
    results = influx.query_each(statements)
    counts: dict[str, dict[str, int]] = {}
    for r in results[0]:
        counts.setdefault(_key(r, by), {})[str(r["transition"])] = int(r["n"])
    times = {_key(r, by): r for r in results[1]}
    met = {_key(r, by): int(r["n"]) for r in results[2]}
    backlog = {_key(r, by): int(r["n"]) for r in results[3]}
    given = {_key(r, by): int(r["n"]) for r in results[4]} if by == "worker" else {}
    keys = sorted(set(counts) | {k for k, v in backlog.items() if v})
    out = []
    for k in keys:
        c = counts.get(k, {})

        def n(t: Transition, c: dict[str, int] = c) -> int:
            return c.get(t.value, 0)

        closed, resolved = n(Transition.VERIFIED), n(Transition.RESOLVED)
        due = (
            given.get(k, 0)
            if by == "worker"
            else n(Transition.OPENED) - n(Transition.CANCELLED) - n(Transition.REJECTED)
        )
        t = times.get(k, {})
        out.append(
            Kpi(
                key=k,
                opened=n(Transition.OPENED),
                assigned=n(Transition.ASSIGNED) + n(Transition.REASSIGNED),
                given=given.get(k, 0) if by == "worker" else None,
                resolved=resolved,
                closed=closed,
                cancelled=n(Transition.CANCELLED),
                rejected=n(Transition.REJECTED),
                reopened=n(Transition.REOPENED),
                escalated=n(Transition.ESCALATED),
                closure_rate=min(1.0, closed / due) if due > 0 else None,
                median_close_s=_float(t.get("median")),
                p90_close_s=_float(t.get("p90")),
                sla_met=met.get(k, 0),
                sla_total=closed,
                sla_compliance=met.get(k, 0) / closed if closed else None,
                reopen_rate=n(Transition.REOPENED) / resolved if resolved else None,
                backlog=max(0, backlog.get(k, 0)),
            )
        )
    return out


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def totals(influx: InfluxClient, period: Period, filters: Filters | None = None) -> Kpi:
    """The KPIs of everything in the period (filtered), as one row keyed ``all``."""
    rows = kpis(influx, period, None, filters)
    if rows:
        return rows[0]
    return Kpi(ALL, 0, 0, None, 0, 0, 0, 0, 0, 0, None, None, None, 0, 0, None, None, 0)


def backlog(
    influx: InfluxClient,
    at: datetime,
    by: Dimension | None = None,
    filters: Filters | None = None,
) -> dict[str, int]:
    """Tickets still open at ``at`` per group (for workers: tickets they hold)."""
    rows = influx.query(_backlog_statement(by, f"time < '{_rfc3339(at)}'", filters))
    return {_key(r, by): max(0, int(r["n"])) for r in rows if int(r["n"])}


@dataclass(frozen=True)
class Discovery:
    """How the problems of one group were found in a period: tickets opened per source."""

    key: str
    camera: int
    sensor: int
    citizen: int

    @property
    def total(self) -> int:
        return self.camera + self.sensor + self.citizen

    @property
    def automatic_share(self) -> float | None:
        """Share found by cameras and sensors rather than citizens."""
        return (self.camera + self.sensor) / self.total if self.total else None


def discovery(
    influx: InfluxClient,
    period: Period,
    by: Dimension | None = None,
    filters: Filters | None = None,
) -> list[Discovery]:
    """Tickets opened per source (camera, sensor, citizen) per group of ``by``."""
    if by == "source":
        raise ValueError("discovery is already split by source; group by another dimension")
    rows = influx.query(
        f'SELECT COUNT("ticket_id") AS n FROM "{MEASUREMENT}" WHERE '
        f"{_conditions(_transition_is(Transition.OPENED), period.where(), filters=filters)}"
        f"{_group(by, TAG_SOURCE)}"
    )
    found: dict[str, dict[str, int]] = {}
    for r in rows:
        found.setdefault(_key(r, by), {})[str(r["source"])] = int(r["n"])
    return [
        Discovery(k, v.get("camera", 0), v.get("sensor", 0), v.get("citizen", 0))
        for k, v in sorted(found.items())
    ]


@dataclass(frozen=True)
class TimeSeries:
    """Values per time bucket, per group (``all`` when ungrouped), for charts.

    ``starts`` are the buckets' local start times; every list in ``values`` is as long.
    """

    interval: Interval
    starts: list[datetime]
    values: dict[str, list[float]]


def _bucket_start(at: datetime, interval: Interval) -> datetime:
    """The start of the local bucket holding ``at`` (``at`` in the site's zone)."""
    if interval == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    day = datetime.combine(at.date(), datetime.min.time(), tzinfo=at.tzinfo)
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=at.weekday())
    return day.replace(day=1)


def _next_bucket(start: datetime, interval: Interval) -> datetime:
    tz = start.tzinfo
    if interval == "hour":
        return (start.astimezone(UTC) + timedelta(hours=1)).astimezone(tz)
    d: date = start.date()
    if interval == "day":
        d = d + timedelta(days=1)
    elif interval == "week":
        d = d + timedelta(days=7)
    else:
        d = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    return datetime.combine(d, datetime.min.time(), tzinfo=tz)


def buckets(period: Period, interval: Interval, tz: ZoneInfo) -> list[datetime]:
    """Local bucket starts covering the period (the first may begin before it)."""
    start = _bucket_start(period.start.astimezone(tz), interval)
    out = []
    while start < period.end:
        out.append(start)
        start = _next_bucket(start, interval)
    return out


def _series_query(
    influx: InfluxClient,
    select_: str,
    measurement: str,
    conditions: str,
    interval: Interval,
    by: Dimension | None,
    tz: ZoneInfo,
) -> list[dict[str, Any]]:
    step = "1h" if interval == "hour" else "1d"
    return influx.query(
        f'SELECT {select_} AS n FROM "{measurement}" WHERE {conditions}'
        f"{_group(by, f'time({step})')} fill(0) tz({_literal(tz.key)})"
    )


def _roll_up(
    rows: list[dict[str, Any]],
    starts: list[datetime],
    interval: Interval,
    by: Dimension | None,
    tz: ZoneInfo,
) -> dict[str, list[float]]:
    index = {s: i for i, s in enumerate(starts)}
    values: dict[str, list[float]] = {}
    for r in rows:
        at = datetime.fromtimestamp(int(r["time"]), tz)
        i = index.get(_bucket_start(at, interval))
        if i is None:
            continue
        series = values.setdefault(_key(r, by), [0.0] * len(starts))
        series[i] += float(r["n"] or 0)
    return values


def series(
    influx: InfluxClient,
    transition: Transition,
    period: Period,
    interval: Interval,
    tz: ZoneInfo,
    by: Dimension | None = None,
    filters: Filters | None = None,
) -> TimeSeries:
    """How many ``transition`` points fell in each hour/day/week/month (local time) of the
    period, per group; weeks start on Monday. E.g. opened vs verified per day for a chart."""
    if interval not in get_args(Interval):
        raise ValueError(f"interval must be one of {get_args(Interval)}, not {interval!r}")
    starts = buckets(period, interval, tz)
    rows = _series_query(
        influx,
        'COUNT("ticket_id")',
        MEASUREMENT,
        _conditions(_transition_is(transition), period.where(), filters=filters),
        interval,
        by,
        tz,
    )
    values = _roll_up(rows, starts, interval, by, tz)
    if by is None:
        values.setdefault(ALL, [0.0] * len(starts))
    return TimeSeries(interval, starts, values)


def backlog_series(
    influx: InfluxClient,
    period: Period,
    interval: Interval,
    tz: ZoneInfo,
    by: Dimension | None = None,
    filters: Filters | None = None,
) -> TimeSeries:
    """The backlog at the end of each bucket of the period, per group."""
    starts = buckets(period, interval, tz)
    before = backlog(influx, period.start, by, filters)
    measurement, select_ = (
        (WORKLOAD, 'SUM("delta")') if by == "worker" else (MEASUREMENT, 'SUM("open_delta")')
    )
    rows = _series_query(
        influx,
        select_,
        measurement,
        _conditions(period.where(), filters=filters),
        interval,
        by,
        tz,
    )
    deltas = _roll_up(rows, starts, interval, by, tz)
    values: dict[str, list[float]] = {}
    for k in sorted(set(deltas) | set(before) | ({ALL} if by is None else set())):
        level = float(before.get(k, 0))
        running = []
        for d in deltas.get(k, [0.0] * len(starts)):
            level += d
            running.append(max(0.0, level))
        values[k] = running
    return TimeSeries(interval, starts, values)


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


def grid_report(
    influx: InfluxClient, period: str = "24h", now: datetime | None = None
) -> list[GridReport]:
    """Per grid cell: opened, assigned, closed, cancelled, closure rate, median/p90 time to
    close, SLA compliance over the last ``period`` (the demo's closing table)."""
    rows = kpis(influx, Period.last(period, now or datetime.now(UTC)), "grid")
    return [
        GridReport(
            r.key,
            r.opened,
            r.assigned,
            r.closed,
            r.cancelled,
            r.closure_rate,
            r.median_close_s,
            r.p90_close_s,
            r.sla_compliance,
        )
        for r in rows
    ]
