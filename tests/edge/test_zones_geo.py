"""Zones and masks on normalised boxes; the ground-plane homography to lat/lon."""

from __future__ import annotations

import math

import pytest

from config.site import GeoPoint, GroundPlane
from edge.geo import GroundMapping
from edge.zones import RegionFilter, foot_point, mask_raster

LOWER_HALF = [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]
LEFT_THIRD = [(0.0, 0.0), (0.33, 0.0), (0.33, 1.0), (0.0, 1.0)]


def test_no_zones_no_masks_admits_everything() -> None:
    assert RegionFilter().check((0.1, 0.1, 0.2, 0.2)).admitted


def test_zone_uses_the_foot_point() -> None:
    f = RegionFilter(zones=[LOWER_HALF])
    assert f.check((0.4, 0.3, 0.5, 0.6)).admitted  # top above the zone, foot inside
    verdict = f.check((0.4, 0.1, 0.5, 0.4))
    assert not verdict.admitted and "zone" in verdict.reason
    assert foot_point((0.4, 0.3, 0.5, 0.6)) == pytest.approx((0.45, 0.6))


def test_mask_drops_boxes_mostly_under_it() -> None:
    f = RegionFilter(masks=[LEFT_THIRD])
    assert not f.check((0.05, 0.5, 0.25, 0.7)).admitted
    assert not f.check((0.1, 0.5, 0.4, 0.7)).admitted  # 77 % under the mask
    assert f.check((0.25, 0.5, 0.55, 0.7)).admitted  # 27 % under the mask


def test_mask_raster() -> None:
    r = mask_raster([LEFT_THIRD], 90, 30)
    assert r is not None and r.shape == (30, 90)
    assert r[:, :28].all() and not r[:, 32:].any()
    assert mask_raster([], 10, 10) is None


PLANE = GroundPlane(
    image=((0.05, 0.98), (0.95, 0.98), (0.75, 0.40), (0.25, 0.40)),
    geo=(
        GeoPoint(lat=39.95622, lon=116.41644),
        GeoPoint(lat=39.95622, lon=116.41656),
        GeoPoint(lat=39.9564, lon=116.4166),
        GeoPoint(lat=39.9564, lon=116.4164),
    ),
)


def metres(a: GeoPoint, b: GeoPoint) -> float:
    dy = (a.lat - b.lat) * 111_195
    dx = (a.lon - b.lon) * 111_195 * math.cos(math.radians(a.lat))
    return math.hypot(dx, dy)


def test_the_four_image_points_map_to_their_geo_points() -> None:
    g = GroundMapping(PLANE)
    for (x, y), want in zip(PLANE.image, PLANE.geo, strict=True):
        got = g.to_geo(x, y)
        assert got is not None and metres(got, want) < 0.05


def test_points_between_map_between_and_the_sky_maps_nowhere() -> None:
    g = GroundMapping(PLANE)
    mid = g.to_geo(0.5, 0.98)
    assert mid is not None
    assert mid.lat == pytest.approx(39.95622, abs=1e-6)
    assert mid.lon == pytest.approx(116.4165, abs=1e-6)
    far = g.to_geo(0.5, 0.45)
    near = g.to_geo(0.5, 0.9)
    assert far is not None and near is not None and far.lat > near.lat
    assert g.to_geo(0.5, 0.05) is None  # above the horizon of this ground plane
