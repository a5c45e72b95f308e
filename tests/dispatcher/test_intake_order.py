"""Intake in each device's order: an event that arrives after a newer event of its camera track
or sensor was applied is stored, not applied; a sensor's alarm episode that arrives whole after
a newer one gets the ticket in-order delivery gave it, cancelled."""

from __future__ import annotations

import base64
import itertools
import logging
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from broker.messages import Event, Evidence
from config.site import Site
from dispatcher.intake import (
    Applied,
    Observation,
    SourceEvent,
    arrived_late,
    ended_episode,
    in_device_order,
)
from dispatcher.lifecycle import FINAL, Status, Transition
from dispatcher.store.schema import events, tickets, track_seqs
from tests.dispatcher.factories import Desk, camera_event, sensor_event

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
STORES = ["sqlite", "postgresql"]
BOX_NEW = (0.45, 0.5, 0.65, 0.8)
BOX_OLD = (0.1, 0.1, 0.2, 0.2)


# -- the decisions, on data ------------------------------------------------------------------
def test_an_event_below_the_newest_applied_one_of_its_track_arrived_late() -> None:
    newest = Applied(seq=10, device_ts=T0)
    assert not arrived_late(None, 3, T0)  # nothing applied yet
    assert not arrived_late(newest, 11, T0 + timedelta(seconds=1))
    assert arrived_late(newest, 9, T0 - timedelta(seconds=1))
    assert arrived_late(newest, 9, T0)  # one clock tick can hold two events
    assert not arrived_late(newest, 10, T0)  # the same seq cannot be ordered: as it comes
    # Below the newest but later on the device's clock: the device's counter began again.
    assert not arrived_late(newest, 1, T0 + timedelta(minutes=5))


def ev(state: str, seq: int, incident_id: int | None = None) -> SourceEvent:
    return SourceEvent(f"e{seq}", state, seq, T0 + timedelta(minutes=seq), incident_id)


def test_a_late_cleared_after_a_new_that_no_incident_holds_ends_an_episode() -> None:
    new, cleared = ev("new", 1), ev("cleared", 2)
    assert ended_episode(cleared, [new], []) == (new, cleared)
    assert ended_episode(cleared, [new, ev("cleared", 0, 4)], [ev("new", 3, 7)]) == (new, cleared)
    # A `new` that repeats an alarm (the agent restarted in alarm) does not begin an episode.
    assert ended_episode(cleared, [new, ev("new", 0, 7)], []) is None
    # The `new` below belongs to an incident, and nothing newer of the sensor joined it.
    assert ended_episode(cleared, [ev("new", 1, 7)], []) is None
    assert ended_episode(cleared, [ev("new", 1, 7)], [ev("new", 3, 8)]) is None
    assert ended_episode(cleared, [ev("new", 1, 7)], [ev("cleared", 4, 7)]) is None
    assert ended_episode(cleared, [ev("cleared", 1)], []) is None
    assert ended_episode(cleared, [], [ev("new", 3, 7)]) is None


def test_a_late_cleared_between_two_news_of_one_incident_ends_the_first_episode() -> None:
    first, cleared, second = ev("new", 1, 7), ev("cleared", 2), ev("new", 3, 7)
    assert ended_episode(cleared, [first], [second]) == (first, cleared)
    assert ended_episode(cleared, [first, ev("cleared", 0, 5)], [second]) == (first, cleared)


def test_a_late_new_before_a_cleared_that_no_incident_holds_is_an_episode() -> None:
    new, cleared = ev("new", 1), ev("cleared", 2)
    assert ended_episode(new, [], [cleared]) == (new, cleared)
    assert ended_episode(new, [ev("cleared", 0, 5)], [cleared, ev("new", 3, 6)]) == (new, cleared)
    assert ended_episode(new, [ev("new", 0, 5)], [cleared]) is None  # a repeat of that alarm
    assert ended_episode(new, [], [ev("cleared", 2, 5)]) is None  # that cleared was applied
    assert ended_episode(new, [], [ev("new", 3, 5)]) is None
    assert ended_episode(new, [], []) is None
    assert ended_episode(ev("update", 1), [], [cleared]) is None


