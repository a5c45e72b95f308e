"""Incident merging: events of one kind, near each other and close in time, are one problem."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from config.site import Category
from dispatcher.grids import distance_m

# One degree of latitude is about 111 km; used to pre-filter candidates in the database.
METRES_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True)
class OpenIncident:
    """What the merge decision needs to know about an open incident."""

    id: int
    kind: str
    lat: float
    lon: float
    last_seen: datetime
    track_keys: tuple[str, ...] = ()


def track_key(device_id: str, source_id: str, track_id: str | None) -> str | None:
    """A camera track's identity across events: the same track always merges into one incident."""
    return f"{device_id}/{source_id}/{track_id}" if track_id else None


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
    import math

    dlat = radius_m / METRES_PER_DEG_LAT
    dlon = radius_m / (METRES_PER_DEG_LAT * max(0.01, math.cos(math.radians(lat))))
    return dlat, dlon
