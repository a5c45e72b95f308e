"""Factories for dispatcher tests: a migrated ticket store, incidents and tickets at chosen times."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert

from config.site import Site
from dispatcher import tickets as ticket_ops
from dispatcher.grids import GridIndex
from dispatcher.lifecycle import Transition
from dispatcher.store.db import make_engine, migrate, sqlite_url
from dispatcher.store.schema import incidents


def sqlite_store(folder: Path) -> Engine:
    """A fresh, migrated SQLite ticket store in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    engine = make_engine(sqlite_url(folder / "dispatcher.db"))
    migrate(engine)
    return engine


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
) -> int:
    """An open incident with its open ticket (no assignment), as intake would create it."""
    cell = GridIndex(site).locate(lat, lon)
    incident: dict[str, Any] = {
        "kind": kind, "status": "open", "lat": lat, "lon": lon,
        "grid_id": cell.id if cell else None, "street_id": cell.street if cell else None,
        "source": source, "first_seen": at, "last_seen": at, "camera_ids": list(camera_ids),
        "track_keys": [], "bbox": None, "events": 1,
    }
    incident["id"] = conn.execute(
        insert(incidents).values(**incident).returning(incidents.c.id)
    ).scalar_one()
    row = ticket_ops.open_ticket(conn, site=site, incident=incident, at=at, actor="test")
    return int(row["id"])


def step(conn: Connection, ticket_id: int, transition: Transition, at: datetime,
         **kwargs: Any) -> None:
    """Apply one transition as the system would."""
    ticket_ops.apply(conn, ticket_id, transition, at=at, actor="test", **kwargs)
