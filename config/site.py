"""The site: street office, streets, grid cells, workers and shifts, categories, devices, cameras, sensors."""

from __future__ import annotations

import json
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from shapely.geometry import Polygon, shape

from config.loader import ConfigError, expand_env, read_yaml, refuse_literal_secrets, validate

Identifier = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="lower-case id: letters, digits, - _"),
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GeoPoint(StrictModel):
    """A WGS-84 position."""

    lat: float = Field(ge=-90, le=90, title="Latitude", description="degrees north")
    lon: float = Field(ge=-180, le=180, title="Longitude", description="degrees east")


class Street(StrictModel):
    """A street (社区/街巷) under the office; a supervisor watches the grid cells of one street."""

    id: Identifier
    name: str = Field(min_length=1, description="Chinese name shown in the UI")
    name_en: str = Field(min_length=1, description="English name")


class GridCell(StrictModel):
    """One grid cell (网格): a polygon of streets owned by one or more workers."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    id: Identifier
    name: str
    name_en: str
    street: Identifier
    polygon: Polygon = Field(exclude=True, description="boundary, lon/lat order as in GeoJSON")
    neighbours: tuple[Identifier, ...] = Field(
        default=(), description="cells whose workers may cover this one when nobody is on duty"
    )


class BreakPeriod(StrictModel):
    """A pause inside a shift during which the worker gets no new tickets."""

    start: time
    end: time


class Shift(StrictModel):
    """A weekly recurring shift in the site's time zone; may run past midnight."""

    days: tuple[Weekday, ...] = Field(
        min_length=1, description="weekdays on which the shift starts"
    )
    start: time = Field(description="local start time, HH:MM")
    end: time = Field(description="local end time, HH:MM; earlier than start means next day")
    breaks: tuple[BreakPeriod, ...] = ()

    @model_validator(mode="after")
    def _not_empty(self) -> Shift:
        if self.start == self.end:
            raise ValueError("a shift needs different start and end times")
        return self


class Worker(StrictModel):
    """A grid worker (网格员) with a phone."""

    id: Identifier
    name: str
    grid: Identifier = Field(description="home grid cell")
    phone: str = Field(pattern=r"^\+?[0-9 -]{5,20}$")
    shifts: tuple[Shift, ...] = Field(min_length=1)
    password: SecretStr | None = Field(
        default=None, description="initial web-app password; use a ${ENV} placeholder"
    )


class Supervisor(StrictModel):
    """A street supervisor; sees the grid cells of their streets."""

    id: Identifier
    name: str
    streets: tuple[Identifier, ...] = Field(min_length=1)
    phone: str = Field(pattern=r"^\+?[0-9 -]{5,20}$")
    password: SecretStr | None = Field(default=None, description="use a ${ENV} placeholder")


CategorySource = Literal["camera", "sensor", "citizen"]


class Category(StrictModel):
    """A kind of problem: how urgent it is, its SLA and how incidents of it merge and close."""

    label: str = Field(description="Chinese label")
    label_en: str = Field(description="English label")
    priority: int = Field(ge=1, le=5, description="1 is most urgent")
    sla_minutes: int = Field(gt=0, description="time from opening to verified closure")
    accept_timeout_minutes: float = Field(gt=0, description="reassign if not accepted in time")
    remind_before_minutes: float = Field(default=15, ge=0, description="reminder before the SLA")
    merge_radius_m: float = Field(default=30, gt=0, le=1000)
    merge_window_minutes: float = Field(default=720, gt=0)
    notify_supervisor: bool = Field(default=False, description="tell the supervisor at once")
    verify: Literal["camera", "sensor", "photo"] = Field(
        default="camera",
        description="closure needs the camera's re-check, the sensor's clear reading, or the photo",
    )
    verify_timeout_seconds: float = Field(default=120, gt=0)
    on_no_verification: Literal["accept_with_photo", "supervisor_review"] = "accept_with_photo"
    sources: tuple[CategorySource, ...] = ("camera",)
    open311_code: str | None = Field(default=None, description="service_code for citizen reports")


class Device(StrictModel):
    """A box that talks to the broker: an edge box with cameras, or a sensor node."""

    id: Identifier
    kind: Literal["edge", "sensor_node"]
    password: SecretStr = Field(description="MQTT password; use a ${ENV} placeholder")


