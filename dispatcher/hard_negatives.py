"""Rejected detections (false alarms) kept as YOLO-format data sets of hard negatives.

One data set per rejected kind under the root folder (``<state dir>/hard_negatives/``), as
ultralytics and ``gridwatch evaluate`` read it::

    <kind>/data.yaml                   names: {0: <kind>}; train, val and test: images
    <kind>/images/ticket{T}-ev{E}.jpg  the snapshot that evidence row E of ticket T holds
    <kind>/labels/ticket{T}-ev{E}.txt  empty: no <kind> in this image
    <kind>/manifest.jsonl              one JSON line per image (see ``manifest_line``)

A false alarm says that the image holds no object of the rejected kind, and nothing about the
other kinds: naming only that kind in ``data.yaml`` makes the empty label say exactly that, so
``gridwatch evaluate --data <kind folder>`` counts only that class's detections as false
positives. The three split keys name the same folder: it is one pool, and the data set builder
(``gridwatch train --hard-negatives``) decides where it goes (train only). ``data.yaml`` is
written once and then left alone, so a person may add class names and label other objects.

Each image carries the box of the event that brought it (``events.evidence_id``), not the
incident's latest box, with that event's camera, confidence and model version.

Files are written after the rejection is committed and never fail it (``keep_after_rejection``).
The ticket store is the record: a rejected ticket's snapshots that are not in the folder yet
are found by comparing the two, so each rejection also writes what earlier attempts could not
(tickets rejected within ``RETRY_WINDOW``), and every failed attempt is logged as an error.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Connection, Engine, or_, select
from sqlalchemy.engine import RowMapping

from dispatcher.evidence import EvidenceStore
from dispatcher.lifecycle import Status, Transition
from dispatcher.store.schema import audit, events, evidence, tickets

log = logging.getLogger(__name__)

# How long after a rejection its hard negatives are still written by later rejections when the
# first attempt failed (each failure is logged as an error).
RETRY_WINDOW = timedelta(days=30)
# At most this many tickets written per rejection (the rejected one first), so a long backlog
# does not hold up one request; the rest follow with the next rejections.
MAX_TICKETS_PER_CALL = 20
MANIFEST = "manifest.jsonl"
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
STEM_PATTERN = re.compile(r"^ticket(\d+)-ev(\d+)$")

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class Snapshot:
    """One evidence image of a ticket and the event that carried it (None: no event row)."""

    evidence_id: int
    path: str
    sha256: str
    event_id: str | None = None
    kind: str | None = None
    device_id: str | None = None
    camera_id: str | None = None
    bbox: BBox | None = None
    confidence: float | None = None
    model_version: str | None = None
    seen_at: datetime | None = None


@dataclass(frozen=True)
class Rejection:
    """A ticket rejected as a false alarm, with what is needed to keep its snapshots."""

    ticket_id: int
    category: str
    rejected_at: datetime
    reason: str | None
    snapshots: tuple[Snapshot, ...]


def yolo_box(bbox: Sequence[float] | None) -> list[float] | None:
    """A normalised x1, y1, x2, y2 box as YOLO's cx, cy, w, h (None stays None)."""
    if not bbox or len(bbox) != 4:
        return None
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return [round((x1 + x2) / 2, 6), round((y1 + y2) / 2, 6), round(x2 - x1, 6), round(y2 - y1, 6)]


def image_stem(ticket_id: int, evidence_id: int) -> str:
    return f"ticket{ticket_id}-ev{evidence_id}"


def manifest_line(rejection: Rejection, snap: Snapshot, image: str) -> dict[str, Any]:
    """What was wrongly seen where, by which model, and when it was rejected."""
    return {
        "image": image,
        "ticket_id": rejection.ticket_id,
        "kind": snap.kind or rejection.category,
        "camera_id": snap.camera_id,
        "device_id": snap.device_id,
        "event_id": snap.event_id,
        "evidence_id": snap.evidence_id,
        "bbox_xyxy": list(snap.bbox) if snap.bbox else None,
        "bbox_yolo": yolo_box(snap.bbox),
        "confidence": snap.confidence,
        "model_version": snap.model_version,
        "seen_at": snap.seen_at.isoformat() if snap.seen_at else None,
        "rejected_at": rejection.rejected_at.isoformat(),
        "reason": rejection.reason,
        "sha256": snap.sha256,
    }


