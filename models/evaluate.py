"""Evaluate a detector (ONNX through the edge runtime, or a .pt) on a YOLO folder.

Per class: precision and recall at the model's operating thresholds, AP50 and AP50-95 the way
ultralytics computes them (NMS at conf 0.001 / IoU 0.7 with multi-label, greedy matching,
101-point AP), the confusion matrix at the operating point, and false positives per image on
images without objects. An ONNX model runs through ``edge.detect`` (onnxruntime, numpy
letterbox and NMS, no torch) so what is measured is what the edge runs. Class names in the
data are matched to the model's by name, ignoring case and ``-``/``_``/space (``Garbage`` is
``garbage``); detections of classes the data does not name are ignored (their objects are not
labelled there). Images that cannot be read, or whose label file ultralytics would reject, are
skipped as ultralytics skips them: counted, named with the reason in the report, and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from edge.detect.letterbox import letterbox, to_input_tensor
from edge.detect.metadata import ModelMetadata, sidecar_path
from edge.detect.postprocess import apply_class_thresholds, decode_frame
from models.metrics import (
    IOU_THRESHOLDS,
    OperatingPoint,
    ap_per_class,
    box_iou,
    confusion_update,
    match_predictions,
)
from models.yolo_data import (
    CorruptLabelError,
    YoloDataError,
    YoloFolder,
    class_key,
    load_yolo_folder,
)

log = logging.getLogger(__name__)

VAL_CONF = 0.001  # ultralytics' val defaults
VAL_IOU = 0.7
VAL_MAX_DET = 300
MIN_IMAGE_SIDE = 10  # ultralytics rejects images under 10 px a side
SHOWN_SKIPPED = 20  # skipped images named in the table (the JSON names all)


class ModelLoadError(ValueError):
    """The model file could not be loaded; the message says which file and why."""


class RawModel(Protocol):
    """What evaluation needs from a model: its classes, input, thresholds and raw output."""

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def model_version(self) -> str: ...

    @property
    def thresholds(self) -> dict[str, float]: ...

    @property
    def iou(self) -> float: ...

    def raw_output(self, frame_bgr: NDArray[np.uint8]) -> NDArray[np.float32]: ...


class TorchModel:
    """A .pt checkpoint run by torch on the edge's letterbox; decode/NMS stay the edge's numpy."""

    def __init__(self, path: Path, imgsz: int | None = None) -> None:
        from models.offline import configure_offline

        configure_offline()
        import torch
        from ultralytics.nn.tasks import load_checkpoint

        model, ckpt = load_checkpoint(  # type: ignore[no-untyped-call]
            str(path), device="cpu", fuse=True
        )
        self._torch = torch
        self._model = model.float().eval()
        names = model.names
        self._classes = tuple(str(names[i]) for i in sorted(names))
        train_args = (ckpt or {}).get("train_args", {}) if isinstance(ckpt, dict) else {}
        size = imgsz or int(train_args.get("imgsz", 640))
        self._input = (size, size)
        meta_path = sidecar_path(path)
        meta = (
            ModelMetadata.model_validate_json(meta_path.read_text(encoding="utf-8"))
            if meta_path.is_file()
            else None
        )
        self._thresholds = dict(meta.thresholds) if meta else {}
        self._version = meta.model_version if meta else path.stem

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def input_size(self) -> tuple[int, int]:
        return self._input

    @property
    def model_version(self) -> str:
        return self._version

    @property
    def thresholds(self) -> dict[str, float]:
        return {c: self._thresholds.get(c, 0.25) for c in self._classes}

    @property
    def iou(self) -> float:
        return VAL_IOU

    def raw_output(self, frame_bgr: NDArray[np.uint8]) -> NDArray[np.float32]:
        img, _ = letterbox(frame_bgr, self._input)
        with self._torch.inference_mode():
            out = self._model(self._torch.from_numpy(to_input_tensor(img)))
        first = out[0] if isinstance(out, list | tuple) else out
        return np.asarray(first[0].numpy(), dtype=np.float32)


def load_model(path: Path, imgsz: int | None = None, threads: int | None = None) -> RawModel:
    """An ONNX model through the edge's onnx backend, or a .pt through torch; any failure to
    load is a ``ModelLoadError`` naming the file."""
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".pt"):
        raise ModelLoadError(f"unsupported model file {path} (expected .onnx or .pt)")
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    if suffix == ".onnx":
        if imgsz is not None:
            log.warning("--imgsz is ignored for ONNX models: the input size is fixed in the file")
        from edge.detect.onnx import OnnxDetector, OnnxDetectorConfig

        try:
            return OnnxDetector(OnnxDetectorConfig(model=path, threads=threads))
        except Exception as exc:
            raise ModelLoadError(f"{path}: the model did not load: {_one_line(exc)}") from exc
    try:
        return TorchModel(path, imgsz)
    except ImportError as exc:
        raise ModelLoadError(
            f"{path}: a .pt needs torch and ultralytics ({exc}); evaluate the exported .onnx "
            "with the edge's dependencies"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"{path}: the checkpoint did not load: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_image(path: Path) -> tuple[NDArray[np.uint8] | None, str]:
    """The image as BGR (decoded as ultralytics' ``imread`` does), or None and why not."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        return None, f"cannot read the file: {exc.strerror or exc}"
    if not data.size:
        return None, "empty file"
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if decoded is None:
        return None, "not a decodable image"
    frame = np.asarray(decoded, dtype=np.uint8)
    h, w = frame.shape[:2]
    if h < MIN_IMAGE_SIDE or w < MIN_IMAGE_SIDE:
        return None, f"image size {(h, w)} <{MIN_IMAGE_SIDE} pixels"
    return frame, ""


class ClassReport(BaseModel):
    """One class's figures on one split."""

    model_config = ConfigDict(extra="forbid")

    ap50: float | None = Field(description="AP at IoU 0.5 (None when the split has no objects).")
    ap50_95: float | None = Field(description="AP averaged over IoU 0.50:0.95.")
    precision: float = Field(description="At the operating threshold, IoU 0.5.")
    recall: float = Field(description="At the operating threshold, IoU 0.5.")
    support: int = Field(description="Labelled objects of this class.")
    threshold: float | None = Field(description="Operating confidence threshold used.")
    tp: int
    fp: int
    data_name: str = Field(description="The class's name in the data's yaml.")


class SkippedImage(BaseModel):
    """An image left out of the figures, as ultralytics leaves it out, and why."""

    model_config = ConfigDict(extra="forbid")

    path: str
    reason: str


class EvaluationReport(BaseModel):
    """The result of one evaluation; ``summary()`` is the JSON the CLI prints."""

    model_config = ConfigDict(extra="forbid")

    model: str
    model_version: str
    data: str
    split: str
    images: int = Field(description="Images evaluated (skipped ones not counted).")
    negative_images: int
    skipped: list[SkippedImage] = Field(default_factory=list)
    input_size: tuple[int, int]
    classes: dict[str, ClassReport]
    map50: float | None
    map50_95: float | None
    fp_per_negative_image: float | None
    confusion_labels: list[str]
    confusion_matrix: list[list[int]] = Field(description="Rows predicted, columns true.")

    def summary(self) -> dict[str, object]:
        """The JSON record the CLI prints: model, images, per-class AP50 / AP50-95 /
        precision / recall / support, FP per negative image, and everything else under
        ``details``."""
        return {
            "model": self.model,
            "images": self.images,
            "classes": {
                name: {
                    "ap50": c.ap50,
                    "ap50_95": c.ap50_95,
                    "precision": c.precision,
                    "recall": c.recall,
                    "support": c.support,
                }
                for name, c in self.classes.items()
            },
            "fp_per_negative_image": self.fp_per_negative_image,
            "details": {
                "model_version": self.model_version,
                "data": self.data,
                "split": self.split,
                "negative_images": self.negative_images,
                "skipped_images": len(self.skipped),
                "skipped": [s.model_dump() for s in self.skipped],
                "input_size": list(self.input_size),
                "thresholds": {n: c.threshold for n, c in self.classes.items()},
                "data_names": {n: c.data_name for n, c in self.classes.items()},
                "operating_point": {n: {"tp": c.tp, "fp": c.fp} for n, c in self.classes.items()},
                "map50": self.map50,
                "map50_95": self.map50_95,
                "confusion_matrix": {
                    "labels": self.confusion_labels,
                    "rows_predicted": self.confusion_matrix,
                },
            },
        }


def class_mapping(model_classes: tuple[str, ...], data_names: tuple[str, ...]) -> NDArray[np.int64]:
    """For each model class id, the data class id with the same name (ignoring case and
    ``-``/``_``/space), or -1; a ``YoloDataError`` where two data names match one class."""
    index: dict[str, list[int]] = {}
    for i, n in enumerate(data_names):
        index.setdefault(class_key(n), []).append(i)
    out = []
    for c in model_classes:
        ids = index.get(class_key(c), [])
        if len(ids) > 1:
            raise YoloDataError(
                f"the data names {[data_names[i] for i in ids]} all match the model's class "
                f"{c!r} (names are compared ignoring case, '-', '_' and spaces)"
            )
        out.append(ids[0] if ids else -1)
    return np.array(out, dtype=np.int64)


def evaluate(
    model: RawModel,
    data: YoloFolder,
    split: str = "test",
    *,
    model_name: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationReport:
    """Run ``model`` over one split of ``data`` and compute the report (see module doc).

    ``progress(done, total)`` is called before each image and once at the end.
    """
    mapping = class_mapping(model.classes, data.names)
    if (mapping < 0).all():
        raise YoloDataError(
            f"the data's class names {list(data.names)} share none with the model's "
            f"{list(model.classes)} (names are compared ignoring case, '-', '_' and spaces)"
        )
    missing = [n for i, n in enumerate(data.names) if i not in mapping]
    if missing:
        log.warning("the model has no class named %s; their AP will be 0", missing)
    nc = len(data.names)
    model_thr = model.thresholds
    thr = np.array([model_thr.get(c, 0.25) for c in model.classes], dtype=np.float32)
    wanted = mapping >= 0
    op_conf = float(thr[wanted].min())
    stats_tp, stats_conf, stats_cls, target_cls = [], [], [], []
    op_tp = np.zeros(nc, dtype=np.int64)
    op_fp = np.zeros(nc, dtype=np.int64)
    confusion = np.zeros((nc + 1, nc + 1), dtype=np.int64)
    images = data.images(split)
    negatives = 0
    negative_fp = 0
    skipped: list[SkippedImage] = []
    for n, path in enumerate(images):
        if progress is not None:
            progress(n, len(images))
        frame, why = read_image(path)
        if frame is None:
            _skip(skipped, path, why)
            continue
        hw = (frame.shape[0], frame.shape[1])
        try:
            gt_cls, gt_box = data.labels(path, split, hw)
        except CorruptLabelError as exc:
            _skip(skipped, path, str(exc))
            continue
        raw = model.raw_output(frame)
        det = decode_frame(
            raw,
            model.input_size,
            hw,
            VAL_CONF,
            VAL_IOU,
            multi_label=True,
            max_det=VAL_MAX_DET,
            clip=False,  # ultralytics' val matches unclipped boxes
        )
        det = _to_data_classes(det, mapping)
        iou = box_iou(gt_box, det[:, :4])
        pred_cls = det[:, 5].astype(np.int64)
        stats_tp.append(match_predictions(pred_cls, gt_cls, iou))
        stats_conf.append(det[:, 4].astype(np.float64))
        stats_cls.append(pred_cls)
        target_cls.append(gt_cls)
        op = decode_frame(raw, model.input_size, hw, op_conf, model.iou)
        op = _to_data_classes(apply_class_thresholds(op, thr, wanted), mapping)
        op_cls = op[:, 5].astype(np.int64)
        correct = match_predictions(op_cls, gt_cls, box_iou(gt_box, op[:, :4]), IOU_THRESHOLDS[:1])
        np.add.at(op_tp, op_cls[correct[:, 0]], 1)
        np.add.at(op_fp, op_cls[~correct[:, 0]], 1)
        confusion_update(confusion, op[:, :4], op_cls, gt_box, gt_cls)
        if not len(gt_cls):
            negatives += 1
            negative_fp += len(op_cls)
    if progress is not None:
        progress(len(images), len(images))
    if len(skipped) == len(images):
        raise YoloDataError(
            f"none of the {len(images)} images of split '{split}' could be used; "
            f"the first: {skipped[0].path}: {skipped[0].reason}"
        )
    tp = np.concatenate(stats_tp) if stats_tp else np.zeros((0, 10), dtype=bool)
    conf = np.concatenate(stats_conf) if stats_conf else np.zeros(0)
    pcls = np.concatenate(stats_cls) if stats_cls else np.zeros(0, dtype=np.int64)
    tcls = np.concatenate(target_cls) if target_cls else np.zeros(0, dtype=np.int64)
    present, ap = ap_per_class(tp, conf, pcls, tcls)
    support = np.bincount(tcls, minlength=nc)
    classes: dict[str, ClassReport] = {}
    for ci, data_name in enumerate(data.names):
        row = np.flatnonzero(present == ci)
        point = OperatingPoint(tp=int(op_tp[ci]), fp=int(op_fp[ci]), support=int(support[ci]))
        matched = np.flatnonzero(mapping == ci)
        mi = int(matched[0]) if matched.size else None
        classes[data_name if mi is None else model.classes[mi]] = ClassReport(
            ap50=float(ap[row[0], 0]) if row.size else None,
            ap50_95=float(ap[row[0]].mean()) if row.size else None,
            precision=point.precision,
            recall=point.recall,
            support=point.support,
            threshold=round(float(thr[mi]), 4) if mi is not None else None,
            tp=point.tp,
            fp=point.fp,
            data_name=data_name,
        )
    return EvaluationReport(
        model=model_name or model.model_version,
        model_version=model.model_version,
        data=str(data.root),
        split=split,
        images=len(images) - len(skipped),
        negative_images=negatives,
        skipped=skipped,
        input_size=model.input_size,
        classes=classes,
        map50=float(ap[:, 0].mean()) if len(present) else None,
        map50_95=float(ap.mean()) if len(present) else None,
        fp_per_negative_image=negative_fp / negatives if negatives else None,
        confusion_labels=[*classes, "background"],
        confusion_matrix=confusion.tolist(),
    )


def _skip(skipped: list[SkippedImage], path: Path, reason: str) -> None:
    log.warning("skipped %s: %s", path, reason)
    skipped.append(SkippedImage(path=str(path), reason=reason))


def _to_data_classes(det: NDArray[np.float32], mapping: NDArray[np.int64]) -> NDArray[np.float32]:
    """Detections with model class ids replaced by data class ids; unknown classes dropped."""
    data_cls = mapping[det[:, 5].astype(np.int64)]
    out = det[data_cls >= 0].copy()
    out[:, 5] = data_cls[data_cls >= 0]
    return out


def evaluate_path(
    model_path: Path,
    data_path: Path,
    split: str = "test",
    *,
    imgsz: int | None = None,
    threads: int | None = None,
) -> EvaluationReport:
    """Load a model file and a YOLO folder and evaluate (the CLI's entry)."""
    model = load_model(model_path, imgsz=imgsz, threads=threads)
    return evaluate(model, load_yolo_folder(data_path), split, model_name=str(model_path))


def _skipped_lines(skipped: list[SkippedImage]) -> list[str]:
    if not skipped:
        return []
    lines = [f"{len(skipped)} images skipped (as ultralytics skips them), not counted above:"]
    lines += [f"  {s.path}: {s.reason}" for s in skipped[:SHOWN_SKIPPED]]
    if len(skipped) > SHOWN_SKIPPED:
        lines.append(f"  ... and {len(skipped) - SHOWN_SKIPPED} more (all in --json details)")
    return lines


def render_report(report: EvaluationReport) -> str:
    """A human-readable table of a report."""
    lines = [
        f"model {report.model} ({report.model_version}), input {report.input_size[0]}x"
        f"{report.input_size[1]}",
        f"data {report.data} split {report.split}: {report.images} images, "
        f"{report.negative_images} without objects",
        *_skipped_lines(report.skipped),
        "",
        f"{'class':<18}{'thr':>6}{'P':>8}{'R':>8}{'AP50':>8}{'AP50-95':>9}{'support':>9}",
    ]

    def fmt(v: float | None) -> str:
        return "   -" if v is None else f"{v:.3f}"

    for name, c in report.classes.items():
        lines.append(
            f"{name:<18}{fmt(c.threshold):>6}{c.precision:>8.3f}{c.recall:>8.3f}"
            f"{fmt(c.ap50):>8}{fmt(c.ap50_95):>9}{c.support:>9}"
        )
    lines.append(
        f"{'all (mean)':<18}{'':>6}{'':>8}{'':>8}{fmt(report.map50):>8}{fmt(report.map50_95):>9}"
    )
    fpn = report.fp_per_negative_image
    lines.append("")
    lines.append(
        "false positives per image without objects: "
        + ("n/a (no such images)" if fpn is None else f"{fpn:.3f}")
    )
    lines.append("")
    lines.append("confusion matrix at the operating point (rows predicted, columns true, IoU 0.5):")
    labels = report.confusion_labels
    width = max(len(x) for x in labels) + 2
    lines.append(" " * width + "".join(f"{x[:12]:>13}" for x in labels))
    for label, row in zip(labels, report.confusion_matrix, strict=True):
        lines.append(f"{label:<{width}}" + "".join(f"{v:>13}" for v in row))
    return "\n".join(lines)
