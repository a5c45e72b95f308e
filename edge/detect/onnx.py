"""The default backend: a YOLOv8-layout ONNX model run by onnxruntime, numpy pre/post-processing."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
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
from edge.detect.letterbox import letterbox, letterbox_geometry, rect_input_hw, to_input_tensor
from edge.detect.metadata import ModelMetadata, ModelMetadataError, read_model_metadata
from edge.detect.postprocess import apply_class_thresholds, decode_frame

log = logging.getLogger(__name__)

SPINNING_KEY = "session.intra_op.allow_spinning"


class OnnxDetectorConfig(DetectorConfig):
    """Settings of the onnxruntime backend."""

    type: Literal["onnx"] = Field(default="onnx", title="Backend", description="Always 'onnx'.")
    model: Path = Field(title="Model file", description="Path to the .onnx file.")
    threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        title="Intra-op threads",
        description="onnxruntime threads per inference; default: the number of CPU cores.",
    )
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        min_length=1,
        title="Execution providers",
        description="onnxruntime providers in order of preference.",
    )
    allow_spinning: bool = Field(
        default=False,
        title="Spinning intra-op threads",
        description="Let onnxruntime's idle intra-op threads spin (busy-wait) for the next "
        "work instead of sleeping. Off by default: an edge box shares its cores with the "
        "video decoding and the agent, and spinning threads take CPU from them and run slower "
        "(docs/benchmarks.md). On only for a box whose cores do nothing but inference.",
    )
    rect: bool = Field(
        default=False,
        title="Rectangular input",
        description="With a model that takes any input size (exported with dynamic axes, as "
        "`gridwatch export` does), letterbox each frame to the smallest multiple of 32 that "
        "holds it, as ultralytics' predict does: 320 x 192 for a 16:9 camera, about a third "
        "less time per inference. Off by default: the shipped model was trained and measured "
        "on square letterboxed inputs, and on non-square images it loses accuracy "
        "(models/MODEL_CARD.md); measure on the camera's own frames before turning it on.",
    )


def session_for(
    model: Path, threads: int | None, providers: list[str], *, allow_spinning: bool = False
) -> ort.InferenceSession:
    """An onnxruntime session with the given thread count (default: all cores), whose idle
    intra-op threads sleep unless ``allow_spinning``."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry(SPINNING_KEY, "1" if allow_spinning else "0")
    return ort.InferenceSession(str(model), sess_options=opts, providers=providers)


class OnnxDetector(Detector):
    """Letterbox, run the ONNX model, decode, NMS, threshold per class, map back to the frame."""

    def __init__(self, config: OnnxDetectorConfig) -> None:
        if not config.model.is_file():
            raise FileNotFoundError(f"detector model not found: {config.model}")
        self.config = config
        self._session = session_for(
            config.model, config.threads, config.providers, allow_spinning=config.allow_spinning
        )
        props = dict(self._session.get_modelmeta().custom_metadata_map)
        self.metadata: ModelMetadata = read_model_metadata(config.model, props)
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        half = "float16" in inp.type
        self._input_dtype: type[np.floating[Any]] = np.float16 if half else np.float32
        static_hw = tuple(inp.shape[2:4])
        self._fixed_input = all(isinstance(s, int) for s in static_hw)
        if self._fixed_input and static_hw != self.metadata.input_size:
            raise ModelMetadataError(
                f"{config.model}: input is {static_hw} but metadata says {self.metadata.input_size}"
            )
        self._classes = tuple(self.metadata.classes)
        self._thresholds = resolve_thresholds(self._classes, self.metadata.thresholds, config)
        self._wanted = class_filter(self._classes, config)
        log.info(
            "onnx detector %s: classes=%s input=%s threads=%s spinning=%s",
            self.metadata.model_version,
            ",".join(self._classes),
            self.metadata.input_size,
            self._session.get_session_options().intra_op_num_threads,
            self.spinning,
        )

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def spinning(self) -> bool:
        """Whether the session's idle intra-op threads spin, as the session says."""
        opts = self._session.get_session_options()
        return bool(opts.get_session_config_entry(SPINNING_KEY) == "1")

    @property
    def input_size(self) -> tuple[int, int]:
        return self.metadata.input_size

    @property
    def operating_thresholds(self) -> Mapping[str, float]:
        return dict(self.metadata.thresholds)

    @property
    def model_version(self) -> str:
        return self.metadata.model_version

    @property
    def iou(self) -> float:
        """NMS IoU in force: the config's, else the model's."""
        return self.metadata.iou if self.config.iou is None else self.config.iou

    @property
    def thresholds(self) -> dict[str, float]:
        """The operating confidence threshold in force for each class."""
        return {c: float(t) for c, t in zip(self._classes, self._thresholds, strict=True)}

    def input_hw_for(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input a frame of this size is letterboxed to."""
        if self._fixed_input or not self.config.rect:
            return self.input_size
        return rect_input_hw(frame_hw, self.input_size)

    def raw_output(self, frame_bgr: FrameBGR) -> NDArray[np.float32]:
        """The network's output for one frame, ``(4 + classes, anchors)``, in the pixels of the
        frame letterboxed to the model's square ``input_size`` (whatever input it ran at)."""
        frame_hw = (frame_bgr.shape[0], frame_bgr.shape[1])
        input_hw = self.input_hw_for(frame_hw)
        img, geo = letterbox(frame_bgr, input_hw)
        out = self._session.run(None, {self._input_name: to_input_tensor(img, self._input_dtype)})
        raw = np.array(out[0][0], dtype=np.float32)
        if input_hw != self.input_size:  # same scale, less padding: shift the box centres
            square = letterbox_geometry(frame_hw, self.input_size)
            raw[0] += square.left - geo.left
            raw[1] += square.top - geo.top
        return raw

    def predict_array(
        self,
        frame_bgr: FrameBGR,
        conf_thres: float,
        iou_thres: float | None = None,
        *,
        multi_label: bool = False,
        max_det: int | None = None,
    ) -> NDArray[np.float32]:
        """Detections ``(n, 6)`` = x1 y1 x2 y2 conf cls in frame pixels, one threshold for all."""
        return decode_frame(
            self.raw_output(frame_bgr),
            self.input_size,
            (frame_bgr.shape[0], frame_bgr.shape[1]),
            conf_thres,
            self.iou if iou_thres is None else iou_thres,
            multi_label=multi_label,
            max_det=self.config.max_det if max_det is None else max_det,
        )

    def operating(self, det: NDArray[np.float32]) -> NDArray[np.float32]:
        """Rows of ``det`` that pass the per-class operating thresholds and the class filter."""
        return apply_class_thresholds(det, self._thresholds, self._wanted)

    def detect(self, frame_bgr: FrameBGR) -> list[Detection]:
        det = self.operating(self.predict_array(frame_bgr, float(self._thresholds.min())))
        return [
            Detection(
                class_name=self._classes[int(c)],
                class_id=int(c),
                confidence=float(s),
                x1=float(x1),
                y1=float(y1),
                x2=float(x2),
                y2=float(y2),
            )
            for x1, y1, x2, y2, s, c in det.tolist()
        ]

    def close(self) -> None:
        del self._session


register_backend("onnx", OnnxDetectorConfig, OnnxDetector)
