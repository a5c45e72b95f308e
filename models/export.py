"""Export a trained checkpoint to the ONNX file the edge runs, with its metadata record.

``export_model`` writes ``<out>.onnx`` (fixed input size, batch 1, YOLOv8 output layout) at
fp32, fp16 (weights only; inputs/outputs stay float32) or int8 (onnxruntime static QDQ
quantization of the convolutions, calibrated on training images; the head's decode stays
float), embeds the metadata record in the file and writes it beside as ``<out>.json``.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.detect.letterbox import letterbox, to_input_tensor
from edge.detect.metadata import METADATA_KEY, ModelMetadata, sidecar_path
from models.offline import configure_offline
from models.provenance import git_commit

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]


class ExportSpec(BaseModel):
    """What to export and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: Path = Field(description="The trained .pt checkpoint.")
    out: Path = Field(description="The .onnx file to write (metadata goes beside as .json).")
    imgsz: int = Field(default=320, ge=32, le=1280, description="Square input size.")
    precision: Precision = Field(default="fp32")
    model_version: str = Field(min_length=1, description="Name carried in events.")
    thresholds: dict[str, float] = Field(default_factory=dict)
    iou: float = Field(default=0.7, ge=0, le=1)
    training_data: list[str] = Field(default_factory=list)
    calibration_images: list[Path] = Field(
        default_factory=list, description="Images for int8 calibration (training split)."
    )
    notes: str = ""
    opset: int | None = Field(default=None, description="ONNX opset; default: ultralytics' choice.")
    architecture: str | None = Field(default=None, description="e.g. yolov8s; default: guessed.")


class CalibrationReader:
    """Feeds letterboxed images to onnxruntime's static quantizer."""

    def __init__(self, images: Sequence[Path], input_name: str, imgsz: int) -> None:
        self._images = list(images)
        self._name = input_name
        self._imgsz = imgsz
        self._i = 0

    def get_next(self) -> dict[str, Any] | None:
        while self._i < len(self._images):
            path = self._images[self._i]
            self._i += 1
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                log.warning("calibration image unreadable: %s", path)
                continue
            img, _ = letterbox(np.asarray(frame, dtype=np.uint8), (self._imgsz, self._imgsz))
            return {self._name: to_input_tensor(img)}
        return None

    def rewind(self) -> None:
        self._i = 0


def export_fp32(weights: Path, imgsz: int, workdir: Path, opset: int | None = None) -> Path:
    """ultralytics' ONNX export (simplified, batch 1) into ``workdir``, with dynamic height and
    width: the edge letterboxes a camera's frames to the smallest input that holds them
    (``OnnxDetectorConfig.rect``); ``imgsz`` is the square the model was trained and is
    evaluated at (its ``input_size``)."""
    configure_offline()
    from ultralytics import YOLO  # type: ignore[attr-defined]

    local = workdir / weights.name
    shutil.copyfile(weights, local)
    kwargs: dict[str, Any] = {
        "format": "onnx",
        "imgsz": imgsz,
        "simplify": True,
        "dynamic": True,
        "batch": 1,
        "device": "cpu",
    }
    if opset is not None:
        kwargs["opset"] = opset
    out = YOLO(str(local), task="detect").export(**kwargs)
    return Path(out)


def to_fp16(src: Path, dst: Path) -> None:
    """Weights to float16, inputs/outputs kept float32 (onnxruntime's converter)."""
    import onnx
    from onnxruntime.transformers import float16

    model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def int8_excluded_nodes(graph_nodes: Sequence[Any]) -> list[str]:
    """Nodes kept in float: everything but Conv, the first Conv (the image stem), the head's
    last box/class convs and the DFL conv (its input is a softmax; one int8 scale ruins it).

    Measured on the epoch-1 checkpoint (street-garbage val AP50): fp32 0.628; all convs int8
    with MinMax 0.497; head kept float 0.499; plus the stem conv kept float 0.612; with
    99.999th-percentile calibration 0.634.
    """
    convs = [n.name for n in graph_nodes if n.op_type == "Conv"]
    keep_float = {n.name for n in graph_nodes if n.op_type != "Conv"}
    keep_float.update(convs[:1])
    keep_float.update(c for c in convs if "/dfl/" in c or re.search(r"cv[23]\.\d+\.2/Conv$", c))
    return sorted(keep_float)


