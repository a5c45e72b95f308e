"""Every reason the dispatcher writes into an audit row is a code with parameters (what the web
pages translate) beside its English sentence (what the API shows): on the real ticket store,
driven by a ManualClock, for assignment, timers, verification and a camera's clearing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from config.clock import ManualClock
from config.site import Site
from dispatcher import verify
from dispatcher.lifecycle import Transition
from dispatcher.reasons import Reason, ReasonCode, as_reason, audit_columns
from dispatcher.store.schema import audit, verifications
from tests.dispatcher.factories import Desk, camera_event, sensor_event
from tests.dispatcher.test_timers import open_one

MORNING = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # 17:00 in Asia/Shanghai: w01 on duty in g1

SAMPLE_PARAMS: dict[str, Any] = {
    "text": "人手调整",
    "grid": "g1",
    "neighbour": "g2",
    "worker": "w01",
    "seconds": 600.0,
    "deadline": "2026-01-05T13:00:00+00:00",
    "by": "camera",
    "id": "cam-01",
    "ids": ["cam-01", "cam-02"],
}


@pytest.fixture
def desk(site: Site, tmp_path: Path) -> Desk:
    return Desk(site, tmp_path, ManualClock(MORNING))


def trail(desk: Desk, ticket_id: int) -> list[dict[str, Any]]:
    with desk.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(audit).where(audit.c.ticket_id == ticket_id).order_by(audit.c.id)
            ).mappings()
        ]


def coded(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return row["reason_code"], row["reason_params"]


@pytest.mark.parametrize("code", list(ReasonCode))
def test_every_code_has_an_english_sentence(code: ReasonCode) -> None:
    text = Reason(code, SAMPLE_PARAMS).text
    assert text.strip() and "{" not in text and "None" not in text


def test_a_reason_keeps_its_cause_first_in_text_and_in_params() -> None:
    timeout = Reason(ReasonCode.ACCEPT_TIMEOUT, {"worker": "w01", "seconds": 180.0})
    why = Reason(ReasonCode.ASSIGN_HOME, {"grid": "g2"}).because(timeout)
    assert why.text == "w01 did not accept within 3 min; on duty in g2"
    assert audit_columns(why) == {
        "reason": "w01 did not accept within 3 min; on duty in g2",
        "reason_code": "assign.home",
        "reason_params": {
            "grid": "g2",
            "cause": {
                "code": "timer.accept_timeout",
                "params": {"worker": "w01", "seconds": 180.0},
            },
        },
    }
    assert audit_columns("车坏了") == {
        "reason": "车坏了",
        "reason_code": "note",
        "reason_params": {"text": "车坏了"},
    }
    assert (
        audit_columns(None)
        == audit_columns("")
        == {
            "reason": None,
            "reason_code": None,
            "reason_params": None,
        }
    )
    assert as_reason(why) is why


def test_opening_says_where_the_worker_is_on_duty(desk: Desk, site: Site) -> None:
    t = open_one(desk, site)
    opened, assigned = trail(desk, t)
    assert (opened["transition"], opened["reason_code"], opened["reason"]) == ("opened", None, None)
    assert (assigned["actor"], assigned["worker_id"]) == ("system", "w01")
    assert coded(assigned) == ("assign.home", {"grid": "g1"})
    assert assigned["reason"] == "on duty in g1"


def test_an_accept_timeout_is_the_cause_of_the_reassignment(desk: Desk, site: Site) -> None:
    t = open_one(desk, site)
    desk.clock.advance(minutes=10)
    desk.timers.run_due()
    moved = trail(desk, t)[-1]
    assert moved["transition"] == "reassigned" and moved["actor"] == "timer:accept_timeout"
    assert moved["reason_code"] == "assign.neighbour"
    assert moved["reason_params"] == {
        "grid": "g1",
        "neighbour": moved["reason_params"]["neighbour"],
        "cause": {"code": "timer.accept_timeout", "params": {"worker": "w01", "seconds": 600.0}},
    }
    assert moved["reason_params"]["neighbour"] in {"g2", "g3"}
    assert moved["reason"] == (
        f"w01 did not accept within 10 min; nobody on duty in g1; "
        f"{moved['reason_params']['neighbour']} covers"
    )


def test_reminder_and_sla_carry_the_deadline_as_a_utc_time(desk: Desk, site: Site) -> None:
    t = open_one(desk, site)  # garbage: SLA 240 min, reminder 30 min before
    desk.act(t, Transition.ACCEPTED)
    deadline = desk.ticket(t)["deadline"]
    assert deadline == MORNING + timedelta(minutes=240)
    desk.clock.advance(minutes=210)
    desk.timers.run_due()
    desk.clock.advance(minutes=30)
    desk.timers.run_due()
    reminded, escalated = trail(desk, t)[-2:]
    assert coded(reminded) == ("timer.reminder", {"deadline": "2026-01-05T13:00:00+00:00"})
    assert reminded["reason"] == "due by 2026-01-05 13:00 UTC"
    assert coded(escalated) == ("timer.sla_breached", {"deadline": "2026-01-05T13:00:00+00:00"})
    assert escalated["reason"] == "SLA deadline 2026-01-05 13:00 UTC passed"
    assert datetime.fromisoformat(escalated["reason_params"]["deadline"]) == deadline


def test_verification_reasons_name_the_cameras(desk: Desk, site: Site) -> None:
    pile = open_one(desk, site)
    desk.act(pile, Transition.ACCEPTED)
    [cam] = desk.resolve(pile)
    with desk.engine.begin() as conn:
        conn.execute(
            update(verifications)
            .where(verifications.c.ticket_id == pile)
            .values(outcome="clear", answered_at=desk.clock.now())
        )
        judgement = verify.settle(conn, site, pile, desk.clock.now())
    assert judgement is not None and judgement.verdict == "close"
    closed = trail(desk, pile)[-1]
    assert (closed["transition"], closed["actor"]) == ("verified", "system:verify")
    assert coded(closed) == ("verify.clear", {"by": "camera", "ids": [cam]})
    assert closed["reason"] == f"verified clear by camera {cam}"

    hole = open_one(desk, site, kind="manhole_missing", camera="cam-02")  # supervisor review
    desk.act(hole, Transition.ACCEPTED)
    desk.resolve(hole)
    desk.clock.advance(seconds=120)
    desk.timers.run_due()
    review = trail(desk, hole)[-1]
    assert (review["transition"], review["actor"]) == ("escalated", "system:review")
    assert coded(review) == ("verify.timeout_review", {"by": "camera"})
    assert review["reason"] == "no camera answered in time; needs the supervisor's review"


def test_a_shift_change_says_so(desk: Desk, site: Site) -> None:
    desk.clock.set(datetime(2026, 1, 5, 10, 55, tzinfo=UTC))  # 18:55 local
    t = open_one(desk, site)
    desk.clock.set(datetime(2026, 1, 5, 11, 0, tzinfo=UTC))  # 19:00: w05's night shift
    desk.timers.handover()
    moved = trail(desk, t)[-1]
    assert coded(moved) == (
        "assign.home",
        {"grid": "g1", "cause": {"code": "timer.shift_change", "params": {}}},
    )
    assert moved["reason"] == "shift change; on duty in g1"


def test_a_camera_or_sensor_clearing_cancels_with_a_coded_reason(desk: Desk, site: Site) -> None:
    now = desk.clock.now()
    desk.send(camera_event(site, "cam-01", now, track="a"))
    [t] = desk.tickets()
    desk.send(camera_event(site, "cam-01", now, track="a", state="cleared", seq=2))
    cancelled = trail(desk, t["id"])[-1]
    assert (cancelled["transition"], cancelled["actor"]) == ("cancelled", "device:edge-01")
    assert coded(cancelled) == ("intake.cleared", {"by": "camera", "id": "cam-01"})
    assert cancelled["reason"] == "cleared by camera cam-01 before anyone arrived"
    assert desk.ticket(t["id"])["close_reason"] == "cleared_by_camera"

    desk.send(sensor_event(site, "mh-tilt-01", now))
    t = desk.tickets()[-1]
    desk.send(sensor_event(site, "mh-tilt-01", now + timedelta(minutes=1), state="cleared", seq=2))
    cancelled = trail(desk, t["id"])[-1]
    assert coded(cancelled) == ("intake.cleared", {"by": "sensor", "id": "mh-tilt-01"})
    assert desk.ticket(t["id"])["close_reason"] == "cleared_by_sensor"
