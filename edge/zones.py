"""Zones (report only inside) and masks (ignore) of a camera, as normalised polygons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from shapely.geometry import Point, Polygon, box
from shapely.ops import unary_union
from shapely.prepared import prep

NormBox = tuple[float, float, float, float]
NormPolygon = Sequence[tuple[float, float]]


def foot_point(b: NormBox) -> tuple[float, float]:
    """Where the object touches the ground: the middle of the box's bottom edge."""
    return ((b[0] + b[2]) / 2, b[3])


@dataclass(frozen=True)
class Verdict:
    """Whether a box may be reported, and if not, why."""

    admitted: bool
    reason: str = ""


class RegionFilter:
    """Decides whether a detection lies where this camera should report it.

    A box is kept when its foot point is inside some zone (or there are no zones) and less
    than ``mask_overlap`` of its area lies under masks.
    """

    def __init__(
        self,
        zones: Sequence[NormPolygon] = (),
        masks: Sequence[NormPolygon] = (),
        mask_overlap: float = 0.5,
    ) -> None:
        zone_polys = [Polygon(z).buffer(0) for z in zones]
        mask_polys = [Polygon(m).buffer(0) for m in masks]
        self._zones = prep(unary_union(zone_polys)) if zone_polys else None
        self._mask = unary_union(mask_polys) if mask_polys else None
        self._mask_overlap = mask_overlap

    def check(self, b: NormBox) -> Verdict:
        if self._zones is not None and not self._zones.covers(Point(foot_point(b))):
            return Verdict(False, "outside every zone")
        if self._mask is not None:
            area = max((b[2] - b[0]) * (b[3] - b[1]), 1e-12)
            covered = self._mask.intersection(box(*b)).area / area
            if covered >= self._mask_overlap:
                return Verdict(False, f"{covered:.0%} under a mask")
        return Verdict(True)


def mask_raster(masks: Sequence[NormPolygon], width: int, height: int) -> NDArray[np.bool_] | None:
    """A ``height x width`` boolean image, True under the masks; None without masks."""
    if not masks:
        return None
    img = np.zeros((height, width), dtype=np.uint8)
    scale = np.array([width, height], dtype=np.float64)
    polys = [np.round(np.asarray(m, dtype=np.float64) * scale).astype(np.int32) for m in masks]
    cv2.fillPoly(img, polys, (1,))
    return img.astype(bool)
