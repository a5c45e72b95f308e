"""Detection metrics computed the way ultralytics 8.4 computes them (matching, 101-point COCO AP).

Pure numpy functions: ``box_iou``, ``match_predictions`` (greedy in descending confidence, one
target per detection per IoU threshold, as ``BaseValidator.match_predictions``), ``compute_ap``
and ``ap_per_class`` (as ``ultralytics.utils.metrics``), plus the operating-point figures the
model card needs: precision/recall at a threshold and a confusion matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO: 0.50:0.05:0.95
AP_X = np.linspace(0, 1, 101)  # 101-point interpolation
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def box_iou(a: NDArray[np.floating], b: NDArray[np.floating], eps: float = 1e-7) -> FloatArray:
    """Pairwise IoU of xyxy boxes: ``(len(a), len(b))``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / (area_a[:, None] + area_b[None, :] - inter + eps), dtype=np.float64)


def match_predictions(
    pred_classes: NDArray[np.integer],
    true_classes: NDArray[np.integer],
    iou: FloatArray,
    thresholds: FloatArray = IOU_THRESHOLDS,
) -> BoolArray:
    """``(n_pred, n_thresholds)`` correctness; predictions must be in descending confidence.

    ``iou`` is ``(n_true, n_pred)``. Each detection in turn takes the unclaimed same-class
    target it overlaps most, and is correct at each threshold that IoU reaches.
    """
    correct = np.zeros((len(pred_classes), len(thresholds)), dtype=bool)
    if not len(pred_classes) or not len(true_classes):
        return correct
    same = np.asarray(true_classes)[:, None] == np.asarray(pred_classes)[None, :]
    iou = iou * same
    matched = np.zeros((iou.shape[0], len(thresholds)), dtype=bool)
    cols = np.arange(len(thresholds))
    for j in np.flatnonzero((iou >= thresholds.min()).any(0)):
        available = np.where(matched, 0, iou[:, j, None])
        k = available.argmax(0)
        correct[j] = available[k, cols] >= thresholds
        matched[k, cols] |= correct[j]
    return correct


def compute_ap(recall: FloatArray, precision: FloatArray) -> tuple[float, FloatArray, FloatArray]:
    """AP from one recall/precision curve: envelope, then 101-point interpolation, trapezoid."""
    last = recall[-1] if len(recall) else 1.0
    mrec = np.concatenate(([0.0], recall, [last], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    ap = float(np.trapezoid(np.interp(AP_X, mrec, mpre), AP_X))
    return ap, mpre, mrec


def ap_per_class(
    tp: BoolArray,
    conf: FloatArray,
    pred_cls: NDArray[np.integer],
    target_cls: NDArray[np.integer],
    eps: float = 1e-16,
) -> tuple[NDArray[np.int64], FloatArray]:
    """Classes present in the targets and their AP at each IoU threshold, ``(nc, 10)``."""
    order = np.argsort(-conf)
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, counts = np.unique(target_cls, return_counts=True)
    ap = np.zeros((len(classes), tp.shape[1]))
    for ci, c in enumerate(classes):
        sel = pred_cls == c
        n_l, n_p = counts[ci], int(sel.sum())
        if n_p == 0 or n_l == 0:
            continue
        fpc = (1 - tp[sel]).cumsum(0)
        tpc = tp[sel].cumsum(0)
        recall = tpc / (n_l + eps)
        precision = tpc / (tpc + fpc)
        for j in range(tp.shape[1]):
            ap[ci, j] = compute_ap(recall[:, j], precision[:, j])[0]
    return classes.astype(np.int64), ap


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """True/false positives of one class at its operating threshold (IoU 0.5 matching)."""

    tp: int
    fp: int
    support: int

    @property
    def precision(self) -> float:
        """TP / detections; 0 when nothing was detected."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """TP / labelled objects; 0 when there are none."""
        return self.tp / self.support if self.support else 0.0


def confusion_update(
    matrix: NDArray[np.int64],
    pred_boxes: NDArray[np.floating],
    pred_cls: NDArray[np.integer],
    true_boxes: NDArray[np.floating],
    true_cls: NDArray[np.integer],
    iou_thres: float = 0.5,
) -> None:
    """Add one image to a ``(nc + 1, nc + 1)`` matrix indexed [predicted, true]; last = background.

    Class-agnostic one-to-one matching, highest IoU first; unmatched detections count against
    background (column nc), missed objects against the background row (row nc).
    """
    nc = matrix.shape[0] - 1
    used_p: set[int] = set()
    used_t: set[int] = set()
    if len(pred_cls) and len(true_cls):
        iou = box_iou(true_boxes, pred_boxes)
        ti, pj = np.nonzero(iou >= iou_thres)
        for k in np.argsort(-iou[ti, pj], kind="stable"):
            t, p = int(ti[k]), int(pj[k])
            if t in used_t or p in used_p:
                continue
            used_t.add(t)
            used_p.add(p)
            matrix[int(pred_cls[p]), int(true_cls[t])] += 1
    for p in range(len(pred_cls)):
        if p not in used_p:
            matrix[int(pred_cls[p]), nc] += 1
    for t in range(len(true_cls)):
        if t not in used_t:
            matrix[nc, int(true_cls[t])] += 1
