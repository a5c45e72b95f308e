"""Optional backend: run a .pt (or .onnx) model through ultralytics; needs the ``train`` extra."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edge.detect.base import (
    Detection,
    Detector,
    DetectorConfig,
    FrameBGR,
    class_filter,
    register_backend,
    resolve_thresholds,
)
from edge.detect.metadata import ModelMetadata, sidecar_path

log = logging.getLogger(__name__)


def ultralytics_offline(config_dir: Path | None = None) -> Path:
    """Set ultralytics' offline switches; call before ``import ultralytics``.

    ``YOLO_OFFLINE`` stops every download (hub weights, fonts, assets), ``YOLO_AUTOINSTALL``
    stops its pip installs of missing requirements, ``YOLO_CONFIG_DIR`` keeps its settings file
    out of the home directory: ``config_dir``, else an existing ``YOLO_CONFIG_DIR``, else
    ``$XDG_CACHE_HOME/gridwatch/ultralytics``. Returns the folder used.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    if config_dir is None:
        existing = os.environ.get("YOLO_CONFIG_DIR")
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        config_dir = Path(existing) if existing else cache / "gridwatch" / "ultralytics"
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    return config_dir


class UltralyticsDetectorConfig(DetectorConfig):
    """Settings of the ultralytics backend."""

    type: Literal["ultralytics"] = Field(
        default="ultralytics", title="Backend", description="Always 'ultralytics'."
    )
    model: Path = Field(title="Model file", description="A .pt checkpoint or an exported .onnx.")
    imgsz: int | None = Field(
        default=None,
        ge=32,
        le=4096,
        title="Input size",
        description="Square network input; default: the metadata's, else the checkpoint's.",
    )
    device: str = Field(default="cpu", description="Torch device, e.g. 'cpu' or '0'.")


class UltralyticsDetector(Detector):
    """ultralytics' own predictor, for checkpoints and as a reference for the onnx backend."""

    def __init__(self, config: UltralyticsDetectorConfig) -> None:
        ultralytics_offline()
        from ultralytics import YOLO  # type: ignore[attr-defined]  # heavy and optional: imported only when this backend is used

        if not config.model.is_file():
            raise FileNotFoundError(f"detector model not found: {config.model}")
        self.config = config
        self._model: Any = YOLO(str(config.model), task="detect")
        names = self._model.names
        self._classes = tuple(str(names[i]) for i in sorted(names))
        sidecar = sidecar_path(config.model)
        meta = (
            ModelMetadata.model_validate_json(sidecar.read_text(encoding="utf-8"))
            if sidecar.is_file()
            else None
        )
        thresholds = meta.thresholds if meta else {}
        self._operating = dict(thresholds)
        ckpt_args = getattr(self._model.model, "args", None) or {}
        imgsz = config.imgsz or (meta.input_size[0] if meta else int(ckpt_args.get("imgsz", 640)))
        self._imgsz = imgsz
        self._iou = self.config.iou if self.config.iou is not None else (meta.iou if meta else 0.7)
        self._version = meta.model_version if meta else config.model.stem
        self._thresholds = resolve_thresholds(self._classes, thresholds, config)
        self._wanted = class_filter(self._classes, config)
        log.info("ultralytics detector %s: imgsz=%s", self._version, imgsz)

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def input_size(self) -> tuple[int, int]:
        return (self._imgsz, self._imgsz)

    @property
    def model_version(self) -> str:
        return self._version

    @property
    def operating_thresholds(self) -> Mapping[str, float]:
        return self._operating

    def detect(self, frame_bgr: FrameBGR) -> list[Detection]:
        result = self._model.predict(
            frame_bgr,
            conf=float(self._thresholds.min()),
            iou=self._iou,
            imgsz=self._imgsz,
            max_det=self.config.max_det,
            device=self.config.device,
            verbose=False,
        )[0]
        boxes = result.boxes
        xyxy = boxes.xyxy.cpu().numpy().astype(np.float32)
        conf = boxes.conf.cpu().numpy().astype(np.float32)
        cls = boxes.cls.cpu().numpy().astype(np.int64)
        keep = (conf > self._thresholds[cls]) & self._wanted[cls]
        return [
            Detection(
                class_name=self._classes[int(c)],
                class_id=int(c),
                confidence=float(s),
                x1=float(b[0]),
                y1=float(b[1]),
                x2=float(b[2]),
                y2=float(b[3]),
            )
            for b, s, c in zip(xyxy[keep], conf[keep], cls[keep], strict=True)
        ]


register_backend("ultralytics", UltralyticsDetectorConfig, UltralyticsDetector)
