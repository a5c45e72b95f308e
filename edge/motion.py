"""The motion gate: a cheap change measure on a small grey frame decides when to run the detector.

What we look for stands still (a pile, an open shaft), so the gate has three triggers:
``motion`` (the frame changed since the previous sample), ``slow_change`` (it changed since the
last detector run, however slowly: dumping over minutes, dusk) and ``periodic`` (a static scene
is still checked every ``static_check_s``). The caller may also ``force`` a run (a track that
needs confirming or clearing, a command). Masked pixels are ignored (a busy road under a mask
does not wake the detector).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.settings import MotionSettings
from edge.zones import NormPolygon, mask_raster

Grey = NDArray[np.uint8]


@dataclass(frozen=True)
class GateDecision:
    """Whether to run the detector on this frame, why, and the two change measures."""

    run: bool
    reason: str
    motion: float
    drift: float


class MotionGate:
    """Per-camera gate state: the previous sample and the frame of the last detector run."""

    def __init__(self, settings: MotionSettings, masks: Sequence[NormPolygon] = ()) -> None:
        self.settings = settings
        self._masks = tuple(masks)
        self._keep: NDArray[np.bool_] | None = None
        self._keep_count = 0
        self._shape: tuple[int, ...] | None = None
        self._prev: Grey | None = None
        self._ref: Grey | None = None
        self._last_run_t: float | None = None
        self.frames = 0
        self.skipped = 0

    def configure(self, settings: MotionSettings, masks: Sequence[NormPolygon]) -> None:
        """Apply new settings or masks (live config); the next frame starts afresh."""
        if settings != self.settings or tuple(masks) != self._masks:
            self.settings = settings
            self._masks = tuple(masks)
            self._prev = self._ref = None
            self._shape = None

    @property
    def skipped_ratio(self) -> float:
        return self.skipped / self.frames if self.frames else 0.0

    def small(self, frame_bgr: NDArray[np.uint8]) -> Grey:
        """The frame downscaled to the gate width, grey and slightly blurred."""
        h, w = frame_bgr.shape[:2]
        gw = min(self.settings.width, w)
        gh = max(1, round(h * gw / w))
        tiny = cv2.resize(frame_bgr, (gw, gh), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(tiny, cv2.COLOR_BGR2GRAY) if tiny.ndim == 3 else tiny
        return np.asarray(cv2.GaussianBlur(grey, (5, 5), 0), dtype=np.uint8)

    def _changed(self, a: Grey, b: Grey) -> float:
        moved = cv2.absdiff(a, b) > self.settings.pixel_threshold
        if self._keep is not None:
            moved &= self._keep
        return float(np.count_nonzero(moved)) / max(self._keep_count, 1)

    def observe(self, frame_bgr: NDArray[np.uint8], t: float, force: bool = False) -> GateDecision:
        """Measure the change at time ``t`` (seconds) and decide; counts frames and skips."""
        self.frames += 1
        small = self.small(frame_bgr)
        if self._shape != small.shape:
            self._shape = small.shape
            masked = mask_raster(self._masks, small.shape[1], small.shape[0])
            self._keep = None if masked is None else ~masked
            self._keep_count = small.size if masked is None else int(np.count_nonzero(~masked))
            self._prev = self._ref = None
        motion = self._changed(small, self._prev) if self._prev is not None else 1.0
        drift = self._changed(small, self._ref) if self._ref is not None else 1.0
        self._prev = small
        s = self.settings
        if self._ref is None or self._last_run_t is None:
            reason = "first"
        elif force:
            reason = "forced"
        elif not s.enabled:
            reason = "gate off"
        elif motion >= s.motion_fraction:
            reason = "motion"
        elif drift >= s.slow_change_fraction:
            reason = "slow_change"
        elif t - self._last_run_t >= s.static_check_s:
            reason = "periodic"
        else:
            self.skipped += 1
            return GateDecision(False, "", motion, drift)
        self._ref = small
        self._last_run_t = t
        return GateDecision(True, reason, motion, drift)
