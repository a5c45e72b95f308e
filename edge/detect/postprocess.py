"""Decode YOLOv8-layout outputs and run class-aware NMS in numpy, with ultralytics' results."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge.detect.letterbox import scale_boxes_to_frame

MAX_WH = 7680  # per-class coordinate offset that keeps classes apart in one NMS pass
MAX_NMS = 30000  # boxes kept (by confidence) before NMS


def xywh_to_xyxy(xywh: NDArray[np.float32]) -> NDArray[np.float32]:
    """Centre/size boxes to corner boxes."""
    out = np.empty_like(xywh)
    half_w, half_h = xywh[:, 2] / 2, xywh[:, 3] / 2
    out[:, 0] = xywh[:, 0] - half_w
    out[:, 1] = xywh[:, 1] - half_h
    out[:, 2] = xywh[:, 0] + half_w
    out[:, 3] = xywh[:, 1] + half_h
    return out


def nms(
    boxes: NDArray[np.float32], scores: NDArray[np.float32], iou_thres: float
) -> NDArray[np.int64]:
    """Greedy NMS (torchvision semantics): indices kept, highest score first."""
    if boxes.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    thres = np.float32(iou_thres)
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), np.float32(0))
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), np.float32(0))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= thres]
    return np.asarray(keep, dtype=np.int64)


def non_max_suppression(
    prediction: NDArray[np.floating],
    conf_thres: float = 0.25,
    iou_thres: float = 0.7,
    *,
    multi_label: bool = False,
    agnostic: bool = False,
    max_det: int = 300,
) -> NDArray[np.float32]:
    """One image's raw output ``(4 + nc, N)`` to detections ``(n, 6)``: x1 y1 x2 y2 conf cls.

    Same steps as ultralytics' ``non_max_suppression`` for a v8/v11 detect head: keep anchors
    whose best class score is above ``conf_thres``, best class only (or every class above the
    threshold with ``multi_label``), at most 30000 by score, class-aware NMS via a class offset,
    at most ``max_det`` rows, highest confidence first.
    """
    pred = np.asarray(prediction, dtype=np.float32)
    nc = pred.shape[0] - 4
    cls_scores = pred[4:]
    candidates = cls_scores.max(axis=0) > conf_thres
    x = pred[:, candidates].T
    if not x.shape[0]:
        return np.zeros((0, 6), dtype=np.float32)
    box = xywh_to_xyxy(x[:, :4])
    cls = x[:, 4 : 4 + nc]
    if multi_label and nc > 1:
        i, j = np.nonzero(cls > conf_thres)
        det = np.concatenate((box[i], cls[i, j][:, None], j[:, None].astype(np.float32)), axis=1)
    else:
        j = cls.argmax(axis=1)
        conf = cls[np.arange(cls.shape[0]), j]
        det = np.concatenate((box, conf[:, None], j[:, None].astype(np.float32)), axis=1)
        det = det[conf > conf_thres]
    if not det.shape[0]:
        return np.zeros((0, 6), dtype=np.float32)
    if det.shape[0] > MAX_NMS:
        det = det[np.argsort(-det[:, 4], kind="stable")[:MAX_NMS]]
    offset = det[:, 5:6] * (0 if agnostic else MAX_WH)
    keep = nms(det[:, :4] + offset, det[:, 4], iou_thres)[:max_det]
    return np.asarray(det[keep], dtype=np.float32)


def decode_frame(
    raw: NDArray[np.floating],
    input_hw: tuple[int, int],
    frame_hw: tuple[int, int],
    conf_thres: float,
    iou_thres: float,
    *,
    multi_label: bool = False,
    max_det: int = 300,
    clip: bool = True,
) -> NDArray[np.float32]:
    """Raw output ``(4 + nc, N)`` to detections ``(n, 6)`` in frame pixels: xyxy, conf, cls."""
    det = non_max_suppression(raw, conf_thres, iou_thres, multi_label=multi_label, max_det=max_det)
    det[:, :4] = scale_boxes_to_frame(det[:, :4], input_hw, frame_hw, clip=clip)
    return det


def apply_class_thresholds(
    det: NDArray[np.float32], thresholds: NDArray[np.float32], wanted: NDArray[np.bool_]
) -> NDArray[np.float32]:
    """Keep rows whose confidence is above their class's threshold and whose class is wanted."""
    cls = det[:, 5].astype(np.int64)
    return det[(det[:, 4] > thresholds[cls]) & wanted[cls]]
