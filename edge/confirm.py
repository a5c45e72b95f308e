"""Temporal confirmation of one track: when it becomes a ``new`` event, an ``update``, ``cleared``.

A pure state machine: ``confirm_track(state, rule, t, sighting)`` takes the track's state, the
rules, the time of a detector run (seconds on the camera's clock) and what that run saw of
the track (a ``Sighting``, or None for a miss), and returns the next state and the event to
send, if any. Nothing here reads a clock or a frame.

- A track starts *tentative* (the caller starts one only for a detection above the class's
  ``min_confidence``; it keeps it with detections above ``keep_confidence``: hysteresis).
- It is *confirmed* (``new``) once seen in K of the last N checks and its first sighting is
  at least T seconds old. A tentative track that can no longer reach K of N is dropped.
- A confirmed track sends ``update`` when its confidence moves by ``update_conf_delta`` or its
  box's IoU with the last reported box falls below ``update_iou_below``, at most once per
  ``update_min_interval_s``.
- It is ``cleared`` after ``clear_seconds`` of absence measured over checks that ran: from the
  first missed check on, with each gap between checks counted at most ``max_check_gap_s`` (a
  stalled stream clears nothing), and at least ``clear_min_checks`` misses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from config.site import ClassRule
from edge.settings import TrackingSettings

NormBox = tuple[float, float, float, float]
Phase = Literal["tentative", "confirmed"]
Action = Literal["new", "update", "cleared", "drop"]
SMOOTHING = 0.5  # weight of the newest confidence in the track's running confidence


@dataclass(frozen=True)
class ConfirmRule:
    """Everything the state machine needs about one class on one camera."""

    confirm_hits: int = 3
    confirm_checks: int = 5
    confirm_seconds: float = 10.0
    clear_seconds: float = 20.0
    clear_min_checks: int = 3
    max_check_gap_s: float = 10.0
    update_min_interval_s: float = 60.0
    update_conf_delta: float = 0.15
    update_iou_below: float = 0.5

    @classmethod
    def of(cls, rule: ClassRule, tracking: TrackingSettings) -> ConfirmRule:
        return cls(
            confirm_hits=rule.confirm_hits,
            confirm_checks=rule.confirm_checks,
            confirm_seconds=rule.confirm_seconds,
            clear_seconds=rule.clear_seconds,
            clear_min_checks=tracking.clear_min_checks,
            max_check_gap_s=tracking.max_check_gap_s,
            update_min_interval_s=tracking.update_min_interval_s,
            update_conf_delta=tracking.update_conf_delta,
            update_iou_below=tracking.update_iou_below,
        )


@dataclass(frozen=True)
class Sighting:
    """What one detector run saw of a track: confidence and normalised box."""

    confidence: float
    box: NormBox


@dataclass(frozen=True)
class TrackState:
    """The confirmation state of one track."""

    phase: Phase
    first_seen: float
    last_seen: float
    last_check: float
    window: tuple[bool, ...]
    misses: int
    absent_s: float
    confidence: float
    box: NormBox
    reported_conf: float | None = None
    reported_box: NormBox | None = None
    reported_at: float | None = None

    @property
    def missing(self) -> bool:
        """Confirmed but not seen at the last check: it may be about to clear."""
        return self.phase == "confirmed" and self.misses > 0


def iou(a: NormBox, b: NormBox) -> float:
    """Intersection over union of two boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reported(state: TrackState, t: float) -> TrackState:
    return replace(state, reported_conf=state.confidence, reported_box=state.box, reported_at=t)


def _start(t: float, sighting: Sighting) -> TrackState:
    """A track's state after its first sighting."""
    return TrackState(
        phase="tentative",
        first_seen=t,
        last_seen=t,
        last_check=t,
        window=(True,),
        misses=0,
        absent_s=0.0,
        confidence=sighting.confidence,
        box=sighting.box,
    )


def _observe(
    state: TrackState, rule: ConfirmRule, t: float, sighting: Sighting | None
) -> TrackState:
    """What a detector run at time ``t`` saw of a track, taken into its state (no decision)."""
    n = rule.confirm_checks
    if sighting is not None:
        return replace(
            state,
            last_seen=t,
            last_check=t,
            window=(*state.window, True)[-n:],
            misses=0,
            absent_s=0.0,
            confidence=SMOOTHING * sighting.confidence + (1 - SMOOTHING) * state.confidence,
            box=sighting.box,
        )
    gap = max(0.0, t - state.last_check)
    return replace(
        state,
        last_check=t,
        window=(*state.window, False)[-n:],
        misses=state.misses + 1,
        absent_s=state.absent_s + (min(gap, rule.max_check_gap_s) if state.misses else 0.0),
    )


def confirm_track(
    state: TrackState | None, rule: ConfirmRule, t: float, sighting: Sighting | None
) -> tuple[TrackState | None, Action | None]:
    """Advance one track by one detector run at time ``t``; return its new state and event.

    ``state`` None starts a track from ``sighting``. A returned state of None means the
    track is gone (``drop`` for an unconfirmed one, ``cleared`` for a confirmed one).
    """
    if state is None:
        if sighting is None:
            return None, None
        return _maybe_confirm(_start(t, sighting), rule, t)
    state = _observe(state, rule, t, sighting)
    if sighting is not None:
        if state.phase == "tentative":
            return _maybe_confirm(state, rule, t)
        return _maybe_update(state, rule, t)
    if state.phase == "tentative":
        if state.misses > rule.confirm_checks - rule.confirm_hits:
            return None, "drop"
        return state, None
    if state.absent_s >= rule.clear_seconds and state.misses >= rule.clear_min_checks:
        return None, "cleared"
    return state, None


def unreported(
    state: TrackState | None, rule: ConfirmRule, t: float, sighting: Sighting | None
) -> TrackState | None:
    """The state to keep when the event ``confirm_track(state, rule, t, sighting)`` decided on
    could not be reported (the outbox could not store it): what the run saw is taken, the
    change is not. A track that was to be confirmed stays tentative, one that was to be
    cleared stays confirmed and missing, an update stays unreported; so the next run that
    still sees it (or still misses it) decides the same change again at once, and one that
    no longer does drops it."""
    if state is None:
        return None if sighting is None else _start(t, sighting)
    return _observe(state, rule, t, sighting)


def _maybe_confirm(
    state: TrackState, rule: ConfirmRule, t: float
) -> tuple[TrackState, Action | None]:
    if sum(state.window) >= rule.confirm_hits and t - state.first_seen >= rule.confirm_seconds:
        return _reported(replace(state, phase="confirmed"), t), "new"
    return state, None


def _maybe_update(
    state: TrackState, rule: ConfirmRule, t: float
) -> tuple[TrackState, Action | None]:
    if state.reported_at is not None and t - state.reported_at < rule.update_min_interval_s:
        return state, None
    conf_moved = abs(state.confidence - (state.reported_conf or 0.0)) >= rule.update_conf_delta
    box_moved = (
        state.reported_box is None or iou(state.box, state.reported_box) < rule.update_iou_below
    )
    if conf_moved or box_moved:
        return _reported(state, t), "update"
    return state, None
