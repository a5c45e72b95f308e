"""Rejected detections (false alarms) kept as image files with a label, for retraining."""

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
    """Copy the ticket's camera snapshots to ``root/<category>/`` next to a JSON sidecar that
    says what was wrongly detected where, so training can use them as negatives."""
    kept: list[Path] = []
    folder = root / str(ticket["category"])
    for rel in snapshots:
        try:
            src = store.open(rel)
        except FileNotFoundError:
            log.warning("snapshot %s of ticket %s is gone; no hard negative kept", rel,
                        ticket["id"], extra={"ticket_id": ticket["id"]})
            continue
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"ticket{ticket['id']}-{src.name}"
        shutil.copyfile(src, dest)
        label = {
            "ticket_id": ticket["id"],
            "category": ticket["category"],
            "bbox": incident.get("bbox"),
            "camera_ids": incident.get("camera_ids") or [],
            "reason": reason,
            "rejected_at": at.isoformat(),
            "image": dest.name,
        }
        dest.with_suffix(".json").write_text(json.dumps(label, ensure_ascii=False), "utf-8")
        kept.append(dest)
    if kept:
        log.info("kept %d hard negative(s) of ticket %s", len(kept), ticket["id"],
                 extra={"ticket_id": ticket["id"]})
    return kept
