"""Rejected detections (false alarms) kept as a YOLO-format dataset of hard negatives.

Layout under the root folder, as ultralytics reads it::

    images/ticket{id}-{name}.jpg   the evidence image the camera sent
    labels/ticket{id}-{name}.txt   empty: there is nothing of our classes in this image
    meta/ticket{id}-{name}.json    what was wrongly seen where: category, the box (normalised
                                   x1 y1 x2 y2 and YOLO cx cy w h), cameras, reason, time

The label is empty because a false alarm means the image holds no object of the detected
class; the rejected box is kept beside it (not as a label) so training can weight or crop it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from dispatcher.evidence import EvidenceStore

log = logging.getLogger(__name__)


def yolo_box(bbox: Sequence[float] | None) -> list[float] | None:
    """A normalised x1, y1, x2, y2 box as YOLO's cx, cy, w, h (None stays None)."""
    if not bbox or len(bbox) != 4:
        return None
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return [round((x1 + x2) / 2, 6), round((y1 + y2) / 2, 6), round(x2 - x1, 6), round(y2 - y1, 6)]


def keep_hard_negatives(
    store: EvidenceStore,
    root: Path,
    ticket: Mapping[Any, Any],
    incident: Mapping[Any, Any],
    snapshots: Sequence[str],
    *,
    reason: str,
    at: datetime,
) -> list[Path]:
    """Copy the ticket's camera snapshots into ``root/images`` with an empty YOLO label in
    ``root/labels`` and a JSON note in ``root/meta``; returns the image paths written."""
    kept: list[Path] = []
    for rel in snapshots:
        try:
            src = store.open(rel)
        except FileNotFoundError:
            log.warning(
                "snapshot %s of ticket %s is gone; no hard negative kept",
                rel,
                ticket["id"],
                extra={"ticket_id": ticket["id"]},
            )
            continue
        stem = f"ticket{ticket['id']}-{src.stem}"
        image = root / "images" / f"{stem}{src.suffix}"
        for folder in ("images", "labels", "meta"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, image)
        (root / "labels" / f"{stem}.txt").write_text("", "utf-8")
        note = {
            "ticket_id": ticket["id"],
            "category": ticket["category"],
            "bbox_xyxy": incident.get("bbox"),
            "bbox_yolo": yolo_box(incident.get("bbox")),
            "camera_ids": incident.get("camera_ids") or [],
            "reason": reason,
            "rejected_at": at.isoformat(),
            "image": image.name,
        }
        (root / "meta" / f"{stem}.json").write_text(json.dumps(note, ensure_ascii=False), "utf-8")
        kept.append(image)
    if kept:
        log.info(
            "kept %d hard negative(s) of ticket %s",
            len(kept),
            ticket["id"],
            extra={"ticket_id": ticket["id"]},
        )
    return kept