class ClassRule(StrictModel):
    """Per-class detection thresholds and temporal confirmation on one camera."""

    min_confidence: float = Field(default=0.35, ge=0, le=1, description="to start a track")
    keep_confidence: float = Field(default=0.2, ge=0, le=1, description="to keep a track")
    min_area: float = Field(default=0.0005, ge=0, le=1, description="box area / frame area")
    confirm_hits: int = Field(default=3, ge=1, description="K: seen in K of the last N checks")
    confirm_checks: int = Field(default=5, ge=1, description="N")
    confirm_seconds: float = Field(default=10, ge=0, description="T: the K hits span this long")
    clear_seconds: float = Field(default=20, gt=0, description="absent this long to clear")

    @model_validator(mode="after")
    def _consistent(self) -> ClassRule:
        if self.keep_confidence > self.min_confidence:
            raise ValueError("keep_confidence must not exceed min_confidence (hysteresis)")
        if self.confirm_hits > self.confirm_checks:
            raise ValueError("confirm_hits cannot exceed confirm_checks")
        return self


NormPoint = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]


class GroundPlane(StrictModel):
    """Four image points (normalised x, y) and the lat/lon of the same four ground points."""

    image: tuple[NormPoint, NormPoint, NormPoint, NormPoint]
    geo: tuple[GeoPoint, GeoPoint, GeoPoint, GeoPoint]


class Camera(StrictModel):
    """A street camera served by an edge box."""

    id: Identifier
    device: Identifier = Field(description="the edge box that reads this camera")
    name: str
    position: GeoPoint
    source: str = Field(description="file path, rtsp:// or http:// URL, usb:N, or a folder")
    sample_fps: float = Field(default=2, gt=0, le=30)
    ground_plane: GroundPlane
    zones: tuple[tuple[NormPoint, ...], ...] = Field(
        default=(), description="report only inside these polygons (empty: whole frame)"
    )
    masks: tuple[tuple[NormPoint, ...], ...] = Field(default=(), description="ignore these regions")
    classes: dict[str, ClassRule] = Field(default_factory=dict, description="per-class rules")

    @field_validator("zones", "masks")
    @classmethod
    def _polygons(cls, v: tuple[tuple[NormPoint, ...], ...]) -> tuple[tuple[NormPoint, ...], ...]:
        for poly in v:
            if len(poly) < 3:
                raise ValueError("a polygon needs at least 3 points")
        return v


class Sensor(StrictModel):
    """An IoT sensor on a sensor node: a manhole tilt meter, a bin fill gauge, a water level."""

    id: Identifier
    device: Identifier
    kind: str = Field(description="category key raised when the threshold is crossed")
    measure: Literal["tilt_deg", "displacement_mm", "fill_pct", "water_cm"]
    position: GeoPoint
    threshold: float = Field(description="raise at or above this value")
    clear_below: float = Field(description="clear below this value (hysteresis)")
    debounce_seconds: float = Field(default=10, ge=0)

    @model_validator(mode="after")
    def _hysteresis(self) -> Sensor:
        if self.clear_below > self.threshold:
            raise ValueError("clear_below must be at or below threshold")
        return self


