"""Request and response models of the API; storage rows never leave the dispatcher as they are."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from dispatcher.security import Role

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", max_length=63)]
TicketStatus = Literal[
    "open", "assigned", "accepted", "resolved", "closed", "cancelled", "rejected"
]
Source = Literal["camera", "sensor", "citizen"]
Attention = Literal["escalated", "no_worker", "review", "overdue"]
Reason = Annotated[str, Field(min_length=1, max_length=500)]
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _plausible(value: datetime) -> datetime:
    if not _EARLIEST <= value <= _LATEST:
        raise ValueError("must lie between 2000-01-01 and 2100-01-01")
    return value.astimezone(UTC)


FilterTime = Annotated[AwareDatetime, AfterValidator(_plausible)]
Responses = dict[int | str, dict[str, Any]]
"""The extra answers a route declares in OpenAPI, by status code."""


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


T = TypeVar("T", bound=BaseModel)


class Page(ApiModel, Generic[T]):
    """One page of a list: the items, how many match in all, and the window asked for."""

    items: list[T]
    total: int = Field(ge=0)
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)


# -- accounts ------------------------------------------------------------------------------


class LoginRequest(ApiModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class TokenPublic(ApiModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    username: str
    role: Role
    display_name: str


class PasswordChange(ApiModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(
        min_length=10, max_length=256, description="at least 10 characters, not the username"
    )


class PasswordReset(ApiModel):
    new_password: str = Field(
        min_length=10, max_length=256, description="at least 10 characters, not the username"
    )


class AccountPublic(ApiModel):
    """An account as the admin manages it (never its password hash)."""

    username: str
    role: Role
    display_name: str
    disabled: bool = Field(description="no login; its tokens were revoked when disabled")
    has_password: bool = Field(description="false: the site file gave it none, login refused")
    in_site: bool = Field(description="the site file still lists it (always true for the admin)")
    created_at: datetime


class MePublic(ApiModel):
    """Who is logged in and what they oversee."""

    username: str
    role: Role
    display_name: str
    grid_id: str | None = Field(description="a worker's home grid cell")
    streets: list[str] = Field(description="a supervisor's streets (all for the admin)")
    grids: list[str] = Field(description="the grid cells whose tickets this user may see")


# -- site ----------------------------------------------------------------------------------


class CategoryPublic(ApiModel):
    id: str
    label: str
    label_en: str
    priority: int = Field(ge=1, le=5)
    sla_minutes: int = Field(gt=0)
    verify: Literal["camera", "sensor", "photo"]


class StreetPublic(ApiModel):
    id: str
    name: str
    name_en: str


class SitePublic(ApiModel):
    """What the pages need to label things: the office, its streets and the categories."""

    office_id: str
    name: str
    name_en: str
    timezone: str
    streets: list[StreetPublic]
    categories: list[CategoryPublic]


class GridPublic(ApiModel):
    id: str
    name: str
    name_en: str
    street_id: str
    neighbours: list[str]
    polygon: list[tuple[float, float]] = Field(description="outer ring, [lon, lat] pairs")
    backlog: int | None = Field(
        description="active tickets in the cell; null where the user does not oversee it"
    )
    overdue: int | None = Field(description="active tickets past their SLA deadline")


# -- tickets -------------------------------------------------------------------------------


class TicketPublic(ApiModel):
    id: int
    incident_id: int
    category: str
    priority: int = Field(ge=1, le=5)
    status: TicketStatus
    grid_id: str | None
    street_id: str | None
    worker_id: str | None
    source: str
    lat: float
    lon: float
    opened_at: datetime
    deadline: datetime
    assigned_at: datetime | None
    accepted_at: datetime | None
    arrived_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    close_reason: str | None
    reopen_count: int
    escalated: bool
    review_at: datetime | None = Field(
        description="when the cameras could not confirm the fix and the supervisor's review "
        "was asked for (waiting while the ticket is resolved)"
    )

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> TicketPublic:
        return cls(**{k: row[k] for k in cls.model_fields})


class TicketPage(Page[TicketPublic]):
    pass


class EvidencePublic(ApiModel):
    id: int
    kind: Literal["snapshot", "crop", "after_photo", "verify"]
    created_at: datetime
    bytes: int
    url: str = Field(description="GET it with the same bearer token")


class AuditEntryPublic(ApiModel):
    at: datetime
    actor: str = Field(
        description="who: worker:{id}, supervisor:{id}, admin:{id}, device:{id}, "
        "citizen:open311, system, system:verify, system:review, timer:{kind}"
    )
    transition: str
    from_status: str | None
    to_status: str
    worker_id: str | None
    reason: str | None = Field(description="why, in English (a person's reasons as typed)")
    reason_code: str | None = Field(
        description="why, as a stable code (note, assign.home, timer.sla_breached, "
        "verify.clear…; the list is dispatcher/reasons.py's ReasonCode); null when there is "
        "no reason, and in rows written before codes existed"
    )
    reason_params: dict[str, Any] | None = Field(
        description="the code's parameters: grid, neighbour, worker, seconds, deadline (UTC), "
        "by, id, ids, text; a reason that follows from another carries it as cause "
        "({code, params})"
    )


class VerificationPublic(ApiModel):
    camera_id: str
    asked_at: datetime
    answered_at: datetime | None
    outcome: str | None
    evidence_id: int | None


class TicketDetail(TicketPublic):
    """A ticket with what a person needs to judge it: evidence, verifications and audit trail."""

    note: str | None
    incident_events: int
    camera_ids: list[str]
    evidence: list[EvidencePublic]
    verifications: list[VerificationPublic]
    audit: list[AuditEntryPublic]


class ReasonRequest(ApiModel):
    reason: Reason


class ReassignRequest(ApiModel):
    worker_id: Identifier | None = Field(
        default=None, description="the new assignee; null lets the dispatcher choose"
    )
    reason: Reason


class ReviewRequest(ApiModel):
    decision: Literal["close", "reopen"]
    reason: Reason


# -- incidents -----------------------------------------------------------------------------


class IncidentPublic(ApiModel):
    id: int
    kind: str
    status: Literal["open", "closed"]
    lat: float
    lon: float
    grid_id: str | None
    street_id: str | None
    source: str
    first_seen: datetime
    last_seen: datetime
    cleared_at: datetime | None
    camera_ids: list[str]
    events: int
    ticket_id: int | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], ticket_id: int | None) -> IncidentPublic:
        values = {k: row[k] for k in cls.model_fields if k not in ("ticket_id", "camera_ids")}
        return cls(**values, camera_ids=list(row["camera_ids"] or []), ticket_id=ticket_id)


class IncidentPage(Page[IncidentPublic]):
    pass


# -- workers -------------------------------------------------------------------------------


class WorkerPublic(ApiModel):
    id: str
    name: str
    grid_id: str
    phone: str
    on_duty: bool
    open_tickets: int = Field(ge=0)
    closed_today: int = Field(ge=0, description="verified closures since local midnight")
    median_close_s: float | None = Field(
        description="median seconds from opening to closure, over the last 30 days"
    )
    lat: float | None
    lon: float | None
    position_at: datetime | None


class WorkerPage(Page[WorkerPublic]):
    pass


class PositionUpdate(ApiModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    accuracy_m: float | None = Field(default=None, ge=0, le=100_000)


class PositionPublic(ApiModel):
    lat: float
    lon: float
    position_at: datetime


# -- devices -------------------------------------------------------------------------------


class CameraHealth(ApiModel):
    camera_id: str
    state: str
    fps: float
    inference_ms: float | None
    last_frame: datetime | None
    error: str | None


class SensorHealth(ApiModel):
    sensor_id: str
    value: float | None
    alarm: bool
    last_reading: datetime | None
    error: str | None


class DevicePublic(ApiModel):
    id: str
    kind: Literal["edge", "sensor_node"]
    online: bool
    last_seen: datetime | None
    fps: float | None = Field(description="sum of the cameras' frame rates")
    outbox_depth: int | None
    agent_version: str | None
    model_version: str | None
    uptime_s: float | None
    cameras: list[CameraHealth]
    sensors: list[SensorHealth]
    errors: list[str]


class DevicePage(Page[DevicePublic]):
    pass


# -- metrics -------------------------------------------------------------------------------

Period = Literal["day", "week", "month"]


class KpiPublic(ApiModel):
    """The supervisor's headline figures over a period (InfluxDB), plus the live backlog."""

    period: Period
    opened: int = Field(ge=0)
    closed: int = Field(ge=0)
    closure_rate: float | None = Field(ge=0, description="closed / (opened - cancelled)")
    median_close_s: float | None
    p90_close_s: float | None
    sla_compliance: float | None = Field(ge=0, le=1)
    reopen_rate: float | None = Field(ge=0, description="reopenings / closures")
    backlog: int = Field(ge=0, description="active tickets now (ticket store)")
    overdue: int = Field(ge=0, description="active tickets past their deadline now")
    discovered_by: dict[str, int] = Field(description="tickets opened per source")
    metrics_error: str | None = Field(description="set when InfluxDB could not be read")


class SeriesLine(ApiModel):
    key: str
    values: list[float | None]


class SeriesPublic(ApiModel):
    """Counts per time bucket, one line per grid cell or category."""

    period: Period
    transition: Literal["opened", "verified", "reopened", "rejected", "cancelled"]
    group_by: Literal["grid", "category"]
    bucket_s: int
    times: list[int] = Field(description="bucket start, Unix seconds")
    lines: list[SeriesLine]
    metrics_error: str | None


class GridReportPublic(ApiModel):
    grid: str
    opened: int
    assigned: int
    closed: int
    cancelled: int
    closure_rate: float | None
    median_close_s: float | None
    p90_close_s: float | None
    sla_compliance: float | None


# -- health --------------------------------------------------------------------------------


class HealthPublic(ApiModel):
    status: Literal["ok", "degraded"]
    mqtt_connected: bool
    intake_backlog: int
    metrics_pending: int
    influx_error: str | None
    store_error: str | None
    events_received: int
    dead_letters: int


class ErrorPublic(ApiModel):
    detail: str


class Open311ErrorPublic(BaseModel):
    """One error as GeoReport v2 shapes it (an answer is a list of them)."""

    code: int = Field(description="the HTTP status code")
    description: str
