"""Citizen reports in the Open311 GeoReport v2 shape: the services a citizen may report, the
request they post, and how a request's status reads from the ticket it joined.

A report enters the same pipeline as a camera's event (``Dispatcher.report_citizen``): it
merges into an open incident of its kind nearby, or opens one. Its Open311 ``status`` is
``closed`` once that ticket is closed, cancelled or rejected; ``status_notes`` says how;
``expected_datetime`` is the ticket's SLA deadline. Reporters' contact details are stored but
never returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import ColumnElement, Connection, and_, func, select

from config.site import Category, Site
from dispatcher.lifecycle import FINAL, Status
from dispatcher.store.schema import audit, citizen_reports, tickets

MAX_RESULTS = 1000


class Open311Error(ValueError):
    """A request Open311 refuses, with its HTTP status code."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class Service(BaseModel):
    """One entry of ``services.json``."""

    service_code: str
    service_name: str
    description: str
    metadata: bool = False
    type: Literal["realtime", "batch", "blackbox"] = "realtime"
    keywords: str
    group: str


class ServiceRequestCreate(BaseModel):
    """The fields of ``POST requests.json`` we take (a location as lat/long is required)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    service_code: str = Field(min_length=1, max_length=48)
    lat: float = Field(ge=-90, le=90)
    long: float = Field(ge=-180, le=180)
    api_key: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=4000)
    address_string: str | None = Field(default=None, max_length=255)
    media_url: str | None = Field(default=None, max_length=1000, pattern=r"^https?://")
    email: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(default=None, max_length=32)
    first_name: str | None = Field(default=None, max_length=80)
    last_name: str | None = Field(default=None, max_length=80)
    device_id: str | None = Field(default=None, max_length=64)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and "@" not in v:
            raise ValueError("not an e-mail address")
        return v

    def details(self) -> dict[str, Any]:
        """The columns of the stored report (contact details included, never shown)."""
        return {
            "description": self.description,
            "address_string": self.address_string,
            "media_url": self.media_url,
            "email": self.email,
            "phone": self.phone,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "client_device_id": self.device_id,
        }


class ServiceRequestCreated(BaseModel):
    """The answer to a POST: the new request's id."""

    service_request_id: str
    service_notice: str | None = None
    account_id: str | None = None


class ServiceRequest(BaseModel):
    """One request as ``requests.json`` shows it."""

    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str | None
    service_name: str
    service_code: str
    description: str | None
    agency_responsible: str
    service_notice: str | None = None
    requested_datetime: AwareDatetime
    updated_datetime: AwareDatetime
    expected_datetime: AwareDatetime | None
    address: str | None
    address_id: str | None = None
    zipcode: str | None = None
    lat: float
    long: float
    media_url: str | None


def citizen_categories(site: Site) -> dict[str, tuple[str, Category]]:
    """Open311 service_code → (category key, category), for categories citizens may report."""
    return {
        c.open311_code: (key, c)
        for key, c in site.categories.items()
        if c.open311_code and "citizen" in c.sources
    }


def services(site: Site) -> list[Service]:
    return [
        Service(
            service_code=code,
            service_name=f"{c.label} / {c.label_en}",
            description=f"{c.label_en}: handled within {c.sla_minutes} minutes "
            f"({c.label}，{c.sla_minutes} 分钟内处理)",
            keywords=",".join((key, c.label, c.label_en)),
            group=site.office.name_en,
        )
        for code, (key, c) in sorted(citizen_categories(site).items())
    ]


def category_for(site: Site, service_code: str) -> str:
    """The category key of a service code; Open311Error 404 when there is none."""
    found = citizen_categories(site).get(service_code)
    if found is None:
        raise Open311Error(404, f"service_code {service_code!r} not found; see services.json")
    return found[0]


