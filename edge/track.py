"""Tracking across detector runs: associate detections with tracks, then confirm each track.

Association is greedy per class on IoU (confirmed tracks first), with a centre-distance
fallback for jittery boxes of a standing object. A detection that matches no track starts one
only if it reaches the class's ``min_confidence``; an existing track is kept by detections
down to ``keep_confidence`` (the caller passes both kinds, flagged). Each track then goes
through ``edge.confirm.confirm_track``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.confirm import (
    Action,
    ConfirmRule,
    NormBox,
    Sighting,
    TrackState,
    confirm_track,
    iou,
    unreported,
)
from edge.settings import TrackingSettings


@dataclass(frozen=True)
class Candidate:
    """A detection that passed the camera's filters, in normalised frame coordinates."""

    class_name: str
    confidence: float
    box: NormBox
    can_start: bool


@dataclass
class Track:
    """One object followed across checks."""

    id: str
    class_name: str
    state: TrackState


@dataclass(frozen=True)
class TrackChange:
    """An event-worthy change of a track, with the state it was in and what was seen, and the
    state to keep instead if its event cannot be reported (``Tracker.keep_unreported``)."""

    track_id: str
    class_name: str
    action: Action
    state: TrackState
    seen: Candidate | None
    unreported: TrackState | None


def _centre_distance(a: NormBox, b: NormBox) -> float:
    return math.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)


def _diagonal(b: NormBox) -> float:
    return math.hypot(b[2] - b[0], b[3] - b[1])


class Tracker:
    """The tracks of one camera."""

    def __init__(self, settings: TrackingSettings) -> None:
        self.settings = settings
        self.tracks: dict[str, Track] = {}
        self.started = 0  # tracks ever started (most never become events)

    def _score(self, track: Track, cand: Candidate) -> float:
        """How well a candidate matches a track; 0 for no match, IoU matches rank first."""
        overlap = iou(track.state.box, cand.box)
        if overlap >= self.settings.iou_match:
            return 1.0 + overlap
        limit = self.settings.centre_match * _diagonal(track.state.box)
        dist = _centre_distance(track.state.box, cand.box)
        if limit > 0 and dist < limit:
            return 1.0 - dist / limit
        return 0.0

    def associate(self, candidates: Sequence[Candidate]) -> dict[str, int]:
        """Track id to candidate index, greedy by (confirmed first, score)."""
        pairs: list[tuple[bool, float, str, int]] = []
        for tid, track in self.tracks.items():
            for j, cand in enumerate(candidates):
                if cand.class_name != track.class_name:
                    continue
                score = self._score(track, cand)
                if score > 0:
                    pairs.append((track.state.phase == "confirmed", score, tid, j))
        pairs.sort(key=lambda p: (p[0], p[1]), reverse=True)
        matched: dict[str, int] = {}
        used: set[int] = set()
        for _, _, tid, j in pairs:
            if tid in matched or j in used:
                continue
            matched[tid] = j
            used.add(j)
        return matched

    def check(
        self,
        candidates: Sequence[Candidate],
        t: float,
        rule_for: Callable[[str], ConfirmRule],
    ) -> list[TrackChange]:
        """One detector run at time ``t``: update every track, start new ones, return events."""
        matched = self.associate(candidates)
        changes: list[TrackChange] = []
        for tid, track in list(self.tracks.items()):
            j = matched.get(tid)
            seen = candidates[j] if j is not None else None
            sighting = Sighting(seen.confidence, seen.box) if seen is not None else None
            before = track.state
            rule = rule_for(track.class_name)
            state, action = confirm_track(before, rule, t, sighting)
            if state is None:
                del self.tracks[tid]
            else:
                track.state = state
            if action is not None:
                changes.append(
                    TrackChange(
                        tid,
                        track.class_name,
                        action,
                        state or before,
                        seen,
                        unreported(before, rule, t, sighting),
                    )
                )
        taken = set(matched.values())
        for j, cand in enumerate(candidates):
            if j in taken or not cand.can_start:
                continue
            if any(
                tr.class_name == cand.class_name
                and iou(tr.state.box, cand.box) >= self.settings.iou_match
                for tr in self.tracks.values()
            ):
                continue  # a second box on an object that already has a track
            rule = rule_for(cand.class_name)
            sighting = Sighting(cand.confidence, cand.box)
            state, action = confirm_track(None, rule, t, sighting)
            if state is None:
                continue
            tid = uuid.uuid4().hex[:12]
            self.tracks[tid] = Track(tid, cand.class_name, state)
            self.started += 1
            if action is not None:
                changes.append(
                    TrackChange(
                        tid,
                        cand.class_name,
                        action,
                        state,
                        cand,
                        unreported(None, rule, t, sighting),
                    )
                )
        return changes

    def keep_unreported(self, change: TrackChange) -> None:
        """The change's event could not be stored: keep its track as if the change had not
        been decided (``confirm.unreported``), so a later check decides it again."""
        if change.unreported is None:
            self.tracks.pop(change.track_id, None)
        else:
            self.tracks[change.track_id] = Track(
                change.track_id, change.class_name, change.unreported
            )

    def needs_checks(self) -> bool:
        """True while a track waits for confirmation or for clearing: run the detector."""
        return any(t.state.phase == "tentative" or t.state.missing for t in self.tracks.values())

    def confirmed(self) -> list[Track]:
        return [t for t in self.tracks.values() if t.state.phase == "confirmed"]
