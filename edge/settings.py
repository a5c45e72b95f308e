"""The edge agent's own YAML: device, broker, outbox, detector, gate, tracking, cameras, sensors.

One file per edge box (``gridwatch edge run edge.yaml``). Cameras and sensors are either
listed inline or taken from a site file (``site: path``: those whose ``device`` is this box).
Relative paths (model, outbox, site, file sources) are resolved against the folder of the
file that names them. Secrets are ``${ENV}`` placeholders. A camera entry that is invalid is
reported (file, key, what was expected) and left out; the other cameras still run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from config.loader import ConfigError, describe_validation_error, expand_env, read_yaml
from config.site import Camera, ClassRule, Identifier, Sensor

log = logging.getLogger(__name__)

# The model this distribution ships (package data of models/, located by path: edge does not
# import models/).
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "weights" / "gridwatch-det.onnx"
DEFAULT_DETECTOR: dict[str, Any] = {"type": "onnx", "model": str(SHIPPED_MODEL)}


class EdgeModel(BaseModel):
    """Base of the edge settings: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSettings(EdgeModel):
    """How this box reaches the MQTT broker; its account is its device id."""

    host: str = Field(default="127.0.0.1", title="Host", description="Broker host name or IP.")
    port: int = Field(default=1883, ge=1, le=65535, title="Port", description="Broker TCP port.")
    username: str | None = Field(
        default=None, title="Username", description="Broker account; default: the device id."
    )
    password: SecretStr = Field(title="Password", description="Use a ${ENV} placeholder.")
    tls: bool = Field(default=False, title="TLS", description="Connect with TLS.")
    ca_file: Path | None = Field(
        default=None, title="CA file", description="CA bundle for TLS; default: the system's."
    )
    keepalive_s: int = Field(
        default=20,
        ge=5,
        le=600,
        title="Keep-alive",
        description="Seconds; the last will fires "
        "about 1.5 times this long after the box vanishes.",
    )


class OutboxSettings(EdgeModel):
    """The local SQLite store-and-forward queue of everything the box publishes."""

    path: Path = Field(
        default=Path("outbox.sqlite"), title="File", description="SQLite file (WAL mode)."
    )
    max_messages: int = Field(
        default=100_000, ge=10, title="Max messages", description="Rows kept at most."
    )
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024 * 1024,
        title="Max bytes",
        description="Payload bytes kept.",
    )
    max_age_hours: float = Field(
        default=7 * 24,
        gt=0,
        title="Max age",
        description="Older messages are evicted (safety-class events excepted).",
    )
    window: int = Field(
        default=20, ge=1, le=1000, title="In flight", description="Publishes awaiting PUBACK."
    )
    ack_timeout_s: float = Field(
        default=30, gt=0, title="Ack timeout", description="Re-send a publish not acked this long."
    )
    safety_kinds: tuple[str, ...] = Field(
        default=("manhole_missing", "manhole_broken", "manhole_tilt"),
        title="Safety kinds",
        description="Event kinds evicted last: only when nothing else is left to evict.",
    )
    resend_before_loss_s: float = Field(
        default=5,
        ge=0,
        title="Resend before a lost connection",
        description=(
            "Messages the broker acknowledged this many seconds before the connection was lost"
            " are sent again after the reconnect: a broker killed before it saved them to disk"
            " (Mosquitto saves every autosave_interval) has lost them. 0: never."
        ),
    )
    resend_after_connect_s: float = Field(
        default=30,
        ge=0,
        title="Resend after a connect",
        description=(
            "Messages the broker acknowledged in the first this-many seconds after a (re)connect"
            " are sent again once they have passed: a broker that has just restarted routes"
            " them to no dispatcher until the dispatchers have subscribed again, and says so"
            " ('No matching subscribers') only if nobody else subscribes. Longer than the"
            " dispatchers' reconnect back-off. 0: never."
        ),
    )


class EvidenceSettings(EdgeModel):
    """Size bounds of the JPEG snapshot and crop attached to each ``new`` event."""

    jpeg_quality: int = Field(default=80, ge=20, le=100, title="JPEG quality")
    max_side: int = Field(
        default=960, ge=64, le=8192, title="Snapshot max side", description="Pixels."
    )
    crop_max_side: int = Field(default=320, ge=32, le=4096, title="Crop max side")
    crop_margin: float = Field(
        default=0.25, ge=0, le=2, title="Crop margin", description="Context around the box."
    )
    max_bytes: int = Field(
        default=300 * 1024,
        ge=10 * 1024,
        le=512 * 1024,
        title="Max bytes",
        description="Each JPEG is re-encoded at lower quality until it fits.",
    )


