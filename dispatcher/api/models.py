"""Request and response models of the API; storage rows never leave the dispatcher as they are."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.security import Role


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class TicketPublic(ApiModel):
    id: int
    incident_id: int
    category: str
    priority: int = Field(ge=1, le=5)
    status: str
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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TicketPublic:
        return cls(**{k: row[k] for k in cls.model_fields})


class TicketPage(ApiModel):
    items: list[TicketPublic]
    total: int
    limit: int
    offset: int


class ReasonRequest(ApiModel):
    reason: str = Field(min_length=1, max_length=500)


class HealthPublic(ApiModel):
    status: Literal["ok", "degraded"]
    mqtt_connected: bool
    intake_backlog: int
    metrics_pending: int
    influx_error: str | None
    events_received: int
    dead_letters: int
