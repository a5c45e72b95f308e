"""Tables of the ticket store (SQLAlchemy Core); migrations in dispatcher/migrations mirror them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ticket store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        at: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


events = Table(
    "events",
    metadata,
    Column("event_id", String(36), primary_key=True, comment="the device's idempotency key"),
    Column("device_id", String(64), nullable=False),
    Column("source_id", String(64), nullable=False),
    Column("source_type", String(16), nullable=False),
    Column("kind", String(48), nullable=False),
    Column("state", String(16), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("device_ts", UtcDateTime, nullable=False),
    Column("ts", UtcDateTime, nullable=False, comment="time used for ordering and merging"),
    Column("ts_source", String(16), nullable=False, comment="device, or received if implausible"),
    Column("received_at", UtcDateTime, nullable=False),
    Column("lat", Float),
    Column("lon", Float),
    Column("confidence", Float),
    Column("incident_id", Integer, ForeignKey("incidents.id")),
    Column("evidence_id", Integer, ForeignKey("evidence.id")),
    Column("body", JSON, nullable=False, comment="the event without its snapshot"),
    Index("ix_events_incident", "incident_id"),
    Index("ix_events_device_seq", "device_id", "seq"),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(48), nullable=False),
    Column("status", String(16), nullable=False, comment="open or closed"),
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("grid_id", String(64)),
    Column("street_id", String(64)),
    Column(
        "source", String(16), nullable=False, comment="camera, sensor or citizen: first seen by"
    ),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("camera_ids", JSON, nullable=False, default=list),
    Column("cleared_at", UtcDateTime, comment="when a camera or sensor last reported it gone"),
    Column("track_keys", JSON, nullable=False, default=list, comment="device/source/track ids"),
    Column("bbox", JSON, comment="last box seen by a camera (normalised)"),
    Column("events", Integer, nullable=False, default=0),
    Index("ix_incidents_open_kind", "status", "kind"),
    Index("ix_incidents_open_kind_lat", "status", "kind", "lat"),
)

incident_tracks = Table(
    "incident_tracks",
    metadata,
    Column(
        "track_key", String(200), primary_key=True, comment="device/source/track, or device/sensor"
    ),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("cleared_at", UtcDateTime, comment="the source reported it gone (NULL: still sees it)"),
    Index("ix_incident_tracks_incident", "incident_id"),
)

# The newest event applied per track key (intake.arrived_late): an event below it arrived late.
track_seqs = Table(
    "track_seqs",
    metadata,
    Column(
        "track_key", String(200), primary_key=True, comment="device/source/track, or device/sensor"
    ),
    Column("seq", BigInteger, nullable=False, comment="the newest applied event's device seq"),
    Column("device_ts", UtcDateTime, nullable=False, comment="that event's device time"),
)

tickets = Table(
    "tickets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("category", String(48), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("grid_id", String(64)),
    Column("street_id", String(64)),
    Column("worker_id", String(64)),
    Column("source", String(16), nullable=False),
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("deadline", UtcDateTime, nullable=False),
    Column("assigned_at", UtcDateTime),
    Column("accepted_at", UtcDateTime),
    Column("arrived_at", UtcDateTime),
    Column("resolved_at", UtcDateTime),
    Column("closed_at", UtcDateTime),
    Column("close_reason", String(32), comment="fixed, cleared_by_camera, false_alarm, duplicate…"),
    Column("reopen_count", Integer, nullable=False, default=0),
    Column("escalated", Boolean, nullable=False, default=False),
    Column("note", Text),
    Column("version", Integer, nullable=False, default=1, comment="optimistic lock"),
    Column("accept_timeout_s", Float, nullable=False, comment="the category's terms at opening"),
    Column("remind_before_s", Float, nullable=False),
    Column("verify_timeout_s", Float, nullable=False),
    Column("reminded_at", UtcDateTime, comment="SLA reminder sent (once)"),
    Column("breached_at", UtcDateTime, comment="SLA deadline passed; escalated (once)"),
    Column("review_at", UtcDateTime, comment="verification gave up; supervisor asked to review"),
    Column("timer_at", UtcDateTime, comment="when the next timer of this ticket is due"),
    UniqueConstraint("incident_id", name="uq_tickets_incident"),
    Index("ix_tickets_timer_at", "timer_at"),
    Index("ix_tickets_status", "status"),
    Index("ix_tickets_worker_status", "worker_id", "status"),
    Index("ix_tickets_grid_status", "grid_id", "status"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ticket_id", Integer, ForeignKey("tickets.id"), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(80), nullable=False, comment="worker:w01, system, device:edge-01…"),
    Column("transition", String(24), nullable=False),
    Column("from_status", String(16)),
    Column("to_status", String(16), nullable=False),
    Column("worker_id", String(64), comment="the assignee after the transition"),
    Column("from_worker_id", String(64), comment="the assignee before it"),
    Column("reason", Text),
    Column(
        "reason_code", String(48), comment="a code from dispatcher/reasons.py; NULL in older rows"
    ),
    Column("reason_params", JSON, comment="the parameters of reason_code"),
    Column("pushed", Boolean, nullable=False, default=False, comment="pushes delivered"),
    Column("metric_sent", Boolean, nullable=False, default=False, comment="point in InfluxDB"),
    Index("ix_audit_ticket", "ticket_id"),
    Index("ix_audit_unpushed", "pushed"),
    Index("ix_audit_metric_unsent", "metric_sent"),
)

evidence = Table(
    "evidence",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False, comment="snapshot, crop, after_photo, verify"),
    Column("path", String(255), nullable=False, comment="relative to the evidence folder"),
    Column("sha256", String(64), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("ticket_id", Integer, ForeignKey("tickets.id")),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_evidence_ticket", "ticket_id"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("topic", String(255), nullable=False),
    Column("device_id", String(64)),
    Column("reason", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False, comment="the bytes as received (truncated)"),
    Column("size", Integer, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("online", Boolean, nullable=False, default=False),
    Column("last_seen", UtcDateTime),
    Column("status", JSON, comment="the last status message"),
    Column("clock_offset_s", Float, comment="device clock minus our clock, from heartbeats"),
)

verifications = Table(
    "verifications",
    metadata,
    Column("command_id", String(36), primary_key=True),
    Column("ticket_id", Integer, ForeignKey("tickets.id"), nullable=False),
    Column("camera_id", String(64), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("asked_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime),
    Column("outcome", String(16), comment="clear, still_present, error"),
    Column("evidence_id", Integer, ForeignKey("evidence.id")),
    Index("ix_verifications_ticket", "ticket_id"),
)

citizen_reports = Table(
    "citizen_reports",
    metadata,
    Column(
        "id", Integer, primary_key=True, autoincrement=True, comment="Open311 service_request_id"
    ),
    Column("service_code", String(48), nullable=False),
    Column("event_id", String(36), ForeignKey("events.event_id"), nullable=False),
    Column("incident_id", Integer, ForeignKey("incidents.id")),
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("description", Text),
    Column("address_string", String(255)),
    Column("media_url", String(1000)),
    Column("email", String(255)),
    Column("phone", String(32)),
    Column("first_name", String(80)),
    Column("last_name", String(80)),
    Column("client_device_id", String(64), comment="the reporting app's device_id"),
    Column("requested_at", UtcDateTime, nullable=False),
    Index("ix_citizen_reports_incident", "incident_id"),
    Index("ix_citizen_reports_requested", "requested_at"),
)

users = Table(
    "users",
    metadata,
    Column("username", String(64), primary_key=True, comment="worker or supervisor id, or admin"),
    Column("role", String(16), nullable=False, comment="worker, supervisor or admin"),
    Column("display_name", String(80), nullable=False),
    Column("password_hash", String(255), comment="argon2; NULL means login disabled"),
    Column(
        "token_version", Integer, nullable=False, default=0, comment="bump to log out everywhere"
    ),
    Column("lat", Float, comment="last known position (workers)"),
    Column("lon", Float),
    Column("position_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
)