def test_an_incident_that_took_in_two_alarms_gives_the_second_its_own() -> None:
    """new(1) opened incident 7 and cleared(4) cancelled it; cleared(2) and new(3) came late:
    incident 7 is the first alarm's, and new(3) cleared(4) the second."""
    first, end = ev("new", 1, 7), ev("cleared", 4, 7)
    cleared, new = ev("cleared", 2), ev("new", 3)
    assert ended_episode(new, [cleared, first], [end]) == (new, end)
    assert ended_episode(cleared, [first], [new, end]) == (new, end)  # new(3) came first
    assert ended_episode(new, [cleared, ev("new", 1, 6)], [end]) is None  # another incident
    assert ended_episode(new, [ev("cleared", 2, 8), first], [end]) is None  # held elsewhere
    assert ended_episode(cleared, [first], [ev("new", 3, 8), end]) is None


def observation(device: str, seq: int) -> Observation:
    return Observation(
        event_id=f"{device}-{seq}",
        device_id=device,
        source_id="s",
        source_type="sensor",
        kind="manhole_tilt",
        state="new",
        seq=seq,
        device_ts=T0,
        ts=T0,
        ts_source="device",
        lat=0.0,
        lon=0.0,
    )


def test_a_batch_takes_each_devices_events_in_the_devices_order() -> None:
    a3, a1, a2 = observation("a", 3), observation("a", 1), observation("a", 2)
    b9, b4 = observation("b", 9), observation("b", 4)
    batch: list[tuple[int, Observation | str]] = [
        (0, a3),
        (1, b9),
        (2, "not json"),
        (3, a1),
        (4, b4),
        (5, a2),
    ]
    assert in_device_order(batch) == [
        (3, a1),
        (4, b4),
        (2, "not json"),
        (5, a2),
        (1, b9),
        (0, a3),
    ]
    assert in_device_order([]) == []


# -- on the real store -------------------------------------------------------------------------
@pytest.fixture(params=STORES)
def desk(request: pytest.FixtureRequest, site: Site, tmp_path: Path) -> Desk:
    if request.param == "sqlite":
        return Desk(site, tmp_path)
    d = Desk(site, tmp_path, db_url=request.getfixturevalue("pg_url"))
    request.addfinalizer(d.engine.dispose)
    return d


def sensor_story(site: Site, sensor_id: str) -> list[Event]:
    """new(1) cleared(2) new(3) of one sensor, a minute apart: two alarm episodes."""
    return [
        sensor_event(site, sensor_id, T0 + timedelta(minutes=i), state=state, seq=i + 1)
        for i, state in enumerate(("new", "cleared", "new"))
    ]


def outcome(desk: Desk, site: Site, sensor_id: str) -> list[tuple[Any, ...]]:
    """The sensor's tickets: category, status and close reason, and the times of finished ones
    (a live ticket's assignee and deadline depend on who is on duty in its grid)."""
    s = next(x for x in site.sensors if x.id == sensor_id)
    return sorted(
        (
            t["category"],
            t["status"],
            t["close_reason"],
            t["opened_at"] if t["closed_at"] else None,
            t["closed_at"],
        )
        for t in desk.tickets()
        if (t["lat"], t["lon"]) == (s.position.lat, s.position.lon)
    )


def live_opened_at(desk: Desk) -> list[datetime]:
    return [t["opened_at"] for t in desk.tickets() if t["closed_at"] is None]


ORDERS = list(itertools.permutations(range(3)))