class MotionSettings(EdgeModel):
    """The cheap per-frame change measure that decides whether to run the detector."""

    enabled: bool = Field(
        default=True, title="Enabled", description="False runs the detector on every sample."
    )
    width: int = Field(
        default=160, ge=32, le=640, title="Gate width", description="Downscaled frame width."
    )
    pixel_threshold: int = Field(
        default=18, ge=1, le=255, title="Pixel threshold", description="Grey-level change."
    )
    motion_fraction: float = Field(
        default=0.003,
        gt=0,
        le=1,
        title="Motion",
        description="Share of pixels changed since the previous sample that runs the detector.",
    )
    slow_change_fraction: float = Field(
        default=0.01,
        gt=0,
        le=1,
        title="Slow change",
        description="Share of pixels changed since the last detector run that runs it again "
        "(dumping over minutes, dusk).",
    )
    static_check_s: float = Field(
        default=30,
        gt=0,
        title="Static check",
        description="Run the detector at least this often on a scene that does not change.",
    )


class TrackingSettings(EdgeModel):
    """Association across checks and the rules for ``update`` events."""

    iou_match: float = Field(
        default=0.3, gt=0, le=1, title="IoU match", description="Same object if IoU at least."
    )
    centre_match: float = Field(
        default=0.5,
        ge=0,
        le=2,
        title="Centre match",
        description="Or if centres are closer than this share of the track's box diagonal.",
    )
    update_min_interval_s: float = Field(
        default=60, ge=0, title="Update interval", description="At most one update this often."
    )
    update_conf_delta: float = Field(
        default=0.15, gt=0, le=1, title="Update on confidence", description="Change that counts."
    )
    update_iou_below: float = Field(
        default=0.5,
        gt=0,
        le=1,
        title="Update on box",
        description="An update when the box's IoU with the last reported one drops below this.",
    )
    max_check_gap_s: float = Field(
        default=10,
        gt=0,
        title="Max check gap",
        description="Absence counts at most this long between two detector runs (a stalled "
        "stream does not clear anything).",
    )
    clear_min_checks: int = Field(
        default=3, ge=1, title="Clear checks", description="Misses needed to clear, at least."
    )
    pending_check_interval_s: float = Field(
        default=0,
        ge=0,
        le=60,
        title="Pending check interval",
        description="While a track waits to be confirmed or cleared the detector runs on every "
        "sample; a value above 0 runs it at most this often instead (saves CPU on busy boxes).",
    )


class CameraOptions(EdgeModel):
    """Edge-only options of a camera (beside the site's camera fields)."""

    enabled: bool = Field(default=True, title="Enabled", description="False: do not watch it.")
    loop: bool = Field(default=False, title="Loop", description="Restart a file at its end.")
    realtime: bool = Field(
        default=True,
        title="Real time",
        description="Play a file at its own speed; false reads it as fast as possible and "
        "takes time from the video (tests, benchmarks).",
    )
    detector: dict[str, Any] | None = Field(
        default=None,
        title="Detector",
        description="This camera's detector by `type` (onnx, ultralytics, ...); default: the "
        "box's detector.",
    )
    motion: MotionSettings | None = Field(
        default=None, title="Motion gate", description="Default: the box's motion settings."
    )
    clock_origin: datetime | None = Field(
        default=None,
        title="Clock origin",
        description="A file played in real time with `loop` behaves like a live camera that "
        "started at this time: after a restart it resumes where the scene is now, not at its "
        "beginning (demos that must know what the camera shows when).",
    )
    reconnect_min_s: float = Field(default=1, gt=0, title="Reconnect backoff start")
    reconnect_max_s: float = Field(default=60, gt=0, title="Reconnect backoff cap")


class EdgeCamera(Camera, CameraOptions):
    """A camera as the agent runs it: the site's camera fields and the edge options."""


class SerialInput(EdgeModel):
    """Sensor readings as text lines on a serial port: ``<sensor_id> <value>`` or JSON."""

    type: Literal["serial"] = "serial"
    port: Path = Field(title="Port", description="Device path, e.g. /dev/ttyUSB0.")
    baud: int = Field(default=9600, title="Baud rate")


class MqttInput(EdgeModel):
    """Sensor readings from an MQTT topic of a (local) field broker."""

    type: Literal["mqtt"] = "mqtt"
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    topic: str = Field(
        default="sensors/#",
        title="Topic filter",
        description="Payload JSON {sensor, value} or a bare number on a topic ending in the "
        "sensor id.",
    )


