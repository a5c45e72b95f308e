"""Device health for supervisors: online or not, frame rates, last seen, outbox depth."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlalchemy import select

from config.site import Device, Site
from dispatcher.api.deps import DispatcherDep, SupervisorUser, User
from dispatcher.api.models import (
    CameraHealth,
    DevicePage,
    DevicePublic,
    ErrorPublic,
    Responses,
    SensorHealth,
)
from dispatcher.grids import GridIndex
from dispatcher.service import Dispatcher
from dispatcher.store.schema import devices

log = logging.getLogger(__name__)
router = APIRouter(prefix="/devices", tags=["devices"])
RESPONSES: Responses = {
    401: {"model": ErrorPublic, "description": "not logged in"},
    403: {"model": ErrorPublic, "description": "only for supervisors and the admin"},
}


def device_grids(site: Site, device: Device) -> set[str]:
    """The grid cells where a device's cameras and sensors stand."""
    index = GridIndex(site)
    points = [c.position for c in site.cameras_of(device.id)]
    points += [s.position for s in site.sensors_of(device.id)]
    cells = (index.locate(p.lat, p.lon) for p in points)
    return {c.id for c in cells if c is not None}


def _visible(user: User, site: Site, device: Device) -> bool:
    return user.role == "admin" or any(user.oversees_grid(g) for g in device_grids(site, device))


def _public(device: Device, row: Mapping[Any, Any] | None) -> DevicePublic:
    body: dict[str, Any] = dict((row or {}).get("status") or {})
    cameras = [
        CameraHealth(
            camera_id=c["camera_id"],
            state=c.get("state", "unknown"),
            fps=float(c.get("fps") or 0),
            inference_ms=c.get("inference_ms"),
            last_frame=c.get("last_frame"),
            error=c.get("error"),
        )
        for c in body.get("cameras") or ()
    ]
    sensors = [
        SensorHealth(
            sensor_id=s["sensor_id"],
            value=s.get("value"),
            alarm=bool(s.get("alarm")),
            last_reading=s.get("last_reading"),
            error=s.get("error"),
        )
        for s in body.get("sensors") or ()
    ]
    return DevicePublic(
        id=device.id,
        kind=device.kind,
        online=bool(row and row["online"]),
        last_seen=row["last_seen"] if row else None,
        fps=round(sum(c.fps for c in cameras), 2) if cameras else None,
        outbox_depth=body.get("outbox_depth"),
        agent_version=body.get("agent_version"),
        model_version=body.get("model_version"),
        uptime_s=body.get("uptime_s"),
        cameras=cameras,
        sensors=sensors,
        errors=[str(e) for e in body.get("errors") or ()],
    )


def _status_rows(d: Dispatcher) -> dict[str, Mapping[Any, Any]]:
    with d.engine.connect() as conn:
        return {r["device_id"]: r for r in conn.execute(select(devices)).mappings().all()}


@router.get("", response_model=DevicePage, responses=RESPONSES)
def list_devices(
    d: DispatcherDep,
    user: SupervisorUser,
    online: Annotated[bool | None, Query()] = None,
    kind: Annotated[Literal["edge", "sensor_node"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> DevicePage:
    """The site's devices whose cameras or sensors stand in your streets, with their health."""
    rows = _status_rows(d)
    chosen = [
        _public(dev, rows.get(dev.id))
        for dev in d.site.devices
        if _visible(user, d.site, dev) and (kind is None or dev.kind == kind)
    ]
    if online is not None:
        chosen = [p for p in chosen if p.online == online]
    return DevicePage(
        items=chosen[offset : offset + limit], total=len(chosen), limit=limit, offset=offset
    )


@router.get(
    "/{device_id}",
    response_model=DevicePublic,
    responses=RESPONSES | {404: {"model": ErrorPublic, "description": "no such device"}},
)
def get_device(
    device_id: Annotated[str, Path(max_length=64)], d: DispatcherDep, user: SupervisorUser
) -> DevicePublic:
    device = d.site.device(device_id)
    if device is None or not _visible(user, d.site, device):
        if device is not None:
            log.warning("denied: %s asked for device %s", user.actor, device_id)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"device {device_id!r} not found")
    return _public(device, _status_rows(d).get(device_id))