@pytest.mark.parametrize("order", ORDERS, ids=["".join(str(i + 1) for i in o) for o in ORDERS])
def test_one_sensors_events_in_any_order_make_the_tickets_of_in_order_delivery(
    desk: Desk, site: Site, order: tuple[int, ...]
) -> None:
    """Two sensors of one kind tell the same story: mh-tilt-02's events arrive in order,
    mh-tilt-01's in ``order``, one delivery at a time."""
    desk.clock.set(T0 + timedelta(minutes=3))
    for e in sensor_story(site, "mh-tilt-02"):
        desk.send(e)
    expected = outcome(desk, site, "mh-tilt-02")
    assert [(c, s, r) for c, s, r, *_ in expected] == [
        ("manhole_tilt", "assigned", None),
        ("manhole_tilt", "cancelled", "cleared_by_sensor"),
    ]
    story = sensor_story(site, "mh-tilt-01")
    for i in order:
        desk.send(story[i])
    assert outcome(desk, site, "mh-tilt-01") == expected
    if order == (0, 2, 1):
        # new(3) joined new(1)'s ticket before cleared(2) came: that ticket is the second
        # alarm's now and keeps the time it was opened (the first alarm's).
        assert sorted(live_opened_at(desk)) == [T0, T0 + timedelta(minutes=2)]
    else:
        assert live_opened_at(desk) == [T0 + timedelta(minutes=2)] * 2
    with desk.engine.connect() as conn:
        stored = conn.execute(select(events.c.seq, events.c.incident_id)).all()
    assert len(stored) == 6  # every event is stored, applied or not
    assert desk.intake.stats.late == sum(
        1 for n, i in enumerate(order) if any(j > i for j in order[:n])
    )


@pytest.mark.parametrize("order", [(2, 0, 1), (1, 2, 0), (2, 1, 0)], ids=["312", "231", "321"])
def test_overtaken_events_in_one_batch_are_applied_in_the_devices_order(
    desk: Desk, site: Site, order: tuple[int, ...]
) -> None:
    desk.clock.set(T0 + timedelta(minutes=3))
    story = sensor_story(site, "mh-tilt-01")
    desk.send(*(story[i] for i in order))
    [cancelled, live] = sorted(desk.tickets(), key=lambda t: t["opened_at"])
    assert (cancelled["status"], cancelled["close_reason"]) == ("cancelled", "cleared_by_sensor")
    assert cancelled["worker_id"] is not None  # applied as it happened: assigned, then cancelled
    assert live["status"] == "assigned" and live["opened_at"] == T0 + timedelta(minutes=2)
    assert desk.intake.stats.late == 0 and sorted(desk.acked) == [0, 1, 2]


