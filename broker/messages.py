"""Versioned message schemas for every topic; unknown fields are rejected, every model round-trips JSON."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal, Self
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from config.site import ClassRule, GeoPoint, NormPoint

Ident = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Kind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,40}$", description="category key")]
Unit = Annotated[float, Field(ge=0, le=1)]
NormBox = Annotated[
    tuple[Unit, Unit, Unit, Unit], Field(description="x1, y1, x2, y2 as fractions of the frame")
]

MAX_JPEG_BYTES = 512 * 1024


class MessageError(ValueError):
    """A payload that is not a valid message; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Message(BaseModel):
    """Base of all bus messages: a ``schema`` name and a version ``v``."""

    # JSON has no NaN or Infinity (RFC 8259); a reading of NaN would be stored as null.
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )
    SCHEMA: ClassVar[str]

    schema_: str = Field(alias="schema", description="message type, e.g. gw.event")
    v: Literal[1] = Field(default=1, description="schema version")

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: object, info: ValidationInfo) -> object:
        """Refuse a NUL character in any text, by name: PostgreSQL cannot store one in a text
        column, and no field of ours has a use for it. (Skipped for JSON text without the
        escape ``\\u0000``, the only way JSON can carry one: ``from_json`` says so.)"""
        if info.context is _NO_NUL_ESCAPE:
            return data
        where = _find_nul(data)
        if where is not None:
            raise ValueError(
                f"{'.'.join(where) or '(payload)'}: text contains a NUL character (\\u0000)"
            )
        return data

    @model_validator(mode="after")
    def _times_fit_utc(self) -> Self:
        """A time whose offset pushes it outside the years 1-9999 in UTC (``0001-01-01T00:00
        +14:00``) parses but cannot be stored or compared: refuse it by name."""
        for name, value in self.__dict__.items():
            if isinstance(value, datetime):
                try:
                    value.astimezone(UTC)
                except OverflowError:
                    raise ValueError(
                        f"{name}: {value.isoformat()} is out of range in UTC"
                    ) from None
        return self

    def to_json(self) -> bytes:
        """Serialize with the wire names (``schema``, not ``schema_``)."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Self:
        """Parse a payload; any problem raises MessageError with a readable reason."""
        escaped = b"\\u0000" in payload if isinstance(payload, bytes) else "\\u0000" in payload
        context = None if escaped else _NO_NUL_ESCAPE
        try:
            return cls.model_validate_json(payload, context=context)
        except ValidationError as exc:
            raise MessageError(_describe(exc)) from exc


# ``from_json``'s validation context for JSON text that cannot hold a NUL character.
_NO_NUL_ESCAPE: dict[str, bool] = {"no_nul_escape": True}


def _find_nul(value: object) -> list[str] | None:
    """The path (keys and list indexes) of the first string, key or value, with a NUL
    character, or None. Paths are built only for the one found: every event is checked."""
    if isinstance(value, str):
        return [] if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return [key]
            found = _find_nul(item)
            if found is not None:
                return [str(key), *found]
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_nul(item)
            if found is not None:
                return [str(i), *found]
    return None


def _describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "(payload)"
        parts.append(f"{loc}: {e['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class Evidence(BaseModel):
    """A JPEG snapshot (annotated frame) and optional crop, base64 in the message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jpeg_b64: str = Field(max_length=MAX_JPEG_BYTES * 4 // 3 + 4, description="annotated frame")
    crop_b64: str | None = Field(default=None, max_length=MAX_JPEG_BYTES * 4 // 3 + 4)
    width: int = Field(gt=0, le=8192)
    height: int = Field(gt=0, le=8192)

    @field_validator("jpeg_b64", "crop_b64")
    @classmethod
    def _is_jpeg(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            head = base64.b64decode(value[:8], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("not base64") from exc
        if not head.startswith(b"\xff\xd8"):
            raise ValueError("not a JPEG (missing SOI marker)")
        return value

    @classmethod
    def from_jpeg(cls, jpeg: bytes, width: int, height: int, crop: bytes | None = None) -> Evidence:
        return cls(
            jpeg_b64=base64.b64encode(jpeg).decode(),
            crop_b64=base64.b64encode(crop).decode() if crop else None,
            width=width,
            height=height,
        )

    def jpeg(self) -> bytes:
        return base64.b64decode(self.jpeg_b64)

    def crop(self) -> bytes | None:
        return base64.b64decode(self.crop_b64) if self.crop_b64 else None


class Event(Message):
    """A detection or sensor event from an edge device (``gw/v1/edge/{device}/event``)."""

    SCHEMA: ClassVar[str] = "gw.event"
    schema_: Literal["gw.event"] = Field(default="gw.event", alias="schema")

    event_id: UUID = Field(description="idempotency key: a redelivered event has the same id")
    device_id: Ident
    source_id: Ident = Field(description="the camera or sensor that saw it")
    source_type: Literal["camera", "sensor"]
    kind: Kind
    state: Literal["new", "update", "cleared"]
    seq: int = Field(
        ge=0, le=2**63 - 1, description="per-device sequence number, in publishing order"
    )
    ts: AwareDatetime = Field(description="device time of the observation")
    track_id: str | None = Field(default=None, max_length=64)
    confidence: float | None = Field(default=None, ge=0, le=1)
    bbox: NormBox | None = None
    position: GeoPoint | None = Field(default=None, description="lat/lon of the object")
    reading: float | None = Field(default=None, description="sensor value that triggered it")
    measure: str | None = Field(default=None, max_length=32)
    first_seen: AwareDatetime | None = Field(default=None, description="when the track began")
    model_version: str | None = Field(default=None, max_length=128)
    snapshot: Evidence | None = None

    @model_validator(mode="after")
    def _box_order(self) -> Event:
        if self.bbox is not None:
            x1, y1, x2, y2 = self.bbox
            if x2 <= x1 or y2 <= y1:
                raise ValueError("bbox must have x2 > x1 and y2 > y1")
        return self


class CameraStatus(BaseModel):
    """Health of one camera on an edge box."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    camera_id: Ident
    state: Literal["ok", "connecting", "reconnecting", "error", "disabled"]
    fps: float = Field(ge=0, description="frames read per second")
    inference_ms: float | None = Field(default=None, ge=0)
    skipped_ratio: float = Field(
        default=0, ge=0, le=1, description="frames the motion gate skipped"
    )
    checks: int = Field(default=0, ge=0, description="detector runs since start")
    active_tracks: int = Field(default=0, ge=0)
    last_frame: AwareDatetime | None = None
    error: str | None = Field(default=None, max_length=500)


class SensorStatus(BaseModel):
    """Last reading of one sensor on a node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensor_id: Ident
    value: float | None = None
    alarm: bool = False
    last_reading: AwareDatetime | None = None
    error: str | None = Field(default=None, max_length=500)


class DeviceStatus(Message):
    """Retained heartbeat (``gw/v1/edge/{device}/status``); the last will sets ``online`` false."""

    SCHEMA: ClassVar[str] = "gw.status"
    schema_: Literal["gw.status"] = Field(default="gw.status", alias="schema")

    device_id: Ident
    online: bool
    ts: AwareDatetime
    uptime_s: float = Field(default=0, ge=0)
    agent_version: str | None = None
    model: str | None = None
    model_version: str | None = None
    outbox_depth: int = Field(default=0, ge=0)
    outbox_evicted: int = Field(default=0, ge=0)
    config_revision: int | None = None
    cameras: tuple[CameraStatus, ...] = ()
    sensors: tuple[SensorStatus, ...] = ()
    errors: tuple[str, ...] = ()


class CameraOverride(BaseModel):
    """Live changes to one camera's settings; absent fields keep the file's values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    sample_fps: float | None = Field(default=None, gt=0, le=30)
    zones: tuple[tuple[NormPoint, ...], ...] | None = None
    masks: tuple[tuple[NormPoint, ...], ...] | None = None
    classes: dict[str, ClassRule] | None = None


class ModelRef(BaseModel):
    """Which detector model file the device should load."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1, max_length=500)
    version: str | None = None


class DeviceConfig(Message):
    """Retained configuration for a device (``gw/v1/edge/{device}/config``), written by the dispatcher."""

    SCHEMA: ClassVar[str] = "gw.config"
    schema_: Literal["gw.config"] = Field(default="gw.config", alias="schema")

    device_id: Ident
    revision: int = Field(ge=0, description="increases with every change")
    issued_at: AwareDatetime
    cameras: dict[str, CameraOverride] = Field(default_factory=dict)
    model: ModelRef | None = None
    status_interval_s: float | None = Field(default=None, gt=0, le=3600)


class Command(Message):
    """A command to a device (``gw/v1/edge/{device}/cmd``)."""

    SCHEMA: ClassVar[str] = "gw.cmd"
    schema_: Literal["gw.cmd"] = Field(default="gw.cmd", alias="schema")

    command_id: UUID
    device_id: Ident
    action: Literal["verify", "snapshot", "reload"]
    issued_at: AwareDatetime
    camera_id: Ident | None = None
    kind: Kind | None = Field(default=None, description="verify: the category to look for")
    region: NormBox | None = Field(default=None, description="verify: where the incident was")
    ticket_id: str | None = Field(default=None, max_length=64)
    checks: int = Field(default=3, ge=1, le=30, description="verify: detector runs on fresh frames")
    timeout_s: float = Field(default=30, gt=0, le=600)

    @model_validator(mode="after")
    def _verify_needs(self) -> Command:
        if self.action == "verify" and (self.camera_id is None or self.kind is None):
            raise ValueError("verify needs camera_id and kind")
        return self


class CommandResult(Message):
    """A device's answer (``gw/v1/edge/{device}/cmd/result``)."""

    SCHEMA: ClassVar[str] = "gw.cmd_result"
    schema_: Literal["gw.cmd_result"] = Field(default="gw.cmd_result", alias="schema")

    command_id: UUID
    device_id: Ident
    action: Literal["verify", "snapshot", "reload"]
    ts: AwareDatetime
    outcome: Literal["clear", "still_present", "done", "error"]
    camera_id: Ident | None = None
    ticket_id: str | None = Field(default=None, max_length=64)
    confidence: float | None = Field(default=None, ge=0, le=1)
    detail: str | None = Field(default=None, max_length=1000)
    snapshot: Evidence | None = None


TicketAction = Literal[
    "assigned", "unassigned", "reopened", "reminder", "escalated", "cancelled", "closed", "updated"
]


class TicketPush(Message):
    """A ticket sent to a worker's app (``gw/v1/worker/{worker}/tickets``)."""

    SCHEMA: ClassVar[str] = "gw.ticket"
    schema_: Literal["gw.ticket"] = Field(default="gw.ticket", alias="schema")

    ticket_id: str = Field(max_length=64)
    worker_id: Ident
    action: TicketAction
    status: str = Field(max_length=32)
    category: Kind
    priority: int = Field(ge=1, le=5)
    grid_id: str | None = None
    position: GeoPoint | None = None
    opened_at: AwareDatetime
    deadline: AwareDatetime | None = None
    note: str | None = Field(default=None, max_length=500)
    ts: AwareDatetime


class SupervisorAlert(Message):
    """A notice to a street supervisor (``gw/v1/supervisor/{id}/alerts``)."""

    SCHEMA: ClassVar[str] = "gw.alert"
    schema_: Literal["gw.alert"] = Field(default="gw.alert", alias="schema")

    supervisor_id: Ident
    ticket_id: str = Field(max_length=64)
    reason: Literal["safety", "escalated", "no_worker", "review"]
    category: Kind
    grid_id: str | None = None
    note: str | None = Field(default=None, max_length=500)
    ts: AwareDatetime


MESSAGE_TYPES: dict[str, type[Message]] = {
    m.SCHEMA: m
    for m in (
        Event,
        DeviceStatus,
        DeviceConfig,
        Command,
        CommandResult,
        TicketPush,
        SupervisorAlert,
    )
}


def parse_any(payload: bytes | str) -> Message:
    """Parse a payload whose type is named by its ``schema`` field."""
    try:
        doc = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MessageError(f"not JSON: {exc}") from exc
    except RecursionError as exc:
        raise MessageError("not JSON: nested too deeply") from exc
    if not isinstance(doc, dict):
        raise MessageError("payload must be a JSON object")
    schema = doc.get("schema")
    model = MESSAGE_TYPES.get(schema) if isinstance(schema, str) else None
    if model is None:
        shown = repr(schema) if len(repr(schema)) <= 80 else repr(schema)[:77] + "..."
        raise MessageError(f"unknown schema {shown}")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise MessageError(_describe(exc)) from exc
