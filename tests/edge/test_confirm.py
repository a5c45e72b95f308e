"""Tracking and temporal confirmation, fed with detection lists directly (no model, no video)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from edge.confirm import ConfirmRule, Sighting, TrackState, confirm_track, iou
from edge.settings import TrackingSettings
from edge.track import Candidate, TrackChange, Tracker

RULE = ConfirmRule(
    confirm_hits=3,
    confirm_checks=5,
    confirm_seconds=10,
    clear_seconds=20,
    clear_min_checks=3,
    max_check_gap_s=10,
    update_min_interval_s=60,
    update_conf_delta=0.15,
    update_iou_below=0.5,
)
PILE = (0.40, 0.55, 0.55, 0.75)


def cand(
    box: tuple[float, float, float, float] = PILE,
    conf: float = 0.8,
    cls: str = "garbage",
    min_conf: float = 0.35,
) -> Candidate:
    return Candidate(cls, conf, box, conf >= min_conf)


def run(
    tracker: Tracker, frames: Iterable[tuple[float, list[Candidate]]], rule: ConfirmRule = RULE
) -> list[tuple[float, TrackChange]]:
    out = []
    for t, cands in frames:
        out += [(t, ch) for ch in tracker.check(cands, t, lambda _c: rule)]
    return out


def actions(changes: list[tuple[float, TrackChange]]) -> list[tuple[float, str]]:
    return [(t, ch.action) for t, ch in changes if ch.action != "drop"]


def every(dt: float, start: float, end: float) -> list[float]:
    n = round((end - start) / dt)
    return [round(start + i * dt, 6) for i in range(n)]


def test_new_needs_k_of_n_hits_spanning_t_seconds() -> None:
    tracker = Tracker(TrackingSettings())
    frames = [(t, [cand()]) for t in every(0.5, 0, 30)]
    changes = actions(run(tracker, frames))
    assert changes == [(10.0, "new")]


def test_one_object_with_jittery_boxes_and_flicker_is_one_event() -> None:
    tracker = Tracker(TrackingSettings())
    frames = []
    for i, t in enumerate(every(0.5, 0, 60)):
        dx = 0.02 * ((i * 7) % 5 - 2)  # boxes wander by a few percent
        box = (PILE[0] + dx, PILE[1], PILE[2] + dx, PILE[3] + dx / 2)
        seen = i % 4 != 3  # the detector misses one check in four
        conf = 0.3 if i % 5 == 0 else 0.7  # sometimes below min_confidence, above keep
        frames.append((t, [cand(box, conf)] if seen else []))
    changes = actions(run(tracker, frames))
    assert [a for _, a in changes] == ["new"]
    assert len(tracker.tracks) == 1


def test_transient_object_shorter_than_the_window_yields_nothing() -> None:
    tracker = Tracker(TrackingSettings())
    frames = []
    for i, t in enumerate(every(0.5, 0, 30)):
        if 5 <= t < 12:  # a bag carried across the frame in 7 s (< T = 10 s)
            x = 0.05 + 0.12 * (i - 10)
            frames.append((t, [cand((x, 0.6, x + 0.1, 0.72))]))
        else:
            frames.append((t, []))
    assert actions(run(tracker, frames)) == []
    assert tracker.tracks == {}


def test_a_standing_object_that_leaves_before_t_yields_nothing() -> None:
    tracker = Tracker(TrackingSettings())
    frames = [(t, [cand()] if t < 8 else []) for t in every(0.5, 0, 30)]
    assert actions(run(tracker, frames)) == []


def test_hysteresis_low_confidence_keeps_but_does_not_start() -> None:
    tracker = Tracker(TrackingSettings())
    low = [(t, [cand(conf=0.25)]) for t in every(0.5, 0, 30)]
    assert actions(run(tracker, low)) == []
    assert tracker.tracks == {}
    tracker = Tracker(TrackingSettings())
    frames = [(t, [cand(conf=0.8 if t < 1 else 0.25)]) for t in every(0.5, 0, 40)]
    assert actions(run(tracker, frames)) == [(10.0, "new")]
    assert len(tracker.tracks) == 1


def test_cleared_after_clear_seconds_of_checks_that_ran() -> None:
    tracker = Tracker(TrackingSettings())
    frames = [(t, [cand()] if t < 30 else []) for t in every(0.5, 0, 70)]
    assert actions(run(tracker, frames)) == [(10.0, "new"), (50.0, "cleared")]
    assert tracker.tracks == {}


def test_a_stalled_stream_does_not_clear() -> None:
    tracker = Tracker(TrackingSettings())
    seen = [(t, [cand()]) for t in every(0.5, 0, 15)]
    # the stream dies: two checks an hour apart, then it is back and the pile is still there
    gap = [(15.0, []), (3615.0, []), (3615.5, [])]
    back = [(t, [cand()]) for t in every(0.5, 3616, 3630)]
    assert actions(run(tracker, seen + gap + back)) == [(10.0, "new")]


def test_update_is_rate_limited_and_needs_a_material_change() -> None:
    tracker = Tracker(TrackingSettings())
    frames = []
    for t in every(1.0, 0, 200):
        grown = (PILE[0] - 0.1, PILE[1] - 0.1, PILE[2] + 0.1, PILE[3]) if t >= 30 else PILE
        frames.append((t, [cand(grown, 0.8)]))
    changes = actions(run(tracker, frames))
    # new at 10 s; the pile grows at 30 s, but one update per 60 s: at 70 s, then no change
    assert changes == [(10.0, "new"), (70.0, "update")]


def test_classes_are_tracked_apart_and_two_objects_make_two_events() -> None:
    tracker = Tracker(TrackingSettings())
    other = (0.05, 0.7, 0.15, 0.8)
    frames = [
        (t, [cand(), cand(other, cls="manhole_missing"), cand(PILE, 0.6, cls="manhole_ok")])
        for t in every(0.5, 0, 12)
    ]
    changes = run(tracker, frames)
    assert sorted(ch.class_name for _, ch in changes if ch.action == "new") == [
        "garbage",
        "manhole_missing",
        "manhole_ok",
    ]
    assert len({ch.track_id for _, ch in changes}) == 3


def test_needs_checks_while_tentative_or_missing() -> None:
    tracker = Tracker(TrackingSettings())
    assert not tracker.needs_checks()
    tracker.check([cand()], 0.0, lambda _c: RULE)
    assert tracker.needs_checks()  # tentative
    run(tracker, [(t, [cand()]) for t in every(0.5, 0.5, 12)])
    assert not tracker.needs_checks()  # confirmed and present
    tracker.check([], 12.0, lambda _c: RULE)
    assert tracker.needs_checks()  # missing: check until it clears


@pytest.mark.parametrize("k,n", [(1, 1), (2, 3), (5, 5)])
def test_confirm_track_state_machine_k_of_n(k: int, n: int) -> None:
    rule = ConfirmRule(confirm_hits=k, confirm_checks=n, confirm_seconds=0, clear_seconds=5)
    state: TrackState | None = None
    got = []
    for t in range(k):
        state, action = confirm_track(state, rule, float(t), Sighting(0.9, PILE))
        got.append(action)
    assert got == [None] * (k - 1) + ["new"]


def test_iou() -> None:
    assert iou(PILE, PILE) == pytest.approx(1.0)
    assert iou((0, 0, 0.1, 0.1), (0.2, 0.2, 0.3, 0.3)) == 0.0
    assert iou((0, 0, 0.2, 0.2), (0.1, 0, 0.3, 0.2)) == pytest.approx(1 / 3)


def run_unreported(
    tracker: Tracker, frames: Iterable[tuple[float, list[Candidate]]], lost: set[float]
) -> list[tuple[float, str]]:
    """Like ``run``, but the events decided at the times in ``lost`` could not be stored."""
    out: list[tuple[float, str]] = []
    for t, cands in frames:
        for ch in tracker.check(cands, t, lambda _c: RULE):
            if ch.action == "drop":
                continue
            if t in lost:
                tracker.keep_unreported(ch)
            else:
                out.append((t, ch.action))
    return out


def test_an_unreported_new_is_decided_again_by_the_next_check_that_sees_it() -> None:
    tracker = Tracker(TrackingSettings())
    frames = [(t, [cand()]) for t in every(0.5, 0, 30)]
    assert run_unreported(tracker, frames, lost={10.0, 10.5}) == [(11.0, "new")]


def test_an_unreported_new_waits_through_misses_and_is_dropped_like_any_tentative_track() -> None:
    tracker = Tracker(TrackingSettings())
    seen = [(t, [cand()] if t <= 10.0 or t >= 11.0 else []) for t in every(0.5, 0, 30)]
    assert run_unreported(tracker, seen, lost={10.0}) == [(11.0, "new")]
    tracker = Tracker(TrackingSettings())
    gone = [(t, [cand()] if t <= 10.0 else []) for t in every(0.5, 0, 30)]
    assert run_unreported(tracker, gone, lost={10.0}) == []
    assert tracker.tracks == {}


def test_an_unreported_new_of_a_track_confirmed_at_its_first_sighting_is_kept() -> None:
    at_once = ConfirmRule(confirm_hits=1, confirm_checks=1, confirm_seconds=0)
    tracker = Tracker(TrackingSettings())
    changes = tracker.check([cand()], 0.0, lambda _c: at_once)
    assert [c.action for c in changes] == ["new"]
    tracker.keep_unreported(changes[0])
    (track,) = tracker.tracks.values()
    assert track.state.phase == "tentative"
    assert [c.action for c in tracker.check([cand()], 0.5, lambda _c: at_once)] == ["new"]


def test_an_unreported_cleared_keeps_the_track_until_a_clear_is_stored() -> None:
    tracker = Tracker(TrackingSettings())
    frames = [(t, [cand()] if t < 20 else []) for t in every(0.5, 0, 60)]
    assert actions(run(Tracker(TrackingSettings()), frames)) == [(10.0, "new"), (40.0, "cleared")]
    assert run_unreported(tracker, frames, lost={40.0}) == [(10.0, "new"), (40.5, "cleared")]
    assert tracker.tracks == {}


def test_an_unreported_cleared_is_forgotten_when_the_object_comes_back() -> None:
    tracker = Tracker(TrackingSettings())
    frames = [(t, [cand()] if t < 20 or t > 40 else []) for t in every(0.5, 0, 60)]
    assert run_unreported(tracker, frames, lost={40.0}) == [(10.0, "new")]
    (track,) = tracker.tracks.values()
    assert track.state.phase == "confirmed" and not track.state.missing


def test_an_unreported_update_is_decided_again() -> None:
    tracker = Tracker(TrackingSettings())
    frames = [(t, [cand(conf=0.9 if t < 70 else 0.4)]) for t in every(1.0, 0, 90)]
    reported = actions(run(Tracker(TrackingSettings()), frames))
    first_update = next(t for t, a in reported if a == "update")
    changes = run_unreported(tracker, frames, lost={first_update})
    assert [a for _, a in changes] == ["new", "update"]
    assert changes[1][0] == first_update + 1.0
