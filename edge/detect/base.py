"""The detector interface the edge agent runs: ``Detection``, ``Detector`` and the backend registry.

How to use it::

    from edge.detect import build_detector

    detector = build_detector({"type": "onnx", "model": "models/weights/gridwatch-det.onnx"})
    for d in detector.detect(frame_bgr):          # frame: HxWx3 uint8, BGR (as OpenCV reads it)
        print(d.class_name, d.confidence, d.xyxy)   # box in frame pixels

- ``Detection`` is one finding: class name and id, confidence, and the box ``x1, y1, x2, y2``
  in pixels of the frame that was passed in (clipped to it).
- ``Detector`` is what every backend implements: ``detect(frame_bgr) -> list[Detection]``
  (sorted by confidence, highest first, already thresholded per class), plus ``classes``
  (the model's class names in id order), ``input_size`` ((height, width) of the network input)
  and ``model_version`` (a string that goes into events and heartbeats). ``close()`` frees it.
- Backends are plugins keyed by ``type``. A backend module in this package (or anywhere) calls
  ``register_backend(key, ConfigClass, factory)`` at import time; its config class is a pydantic
  model with ``extra="forbid"`` and a ``type: Literal[key]`` field. ``build_detector`` imports
  ``edge.detect.<key>`` (or ``edge.detect.<key>_backend``) on first use, so adding a backend
  (for example OpenVINO) is one new module and nothing else. No backend imports torch or
  ultralytics at module level.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

FrameBGR = NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object: what it is, how sure, and where (frame pixels, x1 < x2, y1 < y2)."""

    class_name: str
    class_id: int
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """The box as ``(x1, y1, x2, y2)`` in frame pixels."""
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    def normalised(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The box as fractions of a ``width`` x ``height`` frame, ``(x1, y1, x2, y2)``."""
        return (self.x1 / width, self.y1 / height, self.x2 / width, self.y2 / height)


class DetectorConfig(BaseModel):
    """Settings every backend shares; a backend's own config class extends this one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(title="Backend", description="Which backend runs the model, e.g. 'onnx'.")
    conf: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        title="Confidence threshold",
        description="One threshold for all classes; default: the model's per-class operating "
        "thresholds from its metadata.",
    )
    class_conf: dict[str, float] = Field(
        default_factory=dict,
        title="Per-class thresholds",
        description="Overrides for single classes by name, e.g. {'garbage': 0.4}.",
    )
    iou: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        title="NMS IoU",
        description="IoU above which NMS suppresses; default: the model's (metadata), else 0.7.",
    )
    max_det: int = Field(default=300, ge=1, title="Max detections", description="Per frame.")
    classes: list[str] | None = Field(
        default=None,
        title="Class filter",
        description="Report only these class names; default: all the model's classes.",
    )


C = TypeVar("C", bound=DetectorConfig)


class Detector(ABC):
    """A loaded model that turns a BGR frame into detections."""

    @property
    @abstractmethod
    def classes(self) -> tuple[str, ...]:
        """Class names in model id order."""

    @property
    @abstractmethod
    def input_size(self) -> tuple[int, int]:
        """Network input as ``(height, width)`` pixels."""

    @property
    @abstractmethod
    def model_version(self) -> str:
        """A short string naming the model build, carried in events."""

    @property
    def operating_thresholds(self) -> Mapping[str, float]:
        """The model's own per-class operating thresholds (its metadata: best F1 on val);
        empty when the model carries none. The camera starts tracks at these unless the site
        configures a class's ``min_confidence``."""
        return {}

    @abstractmethod
    def detect(self, frame_bgr: FrameBGR) -> list[Detection]:
        """Detections in ``frame_bgr`` (HxWx3 uint8 BGR), highest confidence first."""

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing to free
        """Release the model; the detector must not be used afterwards."""


@dataclass(frozen=True, slots=True)
class Backend(Generic[C]):
    """A registered backend: its key, its config class and how to build it from a config."""

    key: str
    config: type[C]
    factory: Callable[[C], Detector]


_REGISTRY: dict[str, Backend[Any]] = {}


class DetectorConfigError(ValueError):
    """A detector config names an unknown backend or has invalid fields."""


def register_backend(key: str, config: type[C], factory: Callable[[C], Detector]) -> None:
    """Make backend ``key`` available to ``build_detector``; called by each backend module."""
    existing = _REGISTRY.get(key)
    if existing is not None and (existing.config is not config or existing.factory is not factory):
        log.warning("detector backend %s registered again; the new one replaces the old", key)
    _REGISTRY[key] = Backend(key=key, config=config, factory=factory)


def _load_backend_module(key: str) -> None:
    """Import the module that registers ``key``: ``edge.detect.<key>`` or ``<key>_backend``."""
    for name in (f"{__package__}.{key}", f"{__package__}.{key}_backend"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        if key in _REGISTRY:
            return


def get_backend(key: str) -> Backend[Any]:
    """The backend registered under ``key``, importing its module on first use."""
    if key not in _REGISTRY and key.isidentifier():
        _load_backend_module(key)
    try:
        return _REGISTRY[key]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none loaded"
        raise DetectorConfigError(
            f"unknown detector type {key!r} (registered: {known}; built in: onnx, ultralytics)"
        ) from None


def parse_detector_config(raw: Mapping[str, Any] | DetectorConfig) -> DetectorConfig:
    """Validate a detector config (a mapping with a ``type`` key) with its backend's class."""
    if isinstance(raw, DetectorConfig):
        return raw
    key = raw.get("type")
    if not isinstance(key, str):
        raise DetectorConfigError("detector config needs a 'type' (e.g. 'onnx')")
    backend = get_backend(key)
    try:
        parsed: DetectorConfig = backend.config.model_validate(dict(raw))
        return parsed
    except ValidationError as exc:
        raise DetectorConfigError(f"invalid {key!r} detector config: {exc}") from exc


def build_detector(raw: Mapping[str, Any] | DetectorConfig) -> Detector:
    """Build the detector a config asks for (validated by its backend's config class)."""
    config = parse_detector_config(raw)
    backend = get_backend(config.type)
    if not isinstance(config, backend.config):
        config = backend.config.model_validate(config.model_dump())
    return backend.factory(config)


def resolve_thresholds(
    classes: tuple[str, ...],
    model_thresholds: Mapping[str, float],
    config: DetectorConfig,
    default: float = 0.25,
) -> NDArray[np.float32]:
    """Per-class thresholds: config ``class_conf``, else ``conf``, else model, else default."""
    out = np.empty(len(classes), dtype=np.float32)
    unknown = set(config.class_conf) - set(classes)
    if unknown:
        raise DetectorConfigError(f"class_conf names classes the model lacks: {sorted(unknown)}")
    for i, name in enumerate(classes):
        if name in config.class_conf:
            out[i] = config.class_conf[name]
        elif config.conf is not None:
            out[i] = config.conf
        else:
            out[i] = model_thresholds.get(name, default)
    return out


def class_filter(classes: tuple[str, ...], config: DetectorConfig) -> NDArray[np.bool_]:
    """A mask over class ids: True where the config wants the class reported."""
    if config.classes is None:
        return np.ones(len(classes), dtype=bool)
    unknown = set(config.classes) - set(classes)
    if unknown:
        raise DetectorConfigError(f"classes names classes the model lacks: {sorted(unknown)}")
    return np.array([c in config.classes for c in classes], dtype=bool)