def _box(value: object) -> BBox | None:
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (x1, y1, x2, y2)


def _snapshot(ev_row: RowMapping, event: RowMapping | None) -> Snapshot:
    if event is None:
        return Snapshot(int(ev_row["id"]), str(ev_row["path"]), str(ev_row["sha256"]))
    body = event["body"] if isinstance(event["body"], dict) else {}
    version = body.get("model_version")
    return Snapshot(
        evidence_id=int(ev_row["id"]),
        path=str(ev_row["path"]),
        sha256=str(ev_row["sha256"]),
        event_id=str(event["event_id"]),
        kind=str(event["kind"]),
        device_id=str(event["device_id"]),
        camera_id=str(event["source_id"]),
        bbox=_box(body.get("bbox")),
        confidence=event["confidence"],
        model_version=str(version) if version is not None else None,
        seen_at=event["device_ts"],
    )


def load_rejections(conn: Connection, ticket_ids: Iterable[int]) -> list[Rejection]:
    """The rejected tickets among ``ticket_ids`` (in that order) with their camera snapshots,
    each with the event that carried it."""
    ids = list(dict.fromkeys(ticket_ids))
    rows = {
        int(r["id"]): r
        for r in conn.execute(
            select(tickets).where(tickets.c.id.in_(ids), tickets.c.status == Status.REJECTED)
        ).mappings()
    }
    reasons: dict[int, str | None] = {}
    for r in conn.execute(
        select(audit.c.ticket_id, audit.c.reason)
        .where(audit.c.ticket_id.in_(list(rows)), audit.c.transition == Transition.REJECTED)
        .order_by(audit.c.id)
    ):
        reasons[int(r.ticket_id)] = r.reason
    out = []
    for tid in ids:
        row = rows.get(tid)
        if row is None:
            continue
        from_events = select(events.c.evidence_id).where(
            events.c.incident_id == row["incident_id"], events.c.evidence_id.is_not(None)
        )
        images = (
            conn.execute(
                select(evidence)
                .where(
                    evidence.c.kind == "snapshot",
                    or_(evidence.c.ticket_id == tid, evidence.c.id.in_(from_events)),
                )
                .order_by(evidence.c.id)
            )
            .mappings()
            .all()
        )
        carried = {
            int(e["evidence_id"]): e
            for e in conn.execute(
                select(events).where(
                    events.c.incident_id == row["incident_id"],
                    events.c.evidence_id.in_([int(i["id"]) for i in images]),
                )
            ).mappings()
        }
        out.append(
            Rejection(
                ticket_id=tid,
                category=str(row["category"]),
                rejected_at=row["closed_at"],
                reason=reasons.get(tid),
                snapshots=tuple(_snapshot(i, carried.get(int(i["id"]))) for i in images),
            )
        )
    return out


def kept(root: Path) -> set[tuple[int, int]]:
    """(ticket, evidence) of every hard negative in the folder (its label file is written
    last, so it marks an image as done)."""
    done = set()
    for label in root.glob("*/labels/*.txt"):
        m = STEM_PATTERN.match(label.stem)
        if m:
            done.add((int(m[1]), int(m[2])))
    return done


def missing(conn: Connection, root: Path, since: datetime) -> dict[int, set[int]]:
    """Snapshots of tickets rejected since ``since`` that the folder lacks: ticket -> evidence."""
    recent = (tickets.c.status == Status.REJECTED, tickets.c.closed_at >= since)
    via_events = (
        select(tickets.c.id, events.c.evidence_id)
        .join(events, events.c.incident_id == tickets.c.incident_id)
        .join(evidence, evidence.c.id == events.c.evidence_id)
        .where(*recent, evidence.c.kind == "snapshot")
    )
    via_ticket = (
        select(tickets.c.id, evidence.c.id)
        .join(evidence, evidence.c.ticket_id == tickets.c.id)
        .where(*recent, evidence.c.kind == "snapshot")
    )
    done = kept(root)
    out: dict[int, set[int]] = defaultdict(set)
    for query in (via_events, via_ticket):
        for tid, eid in conn.execute(query):
            if (int(tid), int(eid)) not in done:
                out[int(tid)].add(int(eid))
    return dict(out)


