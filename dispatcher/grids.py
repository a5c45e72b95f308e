"""Which grid cell holds a point (shapely STRtree), and distances on the ground."""

from __future__ import annotations

import math

from shapely import STRtree
from shapely.geometry import Point

from config.site import GridCell, Site

EARTH_RADIUS_M = 6_371_008.8


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


class GridIndex:
    """Point-in-polygon lookup over the site's grid cells."""

    def __init__(self, site: Site) -> None:
        self._cells = list(site.grids)
        self._tree = STRtree([c.polygon for c in self._cells])

    def locate(self, lat: float, lon: float) -> GridCell | None:
        """The cell containing the point (GeoJSON order: x = lon, y = lat), or None outside all."""
        point = Point(lon, lat)
        hits = self._tree.query(point, predicate="intersects")
        if len(hits) == 0:
            return None
        return self._cells[int(min(hits))]
