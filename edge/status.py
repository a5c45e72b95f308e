"""The device's retained heartbeat: per-camera rates since the last report, outbox, model, uptime."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from broker.messages import CameraStatus, DeviceStatus, SensorStatus
from edge.camera import CameraCounters, CameraSnapshot

AGENT_VERSION = "gridwatch-edge 0.1.0"


def _short(text: str | None, limit: int = 500) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _Previous:
    counters: CameraCounters
    at: float
    inference_ms: float | None


class StatusReporter:
    """Turns cumulative camera counters into per-interval rates for each heartbeat."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.started = time.monotonic()
        self._prev: dict[str, _Previous] = {}

    def camera_status(self, snap: CameraSnapshot, now_mono: float) -> CameraStatus:
        c = snap.counters
        prev = self._prev.get(snap.camera_id)
        fps = 0.0
        inference_ms = prev.inference_ms if prev else None
        if prev is not None and now_mono > prev.at:
            fps = (c.samples - prev.counters.samples) / (now_mono - prev.at)
            checks = c.checks - prev.counters.checks
            if checks > 0:
                inference_ms = (c.inference_ms_total - prev.counters.inference_ms_total) / checks
        elif c.checks:
            inference_ms = c.inference_ms_total / c.checks
        self._prev[snap.camera_id] = _Previous(c, now_mono, inference_ms)
        return CameraStatus(
            camera_id=snap.camera_id,
            state=snap.state,
            fps=round(max(fps, 0.0), 3),
            inference_ms=None if inference_ms is None else round(inference_ms, 2),
            skipped_ratio=round(min(max(snap.skipped_ratio, 0.0), 1.0), 4),
            checks=c.checks,
            active_tracks=snap.active_tracks,
            last_frame=snap.last_frame,
            error=_short(snap.error),
        )

    def build(
        self,
        *,
        now: datetime,
        cameras: Sequence[CameraSnapshot],
        sensors: Sequence[SensorStatus],
        outbox_depth: int,
        outbox_evicted: int,
        model: str | None,
        model_version: str | None,
        config_revision: int | None,
        errors: Sequence[str],
        online: bool = True,
    ) -> DeviceStatus:
        mono = time.monotonic()
        return DeviceStatus(
            device_id=self.device_id,
            online=online,
            ts=now,
            uptime_s=round(mono - self.started, 1),
            agent_version=AGENT_VERSION,
            model=model,
            model_version=model_version,
            outbox_depth=outbox_depth,
            outbox_evicted=outbox_evicted,
            config_revision=config_revision,
            cameras=tuple(self.camera_status(s, mono) for s in cameras),
            sensors=tuple(sensors),
            errors=tuple(e for e in (_short(x) for x in errors) if e),
        )