def test_a_late_cleared_does_not_cancel_the_ticket_of_a_sensor_still_in_alarm(
    desk: Desk, site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    desk.clock.set(T0 + timedelta(minutes=3))
    story = sensor_story(site, "mh-tilt-01")
    desk.send(story[2])  # new(3): the sensor is in alarm
    [t] = desk.tickets()
    with caplog.at_level(logging.INFO, logger="dispatcher.intake"):
        desk.send(story[1])  # cleared(2), overtaken on the way
    assert [x["status"] for x in desk.tickets()] == ["assigned"]
    assert desk.incident(t["incident_id"])["cleared_at"] is None
    assert "cleared seq 2 of node-01/mh-tilt-01 arrived after seq 3 was applied" in caplog.text
    with desk.engine.connect() as conn:
        stored = conn.execute(select(events.c.seq, events.c.incident_id).order_by(events.c.seq))
        assert stored.all() == [(2, None), (3, t["incident_id"])]
        newest = conn.execute(select(track_seqs.c.track_key, track_seqs.c.seq)).all()
    assert newest == [("node-01/mh-tilt-01", 3)]
    assert desk.intake.stats.late == 1 and len(desk.acked) == 2


def test_a_late_new_does_not_bring_back_an_alarm_that_ended(desk: Desk, site: Site) -> None:
    """new(1) cleared(2) new(3) cleared(4), the second episode first: the late new(1) finds
    the sensor's incident cancelled by cleared(4) and opens nothing; with cleared(2) the
    first episode is recorded, as in-order delivery gave it."""
    desk.clock.set(T0 + timedelta(minutes=5))
    states = ("new", "cleared", "new", "cleared")
    story = [
        sensor_event(site, "mh-tilt-01", T0 + timedelta(minutes=i), state=s, seq=i + 1)
        for i, s in enumerate(states)
    ]
    desk.send(story[2])
    desk.send(story[3])
    [second] = desk.tickets()
    assert second["status"] == "cancelled"
    desk.send(story[0])
    assert [t["status"] for t in desk.tickets()] == ["cancelled"]  # not reopened, not new
    desk.send(story[1])
    first = next(t for t in desk.tickets() if t["id"] != second["id"])
    assert (first["status"], first["close_reason"]) == ("cancelled", "cleared_by_sensor")
    assert (first["opened_at"], first["closed_at"]) == (T0, T0 + timedelta(minutes=1))
    assert first["worker_id"] is None  # the problem was gone before anyone knew: nobody sent
    assert [h[0] for h in desk.history(first["id"])] == ["opened", "cancelled"]
    with desk.engine.connect() as conn:
        held = dict(conn.execute(select(events.c.seq, events.c.incident_id)).all())
    assert held == {
        1: first["incident_id"],
        2: first["incident_id"],
        3: second["incident_id"],
        4: second["incident_id"],
    }


def boxed(e: Event, box: tuple[float, float, float, float]) -> Event:
    return e.model_copy(update={"bbox": box})


def test_a_cameras_late_update_and_cleared_leave_its_incident_as_it_is(
    desk: Desk, site: Site
) -> None:
    now = desk.clock.now()
    desk.send(camera_event(site, "cam-01", now, track="a", seq=1))
    desk.send(boxed(camera_event(site, "cam-01", now, track="a", state="update", seq=4), BOX_NEW))
    [t] = desk.tickets()
    before = desk.incident(t["incident_id"])
    assert before["bbox"] == list(BOX_NEW) and before["events"] == 2
    earlier = now - timedelta(seconds=1)
    late = camera_event(site, "cam-01", earlier, track="a", state="update", seq=2)
    desk.send(boxed(late, BOX_OLD))
    desk.send(camera_event(site, "cam-01", earlier, track="a", state="cleared", seq=3))
    assert desk.incident(t["incident_id"]) == before
    assert desk.ticket(t["id"])["status"] == "assigned" and desk.intake.stats.late == 2
    # In the device's order the track's cleared still cancels.
    desk.send(camera_event(site, "cam-01", now, track="a", state="cleared", seq=5))
    assert desk.ticket(t["id"])["status"] == "cancelled"


def test_a_device_whose_counter_began_again_is_applied_as_new(desk: Desk, site: Site) -> None:
    """The edge box's outbox was replaced: its seq starts at 1 again, its clock goes on."""
    now = desk.clock.now()
    desk.send(sensor_event(site, "mh-tilt-01", now, seq=500))
    [t] = desk.tickets()
    desk.act(t["id"], Transition.ACCEPTED)
    desk.clock.advance(minutes=2)
    desk.send(sensor_event(site, "mh-tilt-01", desk.clock.now(), state="cleared", seq=1))
    assert desk.ticket(t["id"])["status"] == "cancelled" and desk.intake.stats.late == 0
    with desk.engine.connect() as conn:
        assert conn.execute(select(track_seqs.c.seq)).scalar() == 1


def test_a_batch_redone_event_by_event_keeps_the_devices_order(desk: Desk, site: Site) -> None:
    """A bad event sends the batch round again with a savepoint per event; the late episode
    in it is recorded the same way."""
    desk.clock.set(T0 + timedelta(minutes=3))
    story = sensor_story(site, "mh-tilt-01")
    desk.send(story[2])
    broken = Evidence(
        jpeg_b64=base64.b64encode(b"\xff\xd8" + b"\0" * 60).decode(), width=9, height=9
    )
    bad = camera_event(site, "cam-01", T0, track="x", snapshot=broken)
    desk.send(story[1], bad, story[0])
    assert outcome(desk, site, "mh-tilt-01") == [
        ("manhole_tilt", "assigned", None, None, None),
        ("manhole_tilt", "cancelled", "cleared_by_sensor", T0, T0 + timedelta(minutes=1)),
    ]
    assert desk.intake.stats.dead_letters == 1 and desk.intake.stats.late == 2


# -- many stories, delivered as a restarted broker can deliver them ---------------------------
SENSORS = ("mh-tilt-01", "bin-fill-01")  # both on node-01: one device, one seq counter


def flips(site: Site, rnd: random.Random, n: int) -> list[Event]:
    """``n`` events of node-01's two sensors, each event the other state of one of them."""
    alarm = dict.fromkeys(SENSORS, False)
    out = []
    for i in range(n):
        s = rnd.choice(SENSORS)
        alarm[s] = not alarm[s]
        at = T0 + timedelta(seconds=10 * i)
        out.append(sensor_event(site, s, at, state="new" if alarm[s] else "cleared", seq=i + 1))
    return out


def swap_blocks(rnd: random.Random, evs: list[Event]) -> list[Event]:
    """The order a broker restart gives: now and then a block of the device's events is
    overtaken by the block after it (a resent window arriving after newer events)."""
    out: list[Event] = []
    i = 0
    while i < len(evs):
        a, b = rnd.randint(1, 4), rnd.randint(1, 4)
        first, second = evs[i : i + a], evs[i + a : i + a + b]
        out += second + first if rnd.random() < 0.5 else first + second
        i += a + b
    return out


def shuffle(rnd: random.Random, evs: list[Event], places: int = 16) -> list[Event]:
    """Any order: each event moved by up to ``places``."""
    return [evs[i] for i in sorted(range(len(evs)), key=lambda i: i + rnd.uniform(0, places))]


def deliver(site: Site, folder: Path, rnd: random.Random, evs: list[Event]) -> Desk:
    desk = Desk(site, folder)
    desk.clock.set(T0 + timedelta(hours=1))
    i = 0
    while i < len(evs):
        n = rnd.randint(1, 3)
        desk.send(*evs[i : i + n])
        i += n
    return desk


def judged(desk: Desk, evs: list[Event]) -> dict[str, tuple[int, int, int, int]]:
    """Per sensor: alarm episodes (in the device's order), tickets made (through the incidents
    of its ``new`` events, as the fault ledger counts them), live tickets, and live tickets
    wanted (one while the sensor's last word is ``new``)."""
    with desk.engine.connect() as conn:
        rows = conn.execute(
            select(tickets.c.id, tickets.c.status, events.c.source_id)
            .join(events, events.c.incident_id == tickets.c.incident_id)
            .where(events.c.state == "new")
        ).all()
    made: dict[str, dict[int, str]] = {s: {} for s in SENSORS}
    for ticket_id, status, source_id in rows:
        made[source_id][ticket_id] = status
    out = {}
    for s in SENSORS:
        mine = sorted((e for e in evs if e.source_id == s), key=lambda e: e.seq)
        episodes, alarm = 0, False
        for e in mine:
            if e.state == "new" and not alarm:
                episodes, alarm = episodes + 1, True
            elif e.state == "cleared":
                alarm = False
        live = sum(1 for st in made[s].values() if Status(st) not in FINAL)
        wanted = 1 if mine and mine[-1].state == "new" else 0
        out[s] = (episodes, len(made[s]), live, wanted)
    return out


def test_blocks_overtaken_on_the_way_still_give_each_alarm_its_ticket(
    site: Site, tmp_path: Path
) -> None:
    for seed in range(25):
        rnd = random.Random(seed)
        evs = flips(site, rnd, 16)
        order = swap_blocks(rnd, evs)
        desk = deliver(site, tmp_path / str(seed), rnd, order)
        for s, (episodes, made, live, wanted) in judged(desk, evs).items():
            arrived = [(e.state, e.seq) for e in order if e.source_id == s]
            assert (made, live) == (episodes, wanted), f"seed {seed}, {s}: {arrived}"
        desk.engine.dispose()


def test_in_any_order_no_alarm_is_doubled_and_the_live_ticket_is_right(
    site: Site, tmp_path: Path
) -> None:
    """Shuffled deeper than a broker does, an ended episode can stay inside a neighbouring
    incident (a ticket fewer); a ticket is never doubled, and a sensor has a live ticket
    exactly while its last word is ``new``."""
    for seed in range(25):
        rnd = random.Random(seed)
        evs = flips(site, rnd, 16)
        order = shuffle(rnd, evs)
        desk = deliver(site, tmp_path / str(seed), rnd, order)
        for s, (episodes, made, live, wanted) in judged(desk, evs).items():
            arrived = [(e.state, e.seq) for e in order if e.source_id == s]
            assert made <= episodes and live == wanted, f"seed {seed}, {s}: {arrived}"
        desk.engine.dispose()
