"""Incident merging: events of one kind, near each other and close in time, are one problem."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from config.site import Category
from dispatcher.grids import distance_m

# A little under the length of a degree of latitude (111.2 km), so boxes err on the large side.
METRES_PER_DEG_LAT = 111_000.0
# Side of the squares (in degrees, about 1.1 km north-south) that merge locks are taken on.
LOCK_CELL_DEG = 0.01


@dataclass(frozen=True)
class OpenIncident:
    """What the merge decision needs to know about an open incident."""

    id: int
    kind: str
    lat: float
    lon: float
    last_seen: datetime
    track_keys: tuple[str, ...] = ()


def track_key(device_id: str, source_id: str, source_type: str, track_id: str | None) -> str | None:
    """What keeps seeing one problem across events: a camera's track, or a sensor itself.

    The same key always merges into one incident. Citizen reports have none."""
    if source_type == "sensor":
        return f"{device_id}/{source_id}"
    if source_type == "camera" and track_id:
        return f"{device_id}/{source_id}/{track_id}"
    return None


def match_incident(
    *,
    kind: str,
    lat: float,
    lon: float,
    at: datetime,
    key: str | None,
    category: Category,
    candidates: Iterable[OpenIncident],
) -> OpenIncident | None:
    """The open incident this observation belongs to, or None for a new one.

    Same track: always that incident. Otherwise the nearest incident of the same kind within
    the category's merge radius whose last sighting is within its merge window.
    """
    window = timedelta(minutes=category.merge_window_minutes)
    best: tuple[float, OpenIncident] | None = None
    for inc in candidates:
        if inc.kind != kind:
            continue
        if key is not None and key in inc.track_keys:
            return inc
        if abs(at - inc.last_seen) > window:
            continue
        d = distance_m(lat, lon, inc.lat, inc.lon)
        if d <= category.merge_radius_m and (best is None or d < best[0]):
            best = (d, inc)
    return best[1] if best else None


def search_box(lat: float, radius_m: float) -> tuple[float, float]:
    """Half-sizes (dlat, dlon) in degrees of a box that contains a circle of ``radius_m``."""
    dlat = radius_m / METRES_PER_DEG_LAT
    dlon = radius_m / (METRES_PER_DEG_LAT * max(0.01, math.cos(math.radians(lat))))
    return dlat, dlon


def _lock_id(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


def merge_locks(kind: str, lat: float, lon: float, radius_m: float, key: str | None) -> set[int]:
    """The advisory lock ids an observation must hold while it looks for its incident.

    The plane is cut into squares of LOCK_CELL_DEG; an observation locks every square its
    merge circle's bounding box touches (and its track key). Two observations of one kind
    within ``radius_m`` of each other always share a square (each box holds the other
    point), so two dispatcher processes can never both miss each other and open two
    incidents for one problem.
    """
    dlat, dlon = search_box(lat, radius_m)
    rows = range(
        math.floor((lat - dlat) / LOCK_CELL_DEG), math.floor((lat + dlat) / LOCK_CELL_DEG) + 1
    )
    cols = range(
        math.floor((lon - dlon) / LOCK_CELL_DEG), math.floor((lon + dlon) / LOCK_CELL_DEG) + 1
    )
    out = {_lock_id(f"merge|{kind}|{r}|{c}") for r in rows for c in cols}
    if key is not None:
        out.add(_lock_id(f"track|{key}"))
    return out