def to_int8(src: Path, dst: Path, calibration: Sequence[Path], imgsz: int) -> None:
    """Static QDQ int8 (per-channel weights, uint8 activations, percentile calibration)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise ValueError("int8 export needs calibration images")
    model = onnx.load(str(src))
    input_name = model.graph.input[0].name
    exclude = int8_excluded_nodes(list(model.graph.node))
    del model
    quantize_static(
        str(src),
        str(dst),
        CalibrationReader(calibration, input_name, imgsz),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.Percentile,
        nodes_to_exclude=exclude,
        # histograms of every tensor for every image do not fit in RAM: collect in chunks
        extra_options={"CalibPercentile": 99.999, "CalibMaxIntermediateOutputs": 16},
    )


def write_metadata(onnx_path: Path, meta: ModelMetadata) -> None:
    """Embed the record in the ONNX file's metadata_props and write the sidecar JSON."""
    import onnx

    model = onnx.load(str(onnx_path))
    props = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.model_dump_json(by_alias=True)
    onnx.save(model, str(onnx_path))
    sidecar_path(onnx_path).write_text(meta.to_json() + "\n", encoding="utf-8")


def classes_of(weights: Path) -> list[str]:
    """Class names of a checkpoint, in id order."""
    configure_offline()
    from ultralytics.nn.tasks import load_checkpoint

    model, _ = load_checkpoint(str(weights), device="cpu")  # type: ignore[no-untyped-call]
    names = model.names
    return [str(names[i]) for i in sorted(names)]


def export_model(spec: ExportSpec) -> ModelMetadata:
    """Export ``spec.weights`` to ``spec.out`` at the asked precision, with metadata."""
    if spec.precision == "int8" and not spec.calibration_images:
        raise ValueError("int8 export needs calibration images (training split)")
    spec.out.parent.mkdir(parents=True, exist_ok=True)
    classes = classes_of(spec.weights)
    architecture = spec.architecture or _architecture(spec.weights)
    with tempfile.TemporaryDirectory(prefix="gw-export-") as tmp:
        fp32 = export_fp32(spec.weights, spec.imgsz, Path(tmp), spec.opset)
        if spec.precision == "fp32":
            shutil.copyfile(fp32, spec.out)
        elif spec.precision == "fp16":
            to_fp16(fp32, spec.out)
        else:
            to_int8(fp32, spec.out, spec.calibration_images, spec.imgsz)
    meta = ModelMetadata(
        model_version=spec.model_version,
        architecture=architecture,
        classes=classes,
        input_size=(spec.imgsz, spec.imgsz),
        thresholds={c: spec.thresholds.get(c, 0.25) for c in classes},
        iou=spec.iou,
        precision=spec.precision,
        training_data=spec.training_data,
        commit=git_commit(),
        created=datetime.now(UTC).replace(microsecond=0),
        notes=spec.notes,
    )
    write_metadata(spec.out, meta)
    log.info("exported %s (%s, %.1f MB)", spec.out, spec.precision, spec.out.stat().st_size / 1e6)
    return meta


def _architecture(weights: Path) -> str:
    """'yolov8s'-style name from the checkpoint's yaml, if it says."""
    import torch

    ckpt = torch.load(str(weights), map_location="cpu", weights_only=False)
    model = ckpt.get("model") if isinstance(ckpt, dict) else None
    yaml_file = str(getattr(model, "yaml", {}).get("yaml_file", "")) if model is not None else ""
    scale = str(getattr(model, "yaml", {}).get("scale", "")) if model is not None else ""
    stem = Path(yaml_file).stem if yaml_file else "yolo"
    return stem if not scale or stem.endswith(scale) else f"{stem}{scale}"
