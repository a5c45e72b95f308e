"""The metadata record that travels with a model: classes, input size, thresholds, provenance."""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger(__name__)

METADATA_KEY = "gridwatch"  # key of the JSON record inside the ONNX file's metadata_props
SCHEMA = "gridwatch.detector-model"


class ModelMetadata(BaseModel):
    """What the edge needs to run a model and to say which model produced an event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: Literal["gridwatch.detector-model"] = Field(
        default="gridwatch.detector-model",
        alias="schema",
        title="Schema",
        description="Record type.",
    )
    v: Literal[1] = Field(default=1, title="Version", description="Record schema version.")
    model_version: str = Field(
        min_length=1, title="Model version", description="Name of this build, sent with events."
    )
    architecture: str = Field(default="unknown", description="Network family and size: yolov8s.")
    layout: Literal["yolov8"] = Field(
        default="yolov8",
        description="Output layout; yolov8: one tensor (1, 4 + classes, anchors), xywh, scores.",
    )
    classes: list[str] = Field(min_length=1, description="Class names in output order.")
    input_size: tuple[int, int] = Field(description="Network input (height, width) in pixels.")
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="Operating confidence threshold per class name."
    )
    iou: float = Field(default=0.7, ge=0.0, le=1.0, description="NMS IoU threshold.")
    precision: Literal["fp32", "fp16", "int8"] = Field(default="fp32", description="Weights type.")
    training_data: list[str] = Field(default_factory=list, description="Data sets it learnt from.")
    commit: str | None = Field(default=None, description="Source commit that built it.")
    created: datetime | None = Field(default=None, description="When it was exported (UTC).")
    notes: str = Field(default="", description="Free text, e.g. the model card's summary.")

    @model_validator(mode="after")
    def _thresholds_name_known_classes(self) -> ModelMetadata:
        unknown = set(self.thresholds) - set(self.classes)
        if unknown:
            raise ValueError(f"thresholds for unknown classes: {sorted(unknown)}")
        bad = {k: t for k, t in self.thresholds.items() if not 0.0 <= t <= 1.0}
        if bad:
            raise ValueError(f"thresholds outside [0, 1]: {bad}")
        return self

    def to_json(self) -> str:
        """The record as pretty JSON (the sidecar file's content)."""
        return self.model_dump_json(by_alias=True, indent=2)


class ModelMetadataError(ValueError):
    """A model has no usable metadata record, or the record is invalid."""


def sidecar_path(model_path: Path) -> Path:
    """Where the JSON record sits next to a model file: same name, ``.json``."""
    return model_path.with_suffix(".json")


def from_ultralytics_props(props: Mapping[str, str], model_path: Path) -> ModelMetadata:
    """A record from the metadata ultralytics writes into an exported ONNX (names, imgsz)."""
    try:
        names = ast.literal_eval(props["names"])
        imgsz = ast.literal_eval(props["imgsz"])
    except (KeyError, ValueError, SyntaxError) as exc:
        raise ModelMetadataError(f"{model_path}: no usable class names/input size ({exc})") from exc
    classes = [names[i] for i in sorted(names)]
    return ModelMetadata(
        model_version=model_path.stem,
        classes=classes,
        input_size=(int(imgsz[0]), int(imgsz[1])),
        notes=props.get("description", ""),
    )


def read_model_metadata(model_path: Path, props: Mapping[str, str]) -> ModelMetadata:
    """The model's record: its sidecar JSON, else the embedded record, else ultralytics' props."""
    sidecar = sidecar_path(model_path)
    try:
        if sidecar.is_file():
            return ModelMetadata.model_validate(json.loads(sidecar.read_text(encoding="utf-8")))
        if METADATA_KEY in props:
            return ModelMetadata.model_validate(json.loads(props[METADATA_KEY]))
    except (ValidationError, json.JSONDecodeError) as exc:
        raise ModelMetadataError(f"{model_path}: invalid metadata record: {exc}") from exc
    log.warning("model %s has no gridwatch metadata; using ultralytics' names/imgsz", model_path)
    return from_ultralytics_props(props, model_path)