def _kind_folder(root: Path, kind: str) -> Path:
    """``root/<kind>`` with its images/, labels/ and data.yaml (written once)."""
    if not KIND_PATTERN.match(kind):
        raise ValueError(f"kind {kind!r} is not a folder name (expected {KIND_PATTERN.pattern})")
    folder = root / kind
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    data_yaml = folder / "data.yaml"
    if not data_yaml.exists():
        doc = {"names": {0: kind}, "train": "images", "val": "images", "test": "images"}
        _write_atomic(data_yaml, yaml.safe_dump(doc, sort_keys=False).encode())
    return folder


def _write_atomic(path: Path, data: bytes | Path) -> None:
    """Write (or copy) to a temporary name beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        if isinstance(data, Path):
            shutil.copyfile(data, tmp)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def keep_hard_negatives(
    store: EvidenceStore, root: Path, rejection: Rejection, only: set[int] | None = None
) -> list[Path]:
    """Write the rejection's snapshots (those in ``only``, when given) into ``root/<kind>``:
    the image, its manifest line, then its empty label. Returns the image paths written.

    A snapshot whose file is gone from the evidence store is logged and skipped; a failure to
    write raises (``OSError``), leaving what was done complete and the rest for a retry."""
    written: list[Path] = []
    for snap in rejection.snapshots:
        if only is not None and snap.evidence_id not in only:
            continue
        try:
            src = store.open(snap.path)
        except FileNotFoundError:
            log.warning(
                "snapshot %s of ticket %s is gone from the evidence store; no hard negative "
                "kept for it",
                snap.path,
                rejection.ticket_id,
                extra={"ticket_id": rejection.ticket_id},
            )
            continue
        kind = snap.kind or rejection.category
        folder = _kind_folder(root, kind)
        stem = image_stem(rejection.ticket_id, snap.evidence_id)
        image = folder / "images" / f"{stem}{src.suffix.lower()}"
        _write_atomic(image, src)
        line = json.dumps(manifest_line(rejection, snap, image.name), ensure_ascii=False)
        with (folder / MANIFEST).open("a", encoding="utf-8") as f:
            f.write(line + "\n")
        _write_atomic(folder / "labels" / f"{stem}.txt", b"")
        written.append(image)
    if written:
        log.info(
            "kept %d hard negative(s) of ticket %s under %s",
            len(written),
            rejection.ticket_id,
            root,
            extra={"ticket_id": rejection.ticket_id},
        )
    return written


def keep_after_rejection(
    engine: Engine, store: EvidenceStore, root: Path, ticket_id: int, now: datetime
) -> int:
    """After ``ticket_id``'s rejection is committed: write its hard negatives, and those of
    tickets rejected within ``RETRY_WINDOW`` that earlier attempts missed. Never raises: each
    failure is logged as an error, and what is still missing is written by a later call.
    Returns the number of images written."""
    try:
        with engine.connect() as conn:
            todo = missing(conn, root, now - RETRY_WINDOW)
            order = sorted(todo, key=lambda t: (t != ticket_id, t))[:MAX_TICKETS_PER_CALL]
            rejections = load_rejections(conn, order)
    except Exception:
        log.exception(
            "could not look up the hard negatives to write for ticket %s; the rejection "
            "stands, and they are written by the next rejection",
            ticket_id,
            extra={"ticket_id": ticket_id},
        )
        return 0
    written = 0
    for rejection in rejections:
        try:
            written += len(keep_hard_negatives(store, root, rejection, todo[rejection.ticket_id]))
        except Exception:
            log.exception(
                "hard negatives of ticket %s not written under %s; the rejection stands, and "
                "every rejection until %s tries again",
                rejection.ticket_id,
                root,
                (rejection.rejected_at + RETRY_WINDOW).date().isoformat(),
                extra={"ticket_id": rejection.ticket_id},
            )
    return written
