"""Where an object is: a camera's ground-plane homography from image points to lat/lon."""

from __future__ import annotations

import math

import cv2
import numpy as np

from config.site import GeoPoint, GroundPlane

EARTH_RADIUS_M = 6_371_008.8


class GroundMapping:
    """Maps a normalised image point on the ground to WGS-84 through a homography.

    The four geo points are turned into metres east/north of their centroid (an
    equirectangular projection, exact enough over a street) before
    ``cv2.getPerspectiveTransform``, which keeps float precision at the centimetre level.
    """

    def __init__(self, plane: GroundPlane) -> None:
        self._lat0 = sum(p.lat for p in plane.geo) / 4
        self._lon0 = sum(p.lon for p in plane.geo) / 4
        self._m_per_deg_lat = math.radians(1) * EARTH_RADIUS_M
        self._m_per_deg_lon = self._m_per_deg_lat * math.cos(math.radians(self._lat0))
        src = np.array(plane.image, dtype=np.float32)
        dst = np.array([self._to_metres(p) for p in plane.geo], dtype=np.float32)
        self._h = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
        centre = self._h @ np.array([*src.mean(axis=0), 1.0])
        self._sign = 1.0 if centre[2] > 0 else -1.0  # the ground side of the horizon

    def _to_metres(self, p: GeoPoint) -> tuple[float, float]:
        return (
            (p.lon - self._lon0) * self._m_per_deg_lon,
            (p.lat - self._lat0) * self._m_per_deg_lat,
        )

    def to_geo(self, x: float, y: float) -> GeoPoint | None:
        """The lat/lon of normalised image point (x, y); None above the horizon."""
        vx, vy, w = self._h @ np.array([x, y, 1.0])
        if w * self._sign <= 1e-12:
            return None
        east, north = vx / w, vy / w
        lat = self._lat0 + north / self._m_per_deg_lat
        lon = self._lon0 + east / self._m_per_deg_lon
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return None
        return GeoPoint(lat=round(lat, 7), lon=round(lon, 7))