class BrokerEndpoint(StrictModel):
    """Where the MQTT broker listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    tls: bool = False
    ca_file: Path | None = None
    dispatcher_password: SecretStr = Field(description="the dispatcher's MQTT password; ${ENV}")


class Office(StrictModel):
    """The street office (街道办) that runs this site."""

    id: Identifier
    name: str
    name_en: str
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class NoWorkerPolicy(StrictModel):
    """What to do with a ticket when nobody in its grid cell is on duty."""

    fallback: Literal["neighbour_then_supervisor", "supervisor"] = "neighbour_then_supervisor"


class Site(StrictModel):
    """Everything the dispatcher and the devices need to know about one street office's area."""

    office: Office
    broker: BrokerEndpoint
    streets: tuple[Street, ...] = Field(min_length=1)
    grids_file: Path = Field(description="GeoJSON FeatureCollection of grid cells, relative path")
    grids: tuple[GridCell, ...] = Field(default=(), description="filled from grids_file")
    categories: dict[Identifier, Category] = Field(min_length=1)
    workers: tuple[Worker, ...] = Field(min_length=1)
    supervisors: tuple[Supervisor, ...] = Field(default=())
    no_worker: NoWorkerPolicy = NoWorkerPolicy()
    devices: tuple[Device, ...] = ()
    cameras: tuple[Camera, ...] = ()
    sensors: tuple[Sensor, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> Site:
        problems: list[str] = []
        streets = {s.id for s in self.streets}
        grids = {g.id for g in self.grids}
        devices = {d.id: d for d in self.devices}
        for label, items in (
            ("streets", self.streets),
            ("grids", self.grids),
            ("workers", self.workers),
            ("supervisors", self.supervisors),
            ("devices", self.devices),
            ("cameras", self.cameras),
            ("sensors", self.sensors),
        ):
            ids = [i.id for i in items]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                problems.append(f"{label}: duplicate ids {dupes}")
        if not self.grids:
            problems.append("grids_file: holds no grid cells")
        for g in self.grids:
            if g.street not in streets:
                problems.append(f"grids[{g.id}].street: unknown street {g.street!r}")
            problems += [
                f"grids[{g.id}].neighbours: unknown grid {n!r}"
                for n in g.neighbours
                if n not in grids
            ]
        for i, w in enumerate(self.workers):
            if w.grid not in grids:
                problems.append(f"workers[{i}].grid: unknown grid cell {w.grid!r}")
        for i, s in enumerate(self.supervisors):
            problems += [
                f"supervisors[{i}].streets: unknown street {st!r}"
                for st in s.streets
                if st not in streets
            ]
        for i, c in enumerate(self.cameras):
            dev = devices.get(c.device)
            if dev is None or dev.kind != "edge":
                problems.append(f"cameras[{i}].device: {c.device!r} is not an edge device")
            problems += [
                f"cameras[{i}].classes: unknown category {k!r}"
                for k in c.classes
                if k not in self.categories and k != "manhole_ok"
            ]
        for i, sensor in enumerate(self.sensors):
            dev = devices.get(sensor.device)
            if dev is None or dev.kind != "sensor_node":
                problems.append(
                    f"sensors[{i}].device: {sensor.device!r} is not a sensor_node device"
                )
            if sensor.kind not in self.categories:
                problems.append(f"sensors[{i}].kind: unknown category {sensor.kind!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.office.timezone)

    def grid(self, grid_id: str) -> GridCell:
        return next(g for g in self.grids if g.id == grid_id)

    def device(self, device_id: str) -> Device | None:
        return next((d for d in self.devices if d.id == device_id), None)

    def cameras_of(self, device_id: str) -> tuple[Camera, ...]:
        return tuple(c for c in self.cameras if c.device == device_id)

    def sensors_of(self, device_id: str) -> tuple[Sensor, ...]:
        return tuple(s for s in self.sensors if s.device == device_id)

    def local_time(self, at: datetime) -> datetime:
        return at.astimezone(self.tz)


def read_grids(path: Path) -> list[dict[str, Any]]:
    """Read grid cells from a GeoJSON FeatureCollection of Polygons with id/name/street properties."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(path, [f"cannot read grid file: {exc.strerror or exc}"]) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(path, [f"line {exc.lineno}: invalid JSON: {exc.msg}"]) from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise ConfigError(path, ["(top level): expected a GeoJSON FeatureCollection"])
    cells: list[dict[str, Any]] = []
    problems: list[str] = []
    features = doc.get("features") or []
    if not isinstance(features, list):
        raise ConfigError(path, ["features: expected a list of GeoJSON Features"])
    for i, feat in enumerate(features):
        props = feat.get("properties") if isinstance(feat, dict) else None
        if not isinstance(feat, dict) or not isinstance(props or {}, dict):
            problems.append(f"features[{i}]: expected a Feature object with properties")
            continue
        props = props or {}
        try:
            geom = shape(feat["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"features[{i}].geometry: not a valid GeoJSON geometry ({exc})")
            continue
        if not isinstance(geom, Polygon) or not geom.is_valid:
            problems.append(
                f"features[{i}].geometry: expected a valid Polygon, got {geom.geom_type}"
            )
            continue
        cells.append({**props, "polygon": geom})
    if problems:
        raise ConfigError(path, problems)
    return cells


def load_site(path: Path | str) -> Site:
    """Load and validate a site YAML file and the GeoJSON grid file it names. Secrets (the
    passwords) must be ``${ENV}`` placeholders, filled from the environment: a value written
    into the file is refused."""
    p = Path(path)
    data = read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(p, ["(top level): expected a mapping of site settings"])
    refuse_literal_secrets(Site, data, p)
    data = expand_env(data, p)
    grids_file = data.get("grids_file")
    if isinstance(grids_file, str) and not data.get("grids"):
        gpath = (p.parent / grids_file).resolve()
        data = {**data, "grids_file": gpath, "grids": read_grids(gpath)}
    return validate(Site, data, p)


SAMPLE_SITE = Path(__file__).parent / "sample" / "site.yaml"