class SimulatedInput(EdgeModel):
    """Readings from a built-in random walk (demos): occasional excursions over thresholds."""

    type: Literal["simulated"] = "simulated"
    interval_s: float = Field(default=1.0, gt=0, title="Reading interval")
    problem_rate_per_min: float = Field(default=1.0, ge=0, title="Excursions per minute")
    seed: int = 0


SensorInput = Annotated[SerialInput | MqttInput | SimulatedInput, Field(discriminator="type")]


class EdgeSettings(EdgeModel):
    """Everything one edge box needs."""

    device_id: Identifier = Field(title="Device id", description="Also the broker account.")
    broker: BrokerSettings
    outbox: OutboxSettings = OutboxSettings()
    detector: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_DETECTOR),
        title="Detector",
        description="Backend by `type` with its own keys; e.g. {type: onnx, model: x.onnx}.",
    )
    status_interval_s: float = Field(
        default=15, gt=0, le=3600, title="Status interval", description="Heartbeat period."
    )
    evidence: EvidenceSettings = EvidenceSettings()
    motion: MotionSettings = MotionSettings()
    tracking: TrackingSettings = TrackingSettings()
    classes: dict[str, ClassRule] = Field(
        default_factory=dict,
        title="Class rules",
        description="Box-wide rules per class; a camera's own `classes` override them.",
    )
    ignore_classes: tuple[str, ...] = Field(
        default=("manhole_ok",),
        title="Ignored classes",
        description="Model classes that never become events (a closed manhole is fine).",
    )
    site: Path | None = Field(
        default=None,
        title="Site file",
        description="Take cameras and sensors whose `device` is this box from a site YAML.",
    )
    camera_options: dict[str, CameraOptions] = Field(
        default_factory=dict,
        title="Camera options",
        description="Edge options per camera id, for cameras taken from the site file.",
    )
    cameras: tuple[EdgeCamera, ...] = Field(default=(), title="Cameras (inline)")
    sensors: tuple[Sensor, ...] = Field(default=(), title="Sensors (inline)")
    sensor_inputs: tuple[SensorInput, ...] = Field(
        default=(), title="Sensor inputs", description="Where readings come from."
    )

    @model_validator(mode="after")
    def _unique(self) -> EdgeSettings:
        for label, ids in (
            ("cameras", [c.id for c in self.cameras]),
            ("sensors", [s.id for s in self.sensors]),
        ):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"{label}: duplicate ids {dupes}")
        return self

    def rule_for(
        self, camera: Camera, class_name: str, model_threshold: float | None = None
    ) -> ClassRule:
        """The rule in force: the camera's, else the box's, else the defaults starting tracks
        at the model's operating threshold for the class (``model_default_rule``)."""
        configured = camera.classes.get(class_name) or self.classes.get(class_name)
        return configured if configured is not None else model_default_rule(model_threshold)

    def detector_config(self, camera: EdgeCamera) -> dict[str, Any]:
        """The camera's detector config (its own or the box's)."""
        return dict(camera.detector) if camera.detector is not None else dict(self.detector)


# A track found at the model's operating threshold is kept down to this share of it (and never
# above the default keep threshold): the same hysteresis as the defaults' 0.35 / 0.2.
KEEP_SHARE = 0.6


def model_default_rule(model_threshold: float | None) -> ClassRule:
    """The rule of a class the site does not configure: the defaults, with tracks started at
    the model's operating threshold (chosen on val, in its metadata) when it has one."""
    base = ClassRule()
    if model_threshold is None:
        return base
    keep = min(base.keep_confidence, round(KEEP_SHARE * model_threshold, 4))
    return ClassRule(min_confidence=model_threshold, keep_confidence=keep)


@dataclass(frozen=True)
class LoadedSettings:
    """A loaded edge file: the settings and the camera entries that had to be left out."""

    settings: EdgeSettings
    path: Path
    rejected_cameras: dict[str, str] = field(default_factory=dict)


def _resolve(base: Path, value: Any) -> Any:
    """A relative filesystem path made absolute against ``base``; URLs and usb:N unchanged."""
    if not isinstance(value, str | Path):
        return value
    text = str(value)
    if "://" in text or text.startswith("usb:") or text.isdigit():
        return value
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_detector(base: Path, det: Any) -> Any:
    if isinstance(det, dict) and "model" in det:
        return {**det, "model": _resolve(base, det["model"])}
    return det


