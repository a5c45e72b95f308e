"""Timers on the real ticket store with a ManualClock: each fires once, at its time, and
survives a restart (a new Timers on the same store)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from config.clock import ManualClock
from config.site import NoWorkerPolicy, Site
from dispatcher.lifecycle import TimerKind, Transition
from dispatcher.timers import Timers
from tests.dispatcher.factories import Desk, camera_event, offset

# 09:00 UTC is 17:00 in Asia/Shanghai: w01 (g1, 07:00-19:00) is on duty, w05 (19:00-07:00) not.
MORNING = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def desk(site: Site, tmp_path: Path) -> Desk:
    return Desk(site, tmp_path, ManualClock(MORNING))


def open_one(desk: Desk, site: Site, kind: str = "garbage", camera: str = "cam-01") -> int:
    """A new problem in front of the camera, 40 m from any other (so no merging)."""
    n = len(desk.tickets())
    cam = next(c for c in site.cameras if c.id == camera)
    where = offset(cam.position.lat, cam.position.lon, north_m=40 * n)
    desk.send(
        camera_event(site, camera, desk.clock.now(), kind=kind, track=f"t{n}", position=where)
    )
    assert len(desk.tickets()) == n + 1
    return int(desk.tickets()[-1]["id"])


def kinds(fired: list[object]) -> list[str]:
    return [str(f.kind) for f in fired]  # type: ignore[attr-defined]


def test_accept_timeout_reassigns_and_never_back_to_who_let_it_lapse(
    desk: Desk, site: Site
) -> None:
    t = open_one(desk, site)
    assert desk.ticket(t)["worker_id"] == "w01"
    desk.clock.advance(minutes=9, seconds=59)
    assert desk.timers.run_due() == []
    desk.clock.advance(seconds=1)
    [fired] = desk.timers.run_due()
    assert fired.kind is TimerKind.ACCEPT_TIMEOUT
    second = desk.ticket(t)["worker_id"]
    assert second in {"w02", "w03"}  # nobody else on duty in g1: a neighbour cell's worker
    assert desk.timers.run_due() == []  # fires once
    holders = {second}
    for _ in range(2):
        desk.clock.advance(minutes=10)
        desk.timers.run_due()
        holders.add(desk.ticket(t)["worker_id"])
    # w02 and w03 both let it lapse too: nobody left on duty nearby → supervisor's queue
    assert holders == {"w02", "w03", None}
    after = desk.ticket(t)
    assert after["status"] == "open" and after["escalated"]
    assert [h[0] for h in desk.history(t)][-2:] == ["unassigned", "escalated"]
    assert "w01" not in [h[1] for h in desk.history(t)[2:]]


def test_reminder_then_sla_escalation_each_once(desk: Desk, site: Site) -> None:
    t = open_one(desk, site)  # garbage: SLA 240 min, reminder 30 min before
    desk.act(t, Transition.ACCEPTED)
    desk.clock.advance(minutes=209)
    assert desk.timers.run_due() == []
    desk.clock.advance(minutes=1)
    assert kinds(desk.timers.run_due()) == ["reminder"]
    assert desk.timers.run_due() == []
    desk.clock.advance(minutes=30)
    assert kinds(desk.timers.run_due()) == ["sla"]
    desk.clock.advance(hours=5)
    assert desk.timers.run_due() == []
    row = desk.ticket(t)
    assert row["escalated"] and row["breached_at"] == MORNING + timedelta(minutes=240)
    assert [h[0] for h in desk.history(t)].count("escalated") == 1
    assert row["timer_at"] is None and row["status"] == "accepted"


def test_a_late_sweep_fires_everything_due_once_in_order(desk: Desk, site: Site) -> None:
    t = open_one(desk, site, kind="manhole_missing")  # SLA 60, accept 3, remind 15 before
    desk.clock.advance(hours=3)  # the dispatcher was down for three hours
    fired = desk.timers.run_due()
    assert kinds(fired)[:1] == ["accept_timeout"] and kinds(fired)[-1] == "sla"
    assert desk.timers.run_due() == []
    assert desk.ticket(t)["breached_at"] is not None


def test_verify_timeout_applies_the_category_policy(desk: Desk, site: Site) -> None:
    pile = open_one(desk, site)  # garbage: accept on the worker's photo after 120 s
    hole = open_one(desk, site, kind="manhole_missing", camera="cam-02")  # supervisor review
    for t in (pile, hole):
        desk.act(t, Transition.ACCEPTED)
        assert desk.resolve(t) == [desk.incident(desk.ticket(t)["incident_id"])["camera_ids"][0]]
    desk.clock.advance(seconds=119)
    assert desk.timers.run_due() == []
    desk.clock.advance(seconds=1)
    fired = {f.ticket_id: f.outcome for f in desk.timers.run_due()}
    assert fired == {pile: "close", hole: "review"}
    assert desk.ticket(pile)["status"] == "closed"
    assert desk.ticket(hole)["status"] == "resolved" and desk.ticket(hole)["review_at"]
    desk.clock.advance(hours=1)
    assert desk.timers.run_due() == []  # review asked once; no SLA timer on resolved work
    assert desk.history(hole)[-1][2] == "system:review"


def test_a_resolution_without_its_own_after_photo_is_never_closed_on_one(
    desk: Desk, site: Site
) -> None:
    """A ticket resolved with no after-photo (the service once allowed it) has none to accept
    when no camera answers: the supervisor reviews it, whatever the category's policy. The
    photo of an earlier resolution, before a reopen, does not count for the next one."""
    pile = open_one(desk, site)  # garbage: accept on the worker's photo after 120 s
    desk.act(pile, Transition.ACCEPTED)
    desk.resolve(pile)
    desk.act(pile, Transition.REOPENED)  # the camera still saw it
    desk.clock.advance(minutes=10)
    desk.act(pile, Transition.ACCEPTED)
    desk.resolve(pile, photo=False)
    desk.clock.advance(seconds=120)
    fired = {f.ticket_id: f.outcome for f in desk.timers.run_due()}
    assert fired == {pile: "review"}
    assert desk.ticket(pile)["status"] == "resolved" and desk.ticket(pile)["review_at"]
    assert desk.history(pile)[-1][2] == "system:review"


def test_shift_change_hands_over_unaccepted_work(desk: Desk, site: Site) -> None:
    desk.clock.set(datetime(2026, 1, 5, 10, 55, tzinfo=UTC))  # 18:55 local
    waiting = open_one(desk, site)
    busy = open_one(desk, site)
    desk.act(busy, Transition.ACCEPTED)
    assert desk.ticket(waiting)["worker_id"] == desk.ticket(busy)["worker_id"] == "w01"
    desk.clock.set(datetime(2026, 1, 5, 11, 0, tzinfo=UTC))  # 19:00: w05's night shift
    fired = desk.timers.handover()
    assert [(f.ticket_id, f.outcome) for f in fired] == [(waiting, "to w05")]
    assert desk.ticket(busy)["worker_id"] == "w01"  # accepted work stays
    assert desk.history(waiting)[-1] == ("reassigned", "w05", "timer:shift")
    assert desk.timers.handover() == []


def test_supervisor_queue_gets_a_worker_back_from_a_break(site: Site, tmp_path: Path) -> None:
    strict = site.model_copy(update={"no_worker": NoWorkerPolicy(fallback="supervisor")})
    lunch = datetime(2026, 1, 5, 4, 10, tzinfo=UTC)  # 12:10 local: w01's break
    desk = Desk(strict, tmp_path, ManualClock(lunch))
    t = open_one(desk, strict)
    row = desk.ticket(t)
    assert (row["status"], row["worker_id"], row["escalated"]) == ("open", None, True)
    from dispatcher.assign import next_shift_change

    change = next_shift_change(strict, lunch)
    assert change == datetime(2026, 1, 5, 4, 30, tzinfo=UTC)  # 12:30: w01's break ends
    desk.clock.set(change)
    assert [f.outcome for f in desk.timers.handover()] == ["to w01"]


def test_timers_survive_a_restart(desk: Desk, site: Site) -> None:
    first = open_one(desk, site)
    second = open_one(desk, site, kind="manhole_broken", camera="cam-02")
    desk.act(second, Transition.ACCEPTED)
    desk.timers.stop()  # the process goes away (it never started a scheduler here)
    desk.engine.dispose()
    desk.clock.advance(minutes=240)
    reborn = Timers(desk.engine, site, desk.clock)
    fired = reborn.run_due()
    assert {(f.ticket_id, str(f.kind)) for f in fired} >= {
        (first, "accept_timeout"),
        (second, "reminder"),
        (second, "sla"),
    }
    assert reborn.run_due() == [] and desk.timers.run_due() == []


def test_the_scheduler_fires_on_its_own_when_the_clock_passes_a_timer(
    desk: Desk, site: Site
) -> None:
    t = open_one(desk, site)
    timers = Timers(desk.engine, site, desk.clock, tick_s=0.05)
    timers.start()
    try:
        assert timers.earliest() == desk.ticket(t)["timer_at"] == MORNING + timedelta(minutes=10)
        time.sleep(0.3)
        assert desk.ticket(t)["worker_id"] == "w01"  # not due yet
        desk.clock.advance(minutes=10)
        deadline = time.monotonic() + 10
        while desk.ticket(t)["worker_id"] == "w01":
            assert time.monotonic() < deadline, "the accept timeout did not fire"
            time.sleep(0.05)
    finally:
        timers.stop()
    assert [h[0] for h in desk.history(t)].count("reassigned") == 1
