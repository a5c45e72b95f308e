"""Commands from the dispatcher: ``verify`` (is the incident still there?), ``snapshot``, ``reload``.

``judge_verify`` is the pure decision: the object counts as present in a check when a
detection of the incident's kind, at or above the class's ``keep_confidence`` (the same
threshold that keeps a track alive), overlaps the incident's region by at least
``MIN_OVERLAP`` of the smaller box. ``still_present`` needs it in at least half the checks, so a
single flicker neither closes nor reopens a ticket; no checks at all is an ``error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from edge.detect import Detection
from edge.evidence import Mark

NormBox = tuple[float, float, float, float]
MIN_OVERLAP = 0.3
REGION_COLOUR = (230, 160, 40)
HIT_COLOUR = (40, 40, 230)


@dataclass(frozen=True)
class VerifyCheck:
    """One fresh frame's detections, with the frame size to normalise their boxes."""

    detections: Sequence[Detection]
    width: int
    height: int


@dataclass(frozen=True)
class VerifyVerdict:
    """The answer to a verify command."""

    outcome: Literal["clear", "still_present", "error"]
    confidence: float | None
    detail: str
    marks: tuple[Mark, ...]


def overlap(a: NormBox, b: NormBox) -> float:
    """Intersection over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller if smaller > 0 else 0.0


def judge_verify(
    checks: Sequence[VerifyCheck], kind: str, region: NormBox | None, keep_confidence: float
) -> VerifyVerdict:
    """Whether the incident's object is still in view, from detector runs on fresh frames."""
    region_marks: tuple[Mark, ...] = (
        (Mark(region, "incident", REGION_COLOUR),) if region is not None else ()
    )
    if not checks:
        return VerifyVerdict("error", None, "no fresh frames from the camera in time", region_marks)
    present = 0
    best: float | None = None
    last_hits: list[Mark] = []
    for check in checks:
        hits = []
        for d in check.detections:
            if d.class_name != kind or d.confidence < keep_confidence:
                continue
            box = (d.x1 / check.width, d.y1 / check.height, d.x2 / check.width, d.y2 / check.height)
            if region is not None and overlap(box, region) < MIN_OVERLAP:
                continue
            hits.append(Mark(box, f"{kind} {d.confidence:.2f}", HIT_COLOUR))
            best = d.confidence if best is None else max(best, d.confidence)
        if hits:
            present += 1
        last_hits = hits or last_hits
    n = len(checks)
    detail = f"{kind} seen in {present} of {n} checks (threshold {keep_confidence:.2f})"
    if present * 2 >= n and present > 0:
        return VerifyVerdict("still_present", best, detail, region_marks + tuple(last_hits))
    return VerifyVerdict("clear", best, detail, region_marks)
