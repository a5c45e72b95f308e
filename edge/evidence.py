"""Evidence for an event: the annotated frame and the object's crop as size-bounded JPEGs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from broker.messages import Evidence
from edge.settings import EvidenceSettings

NormBox = tuple[float, float, float, float]
FrameBGR = NDArray[np.uint8]
RED = (40, 40, 230)


class EvidenceError(ValueError):
    """A frame could not be turned into a JPEG within the size bound."""


@dataclass(frozen=True)
class Mark:
    """A box to draw on the snapshot, with its label."""

    box: NormBox
    label: str
    colour: tuple[int, int, int] = RED


def _fit(img: FrameBGR, max_side: int) -> FrameBGR:
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def encode_jpeg(
    img: FrameBGR, max_side: int, quality: int, max_bytes: int
) -> tuple[bytes, int, int]:
    """JPEG of ``img`` within ``max_side`` pixels and ``max_bytes``; with its width and height.

    Quality steps down to 25, then the image shrinks, until the JPEG fits.
    """
    fitted = _fit(img, max_side)
    q = quality
    while True:
        ok, buf = cv2.imencode(".jpg", fitted, [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:
            raise EvidenceError("OpenCV could not encode the frame as JPEG")
        if buf.size <= max_bytes:
            return bytes(buf), fitted.shape[1], fitted.shape[0]
        if q > 25:
            q = max(25, q - 15)
        else:
            fitted = _fit(fitted, max(32, int(max(fitted.shape[:2]) * 0.7)))


def annotate(frame: FrameBGR, marks: Sequence[Mark]) -> FrameBGR:
    """A copy of the frame with each box drawn and labelled."""
    out = frame.copy()
    h, w = out.shape[:2]
    thick = max(2, round(max(h, w) / 400))
    scale = max(0.5, max(h, w) / 1200)
    for m in marks:
        x1, y1 = round(m.box[0] * w), round(m.box[1] * h)
        x2, y2 = round(m.box[2] * w), round(m.box[3] * h)
        cv2.rectangle(out, (x1, y1), (x2, y2), m.colour, thick)
        (tw, th), base = cv2.getTextSize(m.label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y2 + th + 4
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 4, ty + base), m.colour, -1)
        cv2.putText(
            out,
            m.label,
            (x1 + 2, ty),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return out


def crop(frame: FrameBGR, box: NormBox, margin: float) -> FrameBGR:
    """The box with ``margin`` (share of its size) of context around it, clipped to the frame."""
    h, w = frame.shape[:2]
    bw, bh = (box[2] - box[0]) * w, (box[3] - box[1]) * h
    x1 = max(0, int(box[0] * w - margin * bw))
    y1 = max(0, int(box[1] * h - margin * bh))
    x2 = min(w, int(np.ceil(box[2] * w + margin * bw)))
    y2 = min(h, int(np.ceil(box[3] * h + margin * bh)))
    if x2 <= x1 or y2 <= y1:
        raise EvidenceError(f"empty crop for box {box}")
    return np.ascontiguousarray(frame[y1:y2, x1:x2])


def make_evidence(
    frame: FrameBGR, marks: Sequence[Mark], focus: NormBox | None, settings: EvidenceSettings
) -> Evidence:
    """The annotated snapshot, and the crop around ``focus`` when given."""
    s = settings
    snap, w, h = encode_jpeg(annotate(frame, marks), s.max_side, s.jpeg_quality, s.max_bytes)
    crop_jpeg = None
    if focus is not None:
        crop_jpeg, _, _ = encode_jpeg(
            crop(frame, focus, s.crop_margin), s.crop_max_side, s.jpeg_quality, s.max_bytes
        )
    return Evidence.from_jpeg(snap, w, h, crop_jpeg)
