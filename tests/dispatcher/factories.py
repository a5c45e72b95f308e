"""Factories for dispatcher tests: a migrated ticket store, incidents and tickets at chosen times."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, insert, select

from broker import topics
from broker.client import Delivery
from broker.messages import Event
from config.clock import ManualClock
from config.site import GeoPoint, Site
from dispatcher import tickets as ticket_ops
from dispatcher import verify
from dispatcher.evidence import EvidenceStore
from dispatcher.evidence import record as record_evidence
from dispatcher.grids import GridIndex
from dispatcher.intake import Intake
from dispatcher.lifecycle import Transition
from dispatcher.store.db import make_engine, migrate, sqlite_url
from dispatcher.store.schema import audit, incident_tracks, incidents, tickets
from dispatcher.timers import Timers
from simulators.workers import after_photo


def sqlite_store(folder: Path) -> Engine:
    """A fresh, migrated SQLite ticket store in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    engine = make_engine(sqlite_url(folder / "dispatcher.db"))
    migrate(engine)
    return engine


@contextmanager
def refusing_writes(engine: Engine) -> Iterator[None]:
    """The SQLite ticket store refuses every write until the block ends: SQLite answers
    "attempt to write a readonly database" (an ``OperationalError``, as for a read-only or
    full disk), for root too, which a read-only file would not stop. The pool is emptied,
    so every connection taken from the engine inside the block refuses writes."""

    def query_only(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA query_only = ON")

    event.listen(engine, "connect", query_only)
    engine.dispose()
    try:
        yield
    finally:
        event.remove(engine, "connect", query_only)
        engine.dispose()


def new_ticket(
    conn: Connection,
    site: Site,
    *,
    kind: str,
    lat: float,
    lon: float,
    at: datetime,
    source: str = "camera",
    camera_ids: tuple[str, ...] = (),
    actor: str = "test",
) -> int:
    """An open incident with its open ticket (no assignment), as intake would create it."""
    cell = GridIndex(site).locate(lat, lon)
    incident: dict[str, Any] = {
        "kind": kind,
        "status": "open",
        "lat": lat,
        "lon": lon,
        "grid_id": cell.id if cell else None,
        "street_id": cell.street if cell else None,
        "source": source,
        "first_seen": at,
        "last_seen": at,
        "camera_ids": list(camera_ids),
        "track_keys": [],
        "bbox": None,
        "events": 1,
    }
    incident["id"] = conn.execute(
        insert(incidents).values(**incident).returning(incidents.c.id)
    ).scalar_one()
    row = ticket_ops.open_ticket(conn, site=site, incident=incident, at=at, actor=actor)
    return int(row["id"])


def step(
    conn: Connection, ticket_id: int, transition: Transition, at: datetime, **kwargs: Any
) -> None:
    """Apply one transition as the system would."""
    ticket_ops.apply(conn, ticket_id, transition, at=at, actor="test", **kwargs)


def camera_event(
    site: Site,
    camera_id: str,
    at: datetime,
    *,
    kind: str = "garbage",
    state: str = "new",
    track: str | None = "t1",
    position: tuple[float, float] | None = None,
    seq: int = 1,
    bbox: tuple[float, float, float, float] = (0.4, 0.5, 0.6, 0.8),
    **fields: Any,
) -> Event:
    """A camera's event as its edge box would publish it."""
    cam = next(c for c in site.cameras if c.id == camera_id)
    lat, lon = position or (cam.position.lat, cam.position.lon)
    return Event(
        event_id=uuid.uuid4(),
        device_id=cam.device,
        source_id=cam.id,
        source_type="camera",
        kind=kind,
        state=state,
        seq=seq,
        ts=at,
        track_id=track,
        confidence=0.8,
        bbox=bbox,
        position=GeoPoint(lat=lat, lon=lon),
        **fields,
    )


def sensor_event(
    site: Site, sensor_id: str, at: datetime, *, state: str = "new", seq: int = 1
) -> Event:
    s = next(x for x in site.sensors if x.id == sensor_id)
    return Event(
        event_id=uuid.uuid4(),
        device_id=s.device,
        source_id=s.id,
        source_type="sensor",
        kind=s.kind,
        state=state,
        seq=seq,
        ts=at,
        reading=s.threshold * 1.2,
        measure=s.measure,
        position=s.position,
    )


def offset(lat: float, lon: float, north_m: float = 0, east_m: float = 0) -> tuple[float, float]:
    """A point ``north_m`` metres north and ``east_m`` metres east of (lat, lon)."""
    dlat = north_m / 111_195.0
    dlon = east_m / (111_195.0 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


@dataclass
class Desk:
    """The dispatcher's engine on a real store (SQLite, or the PostgreSQL at ``db_url``) without
    the bus: intake, timers and the ticket store driven by a ManualClock. Deliveries are built
    as the bus would hand them in."""

    site: Site
    folder: Path
    clock: ManualClock = field(default_factory=ManualClock)
    acked: list[int] = field(default_factory=list)
    db_url: str | None = None  # another store (PostgreSQL), migrated here; default SQLite

    def __post_init__(self) -> None:
        if self.db_url is None:
            self.engine = sqlite_store(self.folder)
        else:
            self.engine = make_engine(self.db_url)
            migrate(self.engine)
        self.intake = Intake(self.engine, self.site, self.clock, EvidenceStore(self.folder / "ev"))
        self.timers = Timers(self.engine, self.site, self.clock)

    @contextmanager
    def running(self) -> Iterator[Intake]:
        """The intake's own thread takes what is submitted, as in the service, until the end."""
        self.intake.start()
        try:
            yield self.intake
        finally:
            self.intake.stop()

    def send(self, *evs: Event | bytes, topic: str | None = None) -> None:
        batch = []
        for i, ev in enumerate(evs):
            payload = ev.to_json() if isinstance(ev, Event) else ev
            t = topic or (topics.event(ev.device_id) if isinstance(ev, Event) else "gw/v1/x")
            mid = len(self.acked) * 1000 + i
            batch.append(Delivery(t, payload, 1, False, mid, lambda m=mid: self.acked.append(m)))
        self.intake.process(batch)

    def tickets(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r) for r in conn.execute(select(tickets).order_by(tickets.c.id)).mappings()
            ]

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return dict(ticket_ops.load(conn, ticket_id))

    def track_incidents(self) -> dict[str, int]:
        """The incident each track key leads to."""
        with self.engine.connect() as conn:
            return dict(
                conn.execute(
                    select(incident_tracks.c.track_key, incident_tracks.c.incident_id)
                ).all()
            )

    def history(self, ticket_id: int) -> list[tuple[str, str | None, str | None]]:
        """(transition, worker after, actor) per audit row, in order."""
        with self.engine.connect() as conn:
            return [
                (r.transition, r.worker_id, r.actor)
                for r in conn.execute(
                    select(audit).where(audit.c.ticket_id == ticket_id).order_by(audit.c.id)
                )
            ]

    def incident(self, incident_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return dict(
                conn.execute(select(incidents).where(incidents.c.id == incident_id))
                .mappings()
                .one()
            )

    def act(self, ticket_id: int, transition: Transition, **kwargs: Any) -> dict[str, Any]:
        with self.engine.begin() as conn:
            return dict(
                ticket_ops.apply(
                    conn, ticket_id, transition, at=self.clock.now(), actor="test", **kwargs
                )
            )

    def resolve(self, ticket_id: int, *, photo: bool = True) -> list[str]:
        """The worker resolves: as the service does, the after-photo is kept (without
        ``photo``: a ticket resolved with none, as the service once allowed) and the cameras
        are asked; their ids."""
        at = self.clock.now()
        with self.engine.begin() as conn:
            row = ticket_ops.apply(conn, ticket_id, Transition.RESOLVED, at=at, actor="test")
            if photo:
                stored = self.intake.evidence_store.save(
                    after_photo(ticket_id, 1), "after_photo", at
                )
                record_evidence(conn, stored, "after_photo", at, ticket_id)
            return [str(c.camera_id) for c in verify.ask_cameras(conn, self.site, row, at)]
