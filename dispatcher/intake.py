"""Event intake: parse, de-duplicate on event_id, merge into incidents, open and assign tickets.

Deliveries arrive on the MQTT network thread and are queued; one intake thread takes them in
batches, processes a batch in one transaction (each event in its own savepoint, so one bad
event cannot spoil the others), commits, and only then acknowledges them to the broker. A
crash before the commit means the broker redelivers, and the ``event_id`` key makes the
redelivery harmless.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import OperationalError

from broker import topics
from broker.client import Delivery
from broker.messages import Event, MessageError
from config.clock import Clock
from config.site import Site
from dispatcher import tickets as ticket_ops
from dispatcher.evidence import BadImage, EvidenceStore
from dispatcher.grids import GridIndex
from dispatcher.incidents import OpenIncident, match_incident, search_box, track_key
from dispatcher.lifecycle import Status, Transition
from dispatcher.store.schema import dead_letters, events, evidence, incidents
from dispatcher.store.schema import tickets as tickets_table

log = logging.getLogger(__name__)

MAX_DEAD_LETTER_BYTES = 64 * 1024
FUTURE_TOLERANCE = timedelta(seconds=60)


class Rejected(ValueError):
    """An event that cannot be processed; it goes to the dead-letter table with this reason."""


@dataclass
class IntakeStats:
    received: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    tickets_opened: int = 0
    batches: int = 0


@dataclass
class Intake:
    """Turns event deliveries into incidents and tickets."""

    engine: Engine
    site: Site
    clock: Clock
    evidence_store: EvidenceStore
    on_committed: Callable[[], None] = lambda: None
    batch_size: int = 500
    stats: IntakeStats = field(default_factory=IntakeStats)

    def __post_init__(self) -> None:
        self.grids = GridIndex(self.site)
        self._queue: queue.Queue[Delivery] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._devices = {d.id for d in self.site.devices}
        self._positions = {c.id: c.position for c in self.site.cameras} | {
            s.id: s.position for s in self.site.sensors
        }

    # -- threading -----------------------------------------------------------------------
    def submit(self, delivery: Delivery) -> None:
        """Called on the network thread: queue and return at once."""
        self._queue.put(delivery)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def backlog(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._process_with_retry(batch)
            except Exception:
                log.exception("intake batch of %d failed; messages stay unacknowledged", len(batch))
                for d in batch:
                    self._queue.put(d)
                self._stop.wait(1)

    def _process_with_retry(self, batch: list[Delivery]) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self.process(batch)
                return
            except OperationalError as exc:
                # The store is unavailable (disk full, locked, server away): keep the batch,
                # do not ack, try again; the broker keeps the messages meanwhile.
                log.error("ticket store unavailable, retrying in %.1fs: %s", delay, exc.orig)
                self._stop.wait(delay)
                delay = min(delay * 2, 30)

    # -- processing ----------------------------------------------------------------------
    def process(self, batch: list[Delivery]) -> None:
        """Process deliveries in one transaction, then ack them."""
        received_at = self.clock.now()
        with self.engine.begin() as conn:
            for d in batch:
                self.stats.received += 1
                try:
                    with conn.begin_nested():
                        self._handle(conn, d, received_at)
                except (Rejected, MessageError, BadImage) as exc:
                    self._dead_letter(conn, d, str(exc), received_at)
                except OperationalError:
                    raise
                except Exception as exc:
                    log.exception("event from %s failed; dead-lettered", d.topic)
                    self._dead_letter(conn, d, f"internal error: {exc!r}", received_at)
        self.stats.batches += 1
        for d in batch:
            d.ack()
        self.on_committed()

    def _dead_letter(self, conn: Connection, d: Delivery, reason: str, at: datetime) -> None:
        parsed = topics.parse_edge(d.topic)
        self.stats.dead_letters += 1
        log.warning(
            "dead letter from %s: %s",
            d.topic,
            reason,
            extra={"topic": d.topic, "device_id": parsed.device_id if parsed else None},
        )
        conn.execute(
            insert(dead_letters).values(
                received_at=at,
                topic=d.topic[:255],
                device_id=parsed.device_id if parsed else None,
                reason=reason[:2000],
                payload=d.payload[:MAX_DEAD_LETTER_BYTES],
                size=len(d.payload),
            )
        )

    def _handle(self, conn: Connection, d: Delivery, received_at: datetime) -> None:
        parsed = topics.parse_edge(d.topic)
        if parsed is None or parsed.channel != "event":
            raise Rejected(f"not an event topic: {d.topic}")
        ev = Event.from_json(d.payload)
        if ev.device_id != parsed.device_id:
            raise Rejected(f"device_id {ev.device_id!r} does not match topic device {parsed.device_id!r}")
        if ev.device_id not in self._devices:
            raise Rejected(f"unknown device {ev.device_id!r}")
        if ev.kind not in self.site.categories:
            raise Rejected(f"unknown category {ev.kind!r}")
        self.record(conn, ev, received_at)

    def record(self, conn: Connection, ev: Event, received_at: datetime) -> int | None:
        """Store one event and apply it; returns the incident id (None for a duplicate)."""
        ts, ts_source = ev.ts, "device"
        if ev.ts > received_at + FUTURE_TOLERANCE:
            ts, ts_source = received_at, "received"
            log.warning(
                "device clock ahead by %s; using receive time",
                ev.ts - received_at,
                extra={"device_id": ev.device_id, "event_id": ev.event_id},
            )
        pos = ev.position or self._positions.get(ev.source_id)
        if pos is None:
            raise Rejected(f"event has no position and source {ev.source_id!r} is not in the site")
        body = ev.model_dump(mode="json", by_alias=True, exclude={"snapshot"}, exclude_none=True)
        inserted = ticket_ops.insert_ignore(
            conn,
            events,
            {
                "event_id": str(ev.event_id),
                "device_id": ev.device_id,
                "source_id": ev.source_id,
                "source_type": ev.source_type,
                "kind": ev.kind,
                "state": ev.state,
                "seq": ev.seq,
                "device_ts": ev.ts,
                "ts": ts,
                "ts_source": ts_source,
                "received_at": received_at,
                "lat": pos.lat,
                "lon": pos.lon,
                "confidence": ev.confidence,
                "body": body,
            },
        )
        if not inserted:
            self.stats.duplicates += 1
            log.debug("duplicate event ignored", extra={"event_id": ev.event_id})
            return None
        evidence_id = self._store_evidence(conn, ev, received_at)
        key = track_key(ev.device_id, ev.source_id, ev.track_id)
        incident = self._find_incident(conn, ev.kind, pos.lat, pos.lon, ts, key)
        if ev.state == "cleared":
            if incident is not None:
                self._cleared(conn, incident, ev, ts)
            incident_id = incident.id if incident else None
        elif incident is None:
            incident_id = self._open(conn, ev, pos.lat, pos.lon, ts, key)
        else:
            incident_id = incident.id
            self._touch(conn, incident, ev, ts, key)
        conn.execute(
            update(events)
            .where(events.c.event_id == str(ev.event_id))
            .values(incident_id=incident_id, evidence_id=evidence_id)
        )
        if evidence_id is not None and incident_id is not None:
            ticket_id = conn.execute(
                select(tickets_table.c.id).where(tickets_table.c.incident_id == incident_id)
            ).scalar()
            conn.execute(update(evidence).where(evidence.c.id == evidence_id).values(ticket_id=ticket_id))
        return incident_id

    def _store_evidence(self, conn: Connection, ev: Event, at: datetime) -> int | None:
        if ev.snapshot is None:
            return None
        stored = self.evidence_store.save(ev.snapshot.jpeg(), "snapshot", at)
        crop = ev.snapshot.crop()
        if crop:
            self.evidence_store.save(crop, "crop", at)
        return int(
            conn.execute(
                insert(evidence)
                .values(
                    kind="snapshot",
                    path=stored.path,
                    sha256=stored.sha256,
                    bytes=stored.size,
                    created_at=at,
                )
                .returning(evidence.c.id)
            ).scalar_one()
        )

    def _find_incident(
        self, conn: Connection, kind: str, lat: float, lon: float, at: datetime, key: str | None
    ) -> OpenIncident | None:
        category = self.site.categories[kind]
        dlat, dlon = search_box(lat, category.merge_radius_m)
        rows = conn.execute(
            select(
                incidents.c.id,
                incidents.c.kind,
                incidents.c.lat,
                incidents.c.lon,
                incidents.c.last_seen,
                incidents.c.track_keys,
            ).where(
                incidents.c.status == "open",
                incidents.c.kind == kind,
                incidents.c.lat.between(lat - dlat, lat + dlat),
                incidents.c.lon.between(lon - dlon, lon + dlon),
            )
        ).all()
        candidates = [
            OpenIncident(r.id, r.kind, r.lat, r.lon, r.last_seen, tuple(r.track_keys or ()))
            for r in rows
        ]
        if key is not None and not candidates:
            # A long-lived track may have drifted outside the radius: look it up by key.
            for r in conn.execute(
                select(incidents).where(incidents.c.status == "open", incidents.c.kind == kind)
            ).mappings():
                if key in (r["track_keys"] or ()):
                    return OpenIncident(
                        r["id"], r["kind"], r["lat"], r["lon"], r["last_seen"], tuple(r["track_keys"])
                    )
        return match_incident(
            kind=kind, lat=lat, lon=lon, at=at, key=key, category=category, candidates=candidates
        )

    def _open(
        self, conn: Connection, ev: Event, lat: float, lon: float, at: datetime, key: str | None
    ) -> int:
        cell = self.grids.locate(lat, lon)
        incident: dict[str, Any] = {
            "kind": ev.kind,
            "status": "open",
            "lat": lat,
            "lon": lon,
            "grid_id": cell.id if cell else None,
            "street_id": cell.street if cell else None,
            "source": ev.source_type,
            "first_seen": at,
            "last_seen": at,
            "camera_ids": [ev.source_id] if ev.source_type == "camera" else [],
            "track_keys": [key] if key else [],
            "bbox": list(ev.bbox) if ev.bbox else None,
            "events": 1,
        }
        incident_id = int(
            conn.execute(insert(incidents).values(**incident).returning(incidents.c.id)).scalar_one()
        )
        incident["id"] = incident_id
        actor = f"device:{ev.device_id}"
        ticket = ticket_ops.open_ticket(conn, site=self.site, incident=incident, at=at, actor=actor)
        ticket_ops.assign(conn, self.site, ticket["id"], at=at, actor="system")
        self.stats.tickets_opened += 1
        return incident_id

    def _touch(
        self, conn: Connection, inc: OpenIncident, ev: Event, at: datetime, key: str | None
    ) -> None:
        row = conn.execute(select(incidents).where(incidents.c.id == inc.id)).mappings().one()
        cams = list(row["camera_ids"] or [])
        if ev.source_type == "camera" and ev.source_id not in cams:
            cams.append(ev.source_id)
        keys = list(row["track_keys"] or [])
        if key and key not in keys:
            keys.append(key)
        conn.execute(
            update(incidents)
            .where(incidents.c.id == inc.id)
            .values(
                last_seen=max(row["last_seen"], at),
                camera_ids=cams,
                track_keys=keys,
                bbox=list(ev.bbox) if ev.bbox else row["bbox"],
                events=row["events"] + 1,
                cleared_at=None,
            )
        )

    def _cleared(self, conn: Connection, inc: OpenIncident, ev: Event, at: datetime) -> None:
        """The camera or sensor says the problem is gone; cancel if nobody has set out yet."""
        conn.execute(update(incidents).where(incidents.c.id == inc.id).values(cleared_at=at))
        ticket = conn.execute(
            select(tickets_table).where(tickets_table.c.incident_id == inc.id)
        ).mappings().first()
        if ticket is None:
            return
        status = Status(ticket["status"])
        not_started = status in (Status.OPEN, Status.ASSIGNED) or (
            status is Status.ACCEPTED and ticket["arrived_at"] is None
        )
        if not_started:
            ticket_ops.apply(
                conn,
                ticket["id"],
                Transition.CANCELLED,
                at=at,
                actor=f"device:{ev.device_id}",
                reason=f"cleared by {ev.source_type} {ev.source_id} before anyone arrived",
                close_reason="cleared_by_camera" if ev.source_type == "camera" else "cleared_by_sensor",
            )