def _site_devices(site_path: Path, device_id: str) -> tuple[list[Any], list[Any]]:
    """This box's camera and sensor entries from a site file (env filled in those parts only).

    Only the cameras and sensors of the box are read, so the box needs none of the other
    secrets the site file asks for (the dispatcher's password, workers' passwords).
    """
    data = read_yaml(site_path)
    if not isinstance(data, dict):
        raise ConfigError(site_path, ["(top level): expected a mapping"])
    cams: list[Any] = []
    sensors: list[Any] = []
    for label, out in (("cameras", cams), ("sensors", sensors)):
        for i, item in enumerate(data.get(label) or []):
            if isinstance(item, dict) and item.get("device") == device_id:
                item = expand_env(item, site_path, f"{label}[{i}]")
                if label == "cameras" and "source" in item:
                    item = {**item, "source": _resolve(site_path.parent, item["source"])}
                out.append(item)
    return cams, sensors


def load_edge_settings(path: Path | str) -> LoadedSettings:
    """Read and validate an edge YAML file; invalid camera entries are set aside, not fatal."""
    p = Path(path).resolve()
    data = read_yaml(p)
    if data is None:
        raise ConfigError(p, ["the file is empty"])
    if not isinstance(data, dict):
        raise ConfigError(p, ["(top level): expected a mapping"])
    data = expand_env(data, p)
    base = p.parent
    device_id = data.get("device_id")
    outbox = data.get("outbox")
    if isinstance(outbox, dict) and "path" in outbox:
        data["outbox"] = {**outbox, "path": _resolve(base, outbox["path"])}
    elif isinstance(device_id, str) and (outbox is None or isinstance(outbox, dict)):
        data["outbox"] = {
            **(outbox or {}),
            "path": str(base / f"{device_id}-outbox.sqlite"),
        }
    data["detector"] = _resolve_detector(base, data.get("detector", dict(DEFAULT_DETECTOR)))
    wrong = [
        f"{key}: expected a list (got {type(data[key]).__name__})"
        for key in ("cameras", "sensors")
        if data.get(key) is not None and not isinstance(data[key], list)
    ]
    if data.get("site") is not None and not isinstance(data["site"], str):
        wrong.append(f"site: expected a path (got {type(data['site']).__name__})")
    if wrong:
        raise ConfigError(p, wrong)
    raw_cams: list[tuple[str, Any]] = []
    for i, cam in enumerate(data.get("cameras") or []):
        if isinstance(cam, dict):
            cam = {"device": device_id, **cam}
            if "source" in cam:
                cam["source"] = _resolve(base, cam["source"])
            if "detector" in cam:
                cam["detector"] = _resolve_detector(base, cam["detector"])
        raw_cams.append((f"cameras[{i}]", cam))
    sensors = list(data.get("sensors") or [])
    if data.get("site") is not None:
        site_path = Path(_resolve(base, data["site"]))
        data["site"] = str(site_path)
        if not isinstance(device_id, str):
            raise ConfigError(p, ["device_id: needed to pick this box's cameras from the site"])
        site_cams, site_sensors = _site_devices(site_path, device_id)
        options = data.get("camera_options") or {}
        for j, cam in enumerate(site_cams):
            extra = options.get(cam.get("id"), {}) if isinstance(options, dict) else {}
            if isinstance(extra, dict) and "detector" in extra:
                extra = {**extra, "detector": _resolve_detector(base, extra["detector"])}
            merged = {**cam, **extra} if isinstance(extra, dict) else cam
            raw_cams.append((f"{site_path.name}: cameras of {device_id}[{j}]", merged))
        sensors += site_sensors
    data["sensors"] = sensors
    good: list[Any] = []
    rejected: dict[str, str] = {}
    for where, cam in raw_cams:
        try:
            EdgeCamera.model_validate(cam)
            good.append(cam)
        except ValidationError as exc:
            cam_id = cam.get("id") if isinstance(cam, dict) else None
            problems = [f"{where}.{line}" for line in describe_validation_error(exc)]
            message = f"invalid camera in {p}: " + "; ".join(problems)
            log.error("%s", message, extra={"camera_id": cam_id})
            rejected[str(cam_id) if cam_id else where] = message
    data["cameras"] = good
    try:
        settings = EdgeSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(p, describe_validation_error(exc)) from exc
    return LoadedSettings(settings=settings, path=p, rejected_cameras=rejected)


def parse_settings(data: Mapping[str, Any], where: str = "(inline)") -> EdgeSettings:
    """Validate an already-parsed mapping (tests, benchmarks); errors name the key."""
    try:
        return EdgeSettings.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(Path(where), describe_validation_error(exc)) from exc


__all__ = [
    "BrokerSettings",
    "CameraOptions",
    "EdgeCamera",
    "EdgeSettings",
    "EvidenceSettings",
    "LoadedSettings",
    "MotionSettings",
    "OutboxSettings",
    "TrackingSettings",
    "load_edge_settings",
    "parse_settings",
]