NOTES: dict[str, str] = {
    Status.OPEN: "已受理，等待派单 / received, waiting for a grid worker",
    Status.ASSIGNED: "已派单给网格员 / assigned to a grid worker",
    Status.ACCEPTED: "网格员处理中 / a grid worker is on it",
    Status.RESOLVED: "已处理，等待摄像头复核 / fixed, being checked by camera",
}
CLOSE_NOTES: dict[str, str] = {
    "fixed": "已处理并复核 / fixed and verified",
    "cleared_by_camera": "摄像头确认问题已消失 / a camera saw the problem gone",
    "cleared_by_sensor": "传感器确认恢复正常 / the sensor reads normal again",
    "cleared": "问题已消失 / the problem is gone",
    "false_alarm": "核实为误报 / checked: no problem found",
}


def status_of(ticket: Mapping[Any, Any] | None) -> tuple[Literal["open", "closed"], str]:
    """Open311 status and notes from the ticket a report joined."""
    if ticket is None:
        return "open", NOTES[Status.OPEN]
    status = Status(ticket["status"])
    if status in FINAL:
        reason = str(ticket["close_reason"] or "")
        return "closed", CLOSE_NOTES.get(reason, f"已关闭 / closed ({reason})")
    note = NOTES[status]
    if ticket["breached_at"] is not None:
        note += "；已超时，已上报主管 / overdue, escalated to the supervisor"
    return "open", note


def _view(site: Site, row: Mapping[Any, Any]) -> ServiceRequest:
    key = str(row["service_code"])
    category = site.categories.get(key)
    ticket = row if row["ticket_id"] is not None else None
    status, notes = status_of(ticket)
    requested: datetime = row["requested_at"]
    updated: datetime = max(requested, row["updated_at"] or requested)
    return ServiceRequest(
        service_request_id=str(row["report_id"]),
        status=status,
        status_notes=notes,
        service_name=f"{category.label} / {category.label_en}" if category else key,
        service_code=(category.open311_code or key) if category else key,
        description=row["description"],
        agency_responsible=site.office.name,
        requested_datetime=requested,
        updated_datetime=updated,
        expected_datetime=row["deadline"],
        address=row["address_string"],
        lat=row["report_lat"],
        long=row["report_lon"],
        media_url=row["media_url"],
    )


def find_requests(
    conn: Connection,
    site: Site,
    *,
    ids: Sequence[int] | None = None,
    service_codes: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    status: Literal["open", "closed"] | None = None,
    limit: int = MAX_RESULTS,
) -> list[ServiceRequest]:
    """Reports with their tickets' state, newest first."""
    last_change = (
        select(audit.c.ticket_id, func.max(audit.c.at).label("updated_at"))
        .group_by(audit.c.ticket_id)
        .subquery()
    )
    stmt = (
        select(
            citizen_reports.c.id.label("report_id"),
            citizen_reports.c.service_code,
            citizen_reports.c.description,
            citizen_reports.c.address_string,
            citizen_reports.c.media_url,
            citizen_reports.c.requested_at,
            citizen_reports.c.lat.label("report_lat"),
            citizen_reports.c.lon.label("report_lon"),
            tickets.c.id.label("ticket_id"),
            tickets.c.status,
            tickets.c.close_reason,
            tickets.c.deadline,
            tickets.c.breached_at,
            last_change.c.updated_at,
        )
        .select_from(citizen_reports)
        .outerjoin(tickets, tickets.c.incident_id == citizen_reports.c.incident_id)
        .outerjoin(last_change, last_change.c.ticket_id == tickets.c.id)
    )
    where: list[ColumnElement[bool]] = []
    if ids is not None:
        where.append(citizen_reports.c.id.in_(list(ids)))
    if service_codes:
        codes = citizen_categories(site)
        where.append(
            citizen_reports.c.service_code.in_([codes[c][0] for c in service_codes if c in codes])
        )
    if start is not None:
        where.append(citizen_reports.c.requested_at >= start)
    if end is not None:
        where.append(citizen_reports.c.requested_at <= end)
    final = [s.value for s in FINAL]
    if status == "closed":
        where.append(tickets.c.status.in_(final))
    elif status == "open":
        where.append(tickets.c.id.is_(None) | tickets.c.status.not_in(final))
    if where:
        stmt = stmt.where(and_(*where))
    rows = conn.execute(
        stmt.order_by(citizen_reports.c.requested_at.desc(), citizen_reports.c.id.desc()).limit(
            limit
        )
    ).mappings()
    return [_view(site, r) for r in rows]
