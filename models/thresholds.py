"""Choose per-class operating thresholds on a validation split (never on test): best F1."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from edge.detect.postprocess import decode_frame
from models.evaluate import RawModel, class_mapping
from models.metrics import IOU_THRESHOLDS, box_iou, match_predictions
from models.yolo_data import YoloFolder

log = logging.getLogger(__name__)

CANDIDATES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 19))  # 0.05 .. 0.90


class SweepPoint(BaseModel):
    """One class at one candidate threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float
    tp: int
    fp: int
    support: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.support if self.support else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def sweep(
    model: RawModel,
    data: YoloFolder,
    split: str = "val",
    candidates: Sequence[float] = CANDIDATES,
) -> dict[str, list[SweepPoint]]:
    """TP/FP/support per data class at each candidate threshold (operating NMS, IoU 0.5)."""
    mapping = class_mapping(model.classes, data.names)
    nc = len(data.names)
    lo = min(candidates)
    tp = np.zeros((len(candidates), nc), dtype=np.int64)
    fp = np.zeros((len(candidates), nc), dtype=np.int64)
    support = np.zeros(nc, dtype=np.int64)
    for path in data.images(split):
        read = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if read is None:
            raise ValueError(f"cannot read image {path}")
        frame = np.asarray(read, dtype=np.uint8)
        hw = (frame.shape[0], frame.shape[1])
        gt_cls, gt_box = data.labels(path, split, hw)
        support += np.bincount(gt_cls, minlength=nc)
        det = decode_frame(model.raw_output(frame), model.input_size, hw, lo, model.iou)
        cls = mapping[det[:, 5].astype(np.int64)]
        det, cls = det[cls >= 0], cls[cls >= 0]
        for k, t in enumerate(candidates):
            keep = det[:, 4] > t
            d, c = det[keep], cls[keep]
            ok = match_predictions(c, gt_cls, box_iou(gt_box, d[:, :4]), IOU_THRESHOLDS[:1])[:, 0]
            np.add.at(tp[k], c[ok], 1)
            np.add.at(fp[k], c[~ok], 1)
    return {
        name: [
            SweepPoint(threshold=t, tp=int(tp[k, ci]), fp=int(fp[k, ci]), support=int(support[ci]))
            for k, t in enumerate(candidates)
        ]
        for ci, name in enumerate(data.names)
    }


def pick_threshold(points: Sequence[SweepPoint], default: float = 0.25) -> float:
    """The threshold with the best F1 (the higher threshold on a tie); ``default`` if no data."""
    if not points or not any(p.support for p in points):
        return default
    best = max(points, key=lambda p: (round(p.f1, 6), p.threshold))
    return best.threshold
