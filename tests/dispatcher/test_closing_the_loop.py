"""The running dispatcher against a real Mosquitto: decline and reassign, closure verified by the
camera (clear, still present, no answer), and a false alarm kept as a hard negative."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from sqlalchemy import select

from broker import topics
from broker.client import BusClient, Delivery
from broker.messages import Command, CommandResult, TicketPush
from config.clock import ManualClock
from config.site import Site
from dispatcher.lifecycle import Transition
from dispatcher.service import Dispatcher
from dispatcher.store.schema import audit, evidence, tickets
from simulators.devices import synthetic_snapshot
from tests.conftest import wait_until
from tests.dispatcher.factories import camera_event, offset

MORNING = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # 17:00 in Shanghai: the day shift


@dataclass
class Camera:
    """The camera side of verification, as an edge box answers ``verify`` commands."""

    bus: BusClient
    answer: Literal["clear", "still_present", "silent"] = "clear"
    asked: list[Command] = field(default_factory=list)

    def on_command(self, d: Delivery) -> None:
        cmd = Command.from_json(d.payload)
        self.asked.append(cmd)
        if self.answer == "silent":
            return
        snapshot = (
            synthetic_snapshot(cmd.kind or "garbage", (0.4, 0.5, 0.6, 0.8), 7)
            if self.answer == "still_present"
            else None
        )
        self.bus.publish(
            topics.command_result(cmd.device_id),
            CommandResult(
                command_id=cmd.command_id,
                device_id=cmd.device_id,
                action="verify",
                ts=cmd.issued_at,
                outcome=self.answer,
                camera_id=cmd.camera_id,
                ticket_id=cmd.ticket_id,
                snapshot=snapshot,
            ),
        )


@pytest.fixture
def rig(
    site: Site,
    make_dispatcher: Callable[..., Dispatcher],
    device_bus: Callable[..., BusClient],
) -> Iterator[tuple[Dispatcher, Camera, list[TicketPush], ManualClock]]:
    clock = ManualClock(MORNING)
    d = make_dispatcher(clock=clock)
    edge = device_bus("edge-01")
    camera = Camera(edge)
    edge.subscribe(topics.command("edge-01"), camera.on_command)
    edge.start(wait_s=10)
    pushes: list[TicketPush] = []
    app = device_bus("dispatcher", site.broker.dispatcher_password.get_secret_value())
    app.subscribe(
        f"{topics.ROOT}/worker/+/tickets", lambda m: pushes.append(TicketPush.from_json(m.payload))
    )
    app.start(wait_s=10)
    yield d, camera, pushes, clock


def open_ticket(
    d: Dispatcher,
    camera: Camera,
    site: Site,
    kind: str = "garbage",
    north_m: float = 0,
    snapshot: bool = False,
) -> dict[str, object]:
    before = {t["id"] for t in rows(d)}
    cam = site.cameras[0]
    extra = {"snapshot": synthetic_snapshot(kind, (0.4, 0.5, 0.6, 0.8), 1)} if snapshot else {}
    ev = camera_event(
        site,
        "cam-01",
        d.clock.now(),
        kind=kind,
        track=f"t{north_m}",
        position=offset(cam.position.lat, cam.position.lon, north_m=north_m),
        **extra,
    )
    camera.bus.publish(topics.event("edge-01"), ev)
    new = wait_until(lambda: [t for t in rows(d) if t["id"] not in before])
    return new[0]  # type: ignore[index,no-any-return]


def rows(d: Dispatcher) -> list[dict[str, object]]:
    with d.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(tickets).order_by(tickets.c.id)).mappings()]


def status(d: Dispatcher, ticket_id: object) -> str:
    return next(str(t["status"]) for t in rows(d) if t["id"] == ticket_id)


def test_decline_reassigns_and_tells_both_workers(
    rig: tuple[Dispatcher, Camera, list[TicketPush], ManualClock], site: Site
) -> None:
    d, camera, pushes, _ = rig
    t = open_ticket(d, camera, site)
    assert t["worker_id"] == "w01"
    row = d.decline(int(t["id"]), worker_id="w01", reason="车坏了 / my bike is broken")  # type: ignore[call-overload]
    assert row["worker_id"] in {"w02", "w03"} and row["status"] == "assigned"
    got = wait_until(
        lambda: (
            [(p.worker_id, p.action) for p in pushes][-2:]
            == [("w01", "unassigned"), (row["worker_id"], "assigned")]
        )
    )
    assert got
    with d.engine.connect() as conn:
        declined = (
            conn.execute(select(audit).where(audit.c.transition == "declined")).mappings().one()
        )
    assert (declined["actor"], declined["from_worker_id"], declined["reason"]) == (
        "worker:w01",
        "w01",
        "车坏了 / my bike is broken",
    )


def test_camera_clear_closes_the_ticket(
    rig: tuple[Dispatcher, Camera, list[TicketPush], ManualClock], site: Site
) -> None:
    d, camera, pushes, _ = rig
    t = open_ticket(d, camera, site)
    tid = int(t["id"])  # type: ignore[call-overload]
    d.act(tid, Transition.ACCEPTED, worker_id="w01", actor="worker:w01")
    d.resolve(tid, worker_id="w01", photo=None, note="done")
    wait_until(lambda: status(d, tid) == "closed")
    [cmd] = camera.asked
    assert (cmd.action, cmd.camera_id, cmd.kind, cmd.ticket_id) == (
        "verify",
        "cam-01",
        "garbage",
        str(tid),
    )
    assert cmd.region == (0.4, 0.5, 0.6, 0.8)
    closed = next(r for r in rows(d) if r["id"] == tid)
    assert closed["close_reason"] == "fixed"
    wait_until(lambda: any(p.action == "closed" and p.ticket_id == str(tid) for p in pushes))


def test_still_present_reopens_to_the_same_worker_with_the_new_snapshot(
    rig: tuple[Dispatcher, Camera, list[TicketPush], ManualClock], site: Site
) -> None:
    d, camera, pushes, clock = rig
    camera.answer = "still_present"
    t = open_ticket(d, camera, site)
    tid = int(t["id"])  # type: ignore[call-overload]
    d.act(tid, Transition.ACCEPTED, worker_id="w01", actor="worker:w01")
    d.resolve(tid, worker_id="w01", photo=None, note="done")
    wait_until(lambda: status(d, tid) == "assigned")
    row = next(r for r in rows(d) if r["id"] == tid)
    assert row["worker_id"] == "w01" and row["reopen_count"] == 1
    with d.engine.connect() as conn:
        kinds = conn.execute(select(evidence.c.kind).where(evidence.c.ticket_id == tid)).scalars()
        assert "verify" in list(kinds)
    push = wait_until(lambda: next((p for p in pushes if p.action == "reopened"), None))
    assert isinstance(push, TicketPush)
    assert push.worker_id == "w01" and "still sees it" in (push.note or "")

    # The second resolution is judged on the second round of answers only.
    camera.answer = "clear"
    clock.advance(minutes=20)
    d.act(tid, Transition.ACCEPTED, worker_id="w01", actor="worker:w01")
    d.resolve(tid, worker_id="w01", photo=None, note="done again")
    wait_until(lambda: status(d, tid) == "closed")
    assert len(camera.asked) == 2


def test_no_answer_falls_back_to_the_category_policy(
    rig: tuple[Dispatcher, Camera, list[TicketPush], ManualClock], site: Site
) -> None:
    d, camera, _, clock = rig
    camera.answer = "silent"
    pile = open_ticket(d, camera, site)
    hole = open_ticket(d, camera, site, kind="manhole_missing", north_m=50)
    for t in (pile, hole):
        tid = int(t["id"])  # type: ignore[call-overload]
        d.act(tid, Transition.ACCEPTED, worker_id="w01", actor="worker:w01")
        d.resolve(tid, worker_id="w01", photo=None, note="done")
    assert status(d, pile["id"]) == status(d, hole["id"]) == "resolved"
    clock.advance(seconds=120)
    d.timers.run_due()
    assert status(d, pile["id"]) == "closed"  # garbage: accept on the worker's photo
    assert status(d, hole["id"]) == "resolved"  # manhole_missing: the supervisor reviews
    with d.engine.connect() as conn:
        review = (
            conn.execute(
                select(audit).where(audit.c.ticket_id == hole["id"]).order_by(audit.c.id.desc())
            )
            .mappings()
            .first()
        )
    assert review is not None and review["actor"] == "system:review"


def test_false_alarm_is_kept_as_a_yolo_hard_negative(
    rig: tuple[Dispatcher, Camera, list[TicketPush], ManualClock], site: Site
) -> None:
    d, camera, _, _ = rig
    t = open_ticket(d, camera, site, snapshot=True)
    tid = int(t["id"])  # type: ignore[call-overload]
    d.reject(tid, actor="worker:w01", worker_id="w01", reason="只是阴影 / only a shadow")
    assert status(d, tid) == "rejected"
    root = d.settings.state_dir / "hard_negatives"
    [image] = list((root / "images").iterdir())
    label = root / "labels" / f"{image.stem}.txt"
    meta = json.loads((root / "meta" / f"{image.stem}.json").read_text("utf-8"))
    assert image.suffix == ".jpg" and image.read_bytes()[:2] == b"\xff\xd8"
    assert label.read_text() == ""  # nothing of our classes in the image
    assert meta["category"] == "garbage" and meta["bbox_yolo"] == [0.5, 0.65, 0.2, 0.3]
    assert meta["reason"] == "只是阴影 / only a shadow"


def test_the_running_dispatcher_fires_a_timer_when_its_clock_passes_it(
    rig: tuple[Dispatcher, Camera, list[TicketPush], ManualClock], site: Site
) -> None:
    d, camera, pushes, clock = rig
    t = open_ticket(d, camera, site)
    assert t["timer_at"] == clock.now() + timedelta(minutes=10)
    clock.advance(minutes=10)  # w01 never accepted: the next tick hands it on
    wait_until(lambda: next(r for r in rows(d) if r["id"] == t["id"])["worker_id"] != "w01")
    wait_until(lambda: ("w01", "unassigned") in [(p.worker_id, p.action) for p in pushes])
