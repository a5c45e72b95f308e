"""Intake on the real ticket store: one ticket per real problem, whoever reports it."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from broker import topics
from broker.client import Delivery
from broker.messages import Event, Evidence
from config.site import Site
from dispatcher.intake import OUTBOX_MAX_AGE, PAST_TOLERANCE, event_time, next_offset
from dispatcher.lifecycle import Transition
from dispatcher.push import pushes_for
from dispatcher.store.schema import audit, dead_letters, events, evidence, incident_tracks
from tests.conftest import wait_until
from tests.dispatcher.factories import (
    Desk,
    camera_event,
    offset,
    refusing_writes,
    sensor_event,
)

CAM1 = (39.9562, 116.4165)  # in front of cam-01, grid g1


@pytest.fixture
def desk(site: Site, tmp_path: Path) -> Desk:
    return Desk(site, tmp_path)


def test_two_cameras_seeing_one_pile_make_one_ticket(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    pile = offset(*CAM1, north_m=20)
    desk.send(camera_event(site, "cam-01", now, track="a", position=pile))
    desk.clock.advance(seconds=30)
    near = offset(*pile, east_m=8)  # the other camera's ground estimate is 8 m off
    desk.send(camera_event(site, "cam-02", desk.clock.now(), track="b", position=near))
    [t] = desk.tickets()
    inc = desk.incident(t["incident_id"])
    assert inc["camera_ids"] == ["cam-01", "cam-02"] and inc["events"] == 2
    assert t["status"] == "assigned" and t["grid_id"] == "g1"
    assert desk.acked == [0, 1000]  # acknowledged after each commit


def test_two_piles_200_m_apart_make_two_tickets(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    desk.send(
        camera_event(site, "cam-01", now, track="a", position=CAM1),
        camera_event(site, "cam-01", now, track="b", position=offset(*CAM1, east_m=200)),
    )
    assert len(desk.tickets()) == 2


def test_merge_radius_and_window_come_from_the_category(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    # manhole_missing merges within 15 m, garbage within 30 m
    desk.send(camera_event(site, "cam-01", now, kind="manhole_missing", track="m1", position=CAM1))
    desk.send(
        camera_event(
            site,
            "cam-02",
            now,
            kind="manhole_missing",
            track="m2",
            position=offset(*CAM1, north_m=20),
        )
    )
    desk.send(
        camera_event(site, "cam-01", now, track="g1", position=CAM1),
        camera_event(site, "cam-02", now, track="g2", position=offset(*CAM1, north_m=20)),
    )
    kinds = sorted(t["category"] for t in desk.tickets())
    assert kinds == ["garbage", "manhole_missing", "manhole_missing"]
    # Beyond garbage's 720-minute window a sighting is a new problem.
    later = now + timedelta(minutes=721)
    desk.clock.set(later)
    desk.send(camera_event(site, "cam-03", later, track="g3", position=offset(*CAM1, north_m=5)))
    assert sorted(t["category"] for t in desk.tickets()).count("garbage") == 2


def test_a_track_stays_with_its_incident_when_it_drifts(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    desk.send(camera_event(site, "cam-01", now, track="a", position=CAM1))
    desk.send(
        camera_event(
            site,
            "cam-01",
            now,
            track="a",
            state="update",
            position=offset(*CAM1, north_m=80),
            seq=2,
        )
    )
    assert len(desk.tickets()) == 1


def test_citizen_and_sensor_reports_merge_with_the_camera_incident(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    desk.send(camera_event(site, "cam-01", now, track="a", position=CAM1))
    with desk.engine.begin() as conn:
        obs = desk.intake.citizen(
            kind="garbage", lat=CAM1[0] + 0.0001, lon=CAM1[1], at=now, body={}
        )
        desk.intake.lock(conn, [obs])
        assert desk.intake.record(conn, obs, now) == desk.tickets()[0]["incident_id"]
    [t] = desk.tickets()
    assert t["source"] == "camera"  # first seen by the camera


def test_redelivery_is_harmless(desk: Desk, site: Site) -> None:
    ev = camera_event(site, "cam-01", desk.clock.now())
    desk.send(ev, ev)
    desk.send(ev)
    assert len(desk.tickets()) == 1 and desk.intake.stats.duplicates == 2
    with desk.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 1
        opened = conn.execute(
            select(func.count()).select_from(audit).where(audit.c.transition == "opened")
        ).scalar()
    assert opened == 1


def test_cleared_before_anyone_arrived_cancels_as_cleared_by_camera(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    desk.send(camera_event(site, "cam-01", now, track="a"))
    [t] = desk.tickets()
    desk.act(t["id"], Transition.ACCEPTED)  # accepted, but not there yet
    desk.clock.advance(minutes=3)
    desk.send(camera_event(site, "cam-01", desk.clock.now(), track="a", state="cleared", seq=2))
    t = desk.ticket(t["id"])
    assert (t["status"], t["close_reason"]) == ("cancelled", "cleared_by_camera")
    assert [h[0] for h in desk.history(t["id"])][-1] == "cancelled"
    # the next sighting at the same place is a new problem with a new ticket
    desk.send(camera_event(site, "cam-01", desk.clock.now(), track="b", seq=3))
    assert [x["status"] for x in desk.tickets()] == ["cancelled", "assigned"]


def test_cleared_after_arrival_or_by_one_of_two_cameras_keeps_the_ticket(
    desk: Desk, site: Site
) -> None:
    now = desk.clock.now()
    desk.send(
        camera_event(site, "cam-01", now, track="a"),
        camera_event(site, "cam-02", now, track="b", position=CAM1),
    )
    [t] = desk.tickets()
    desk.send(camera_event(site, "cam-01", now, track="a", state="cleared", seq=2))
    assert desk.ticket(t["id"])["status"] == "assigned"  # cam-02 still sees it
    desk.act(t["id"], Transition.ACCEPTED)
    desk.act(t["id"], Transition.ARRIVED)
    desk.send(camera_event(site, "cam-02", now, track="b", state="cleared", seq=2))
    assert desk.ticket(t["id"])["status"] == "accepted"  # the worker is there: let them finish
    with desk.engine.connect() as conn:
        cleared = conn.execute(select(incident_tracks.c.cleared_at)).scalars().all()
    assert all(c is not None for c in cleared)


def test_sensor_clear_before_anyone_came_cancels(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    desk.send(sensor_event(site, "mh-tilt-01", now))
    [t] = desk.tickets()
    assert t["source"] == "sensor" and t["category"] == "manhole_tilt"
    desk.send(sensor_event(site, "mh-tilt-01", now + timedelta(minutes=1), state="cleared", seq=2))
    assert desk.ticket(t["id"])["close_reason"] == "cleared_by_sensor"


def test_manhole_missing_is_urgent_and_tells_the_supervisor(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    desk.send(camera_event(site, "cam-01", now, kind="manhole_missing"))
    [t] = desk.tickets()
    assert t["priority"] == 1 and t["deadline"] == now + timedelta(minutes=60)
    assert min(c.priority for c in site.categories.values()) == 1
    assert min(c.sla_minutes for c in site.categories.values()) == 60
    with desk.engine.connect() as conn:
        opened = conn.execute(select(audit).where(audit.c.transition == "opened")).mappings().one()
    sent = pushes_for(dict(opened), t, site)
    assert [topic for topic, _ in sent] == ["gw/v1/supervisor/sup-s1/alerts"]
    assert sent[0][1].reason == "safety"  # type: ignore[attr-defined]


def test_bad_events_are_dead_lettered_and_the_rest_go_through(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    good = camera_event(site, "cam-01", now)
    foreign = camera_event(site, "cam-03", now)  # edge-02's camera on edge-01's topic
    desk.send(good)
    desk.send(foreign, topic="gw/v1/edge/edge-01/event")
    desk.send(b"{not json", topic="gw/v1/edge/edge-01/event")
    with desk.engine.connect() as conn:
        reasons = conn.execute(select(dead_letters.c.reason)).scalars().all()
    assert len(desk.tickets()) == 1 and len(reasons) == 2
    assert any("does not match topic device" in r for r in reasons)
    assert len(desk.acked) == 3  # dead letters are acknowledged too: they are recorded


def test_device_clock_skew_is_corrected_from_heartbeats(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    ten_min = timedelta(minutes=10)
    for _ in range(3):
        desk.intake.heartbeat("edge-01", now + ten_min, now)
    assert desk.intake.clock_offsets["edge-01"] == pytest.approx(600)
    desk.send(camera_event(site, "cam-01", now + ten_min))
    with desk.engine.connect() as conn:
        ev = conn.execute(select(events)).mappings().one()
    assert ev["ts_source"] == "corrected" and ev["ts"] == now
    assert ev["device_ts"] == now + ten_min
    [t] = desk.tickets()
    assert t["opened_at"] == now


def test_event_time_rules() -> None:
    recv = datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert event_time(recv - timedelta(hours=2), recv, None) == (
        recv - timedelta(hours=2),
        "device",
    )
    assert event_time(recv + timedelta(minutes=5), recv, None) == (recv, "received")
    assert event_time(recv + timedelta(seconds=20), recv, 5.0) == (
        recv + timedelta(seconds=20),
        "device",
    )
    assert event_time(recv - timedelta(minutes=9), recv, -600.0)[1] == "corrected"
    assert next_offset(None, 600) == 600
    assert next_offset(600, 610) == pytest.approx(602)
    assert next_offset(600, 0) == 0  # the device's clock was set right


def test_an_implausibly_old_device_time_is_replaced_by_the_receive_time() -> None:
    recv = datetime(2026, 1, 5, 9, tzinfo=UTC)
    reset = datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC)  # a real-time clock that lost power
    assert event_time(reset, recv, None) == (recv, "received")
    # The oldest event an edge outbox still replays keeps its device time, with a margin.
    assert event_time(recv - OUTBOX_MAX_AGE, recv, None) == (recv - OUTBOX_MAX_AGE, "device")
    assert event_time(recv - PAST_TOLERANCE, recv, None)[1] == "device"
    past = recv - PAST_TOLERANCE - timedelta(seconds=1)
    assert event_time(past, recv, None) == (recv, "received")
    # Once a heartbeat has told the device's offset, the reset clock is corrected instead.
    assert event_time(reset, recv, (reset - recv).total_seconds()) == (recv, "corrected")
    # A correction that leaves the calendar (years 1-9999) is implausible, not a crash.
    assert event_time(datetime(1, 1, 1, tzinfo=UTC), recv, 600.0) == (recv, "received")
    assert event_time(recv - timedelta(days=30), recv, -120.0) == (recv, "received")


def test_a_store_that_refuses_writes_keeps_the_batch_and_dead_letters_nothing(
    desk: Desk, site: Site
) -> None:
    ev = camera_event(site, "cam-01", desk.clock.now())
    topic = topics.event(ev.device_id)
    with desk.running() as intake:
        with refusing_writes(desk.engine):
            for i, payload in enumerate((ev.to_json(), b"{not json")):
                intake.submit(
                    Delivery(topic, payload, 1, False, i, lambda m=i: desk.acked.append(m))
                )
            assert "readonly" in str(wait_until(lambda: intake.store_error))
            time.sleep(1)  # a retry or two
            assert desk.acked == []  # the broker keeps both meanwhile
            with desk.engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(dead_letters)).scalar() == 0
        wait_until(lambda: len(desk.acked) == 2 and intake.store_error is None, timeout_s=15)
    assert len(desk.tickets()) == 1 and desk.intake.stats.dead_letters == 1


def test_an_image_the_disk_refuses_keeps_the_event_back(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 120, 40)).save(buf, "JPEG")
    snapshot = Evidence.from_jpeg(buf.getvalue(), 32, 24)
    ev = camera_event(site, "cam-01", now, snapshot=snapshot)
    day = desk.folder / "ev" / f"{now:%Y/%m/%d}"
    day.parent.mkdir(parents=True)
    day.write_bytes(b"")  # a file where the day's folder goes: no image can be written
    with pytest.raises(OSError):
        desk.send(ev)
    assert desk.acked == []
    with desk.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(dead_letters)).scalar() == 0
    day.unlink()
    desk.send(ev)  # redelivered once the disk takes writes again
    [t] = desk.tickets()
    with desk.engine.connect() as conn:
        assert conn.execute(select(evidence.c.ticket_id)).scalars().all() == [t["id"]]


def test_one_batch_with_the_whole_story_of_a_pile(desk: Desk, site: Site) -> None:
    """In one transaction: two cameras see it, one updates, both clear; then a new pile."""
    now = desk.clock.now()

    def a(state: str, seq: int) -> Event:
        return camera_event(site, "cam-01", now, track="a", state=state, seq=seq, position=CAM1)

    def b(state: str, seq: int) -> Event:
        return camera_event(
            site, "cam-02", now, track="b", state=state, seq=seq, position=offset(*CAM1, east_m=5)
        )

    desk.send(
        a("new", 1),
        b("new", 1),
        a("update", 2),
        a("update", 3),
        a("cleared", 4),
        b("update", 2),
        b("cleared", 3),
        a("new", 5),
    )
    first, second = desk.tickets()
    assert (first["status"], first["close_reason"]) == ("cancelled", "cleared_by_camera")
    assert desk.incident(first["incident_id"])["events"] == 5  # a new, b new, a×2, b update
    assert second["status"] == "assigned"  # track a seen again after its incident closed
    assert desk.track_incidents() == {
        "edge-01/cam-01/a": second["incident_id"],
        "edge-01/cam-02/b": first["incident_id"],
    }


def test_a_batch_counts_every_sighting_of_the_problems_it_opens(desk: Desk, site: Site) -> None:
    """A batch writes the incidents it opens when it ends; their re-sightings count even when
    the same batch also updates an incident stored before (which writes pending re-sightings
    early: those of a new incident must wait for its row)."""
    now = desk.clock.now()
    stored = offset(*CAM1, east_m=200)
    desk.send(camera_event(site, "cam-01", now, track="old", position=stored))

    def a(state: str, seq: int) -> Event:
        return camera_event(site, "cam-01", now, track="a", state=state, seq=seq, position=CAM1)

    desk.send(
        a("new", 1),
        a("update", 2),
        camera_event(site, "cam-02", now, track="b", position=offset(*stored, east_m=5)),
        a("update", 3),
        camera_event(site, "cam-02", now, track="c", position=offset(*CAM1, north_m=3)),
    )
    older, new = desk.tickets()
    assert desk.incident(older["incident_id"])["events"] == 2  # old, then b
    opened = desk.incident(new["incident_id"])
    assert opened["events"] == 4 and opened["camera_ids"] == ["cam-01", "cam-02"]
    assert [step for step, _, _ in desk.history(new["id"])] == ["opened", "assigned"]
    assert desk.track_incidents() == {
        "edge-01/cam-01/old": older["incident_id"],
        "edge-01/cam-02/b": older["incident_id"],
        "edge-01/cam-01/a": new["incident_id"],
        "edge-01/cam-02/c": new["incident_id"],
    }


def test_a_bad_event_in_a_batch_is_dead_lettered_alone(desk: Desk, site: Site) -> None:
    import base64

    from broker.messages import Evidence

    now = desk.clock.now()
    broken = Evidence(
        jpeg_b64=base64.b64encode(b"\xff\xd8" + b"\0" * 60).decode(), width=10, height=10
    )
    desk.send(
        camera_event(site, "cam-01", now, track="a", position=CAM1),
        camera_event(
            site, "cam-01", now, track="x", position=offset(*CAM1, north_m=100), snapshot=broken
        ),
        camera_event(site, "cam-01", now, track="c", position=offset(*CAM1, north_m=200)),
    )
    assert len(desk.tickets()) == 2
    with desk.engine.connect() as conn:
        [reason] = conn.execute(select(dead_letters.c.reason)).scalars().all()
    assert "not a readable image" in reason and desk.intake.stats.dead_letters == 1
