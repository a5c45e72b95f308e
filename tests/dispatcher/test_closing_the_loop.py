"""The running dispatcher against a real Mosquitto: decline and reassign, closure verified by the
camera (clear, still present, no answer), a resolve without its after-photo refused, verify
results that do not answer our own command dead-lettered, and a false alarm kept as a hard
negative."""

from __future__ import annotations

import json
import uuid
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
from dispatcher.evidence import BadImage
from dispatcher.lifecycle import Transition
from dispatcher.service import Dispatcher
from dispatcher.store.schema import audit, dead_letters, evidence, tickets, verifications
from simulators.devices import synthetic_snapshot
from simulators.workers import after_photo
from tests.conftest import wait_until
from tests.dispatcher.factories import camera_event, offset

MORNING = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # 17:00 in Shanghai: the day shift
PHOTO = after_photo(1, 1)


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
    assert declined["reason_params"] == {"text": "车坏了 / my bike is broken"}
    with d.engine.connect() as conn:
        moved = (
            conn.execute(select(audit).where(audit.c.id > declined["id"]).order_by(audit.c.id))
            .mappings()
            .first()
        )
    assert moved is not None and moved["actor"] == "system"
    assert (moved["reason_code"], moved["reason_params"]["cause"]) == (
        "assign.neighbour",
        {"code": "assign.declined_by", "params": {"worker": "w01"}},
    )


def test_camera_clear_closes_the_ticket(
    rig: tuple[Dispatcher, Camera, list[TicketPush], ManualClock], site: Site
) -> None:
    d, camera, pushes, _ = rig
    t = open_ticket(d, camera, site)
    tid = int(t["id"])  # type: ignore[call-overload]
    d.act(tid, Transition.ACCEPTED, worker_id="w01", actor="worker:w01")
    d.resolve(tid, worker_id="w01", photo=PHOTO, note="done")
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
    d.resolve(tid, worker_id="w01", photo=PHOTO, note="done")
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
    d.resolve(tid, worker_id="w01", photo=PHOTO, note="done again")
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
        d.resolve(tid, worker_id="w01", photo=PHOTO, note="done")
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
    root = d.settings.state_dir / "hard_negatives" / "garbage"
    [image] = list((root / "images").iterdir())
    label = root / "labels" / f"{image.stem}.txt"
    [meta] = [json.loads(x) for x in (root / "manifest.jsonl").read_text("utf-8").splitlines()]
    assert image.suffix == ".jpg" and image.read_bytes()[:2] == b"\xff\xd8"
    assert label.read_text() == ""  # no garbage in the image
    assert meta["kind"] == "garbage" and meta["bbox_yolo"] == [0.5, 0.65, 0.2, 0.3]
    assert meta["reason"] == "只是阴影 / only a shadow" and meta["image"] == image.name


def test_the_running_dispatcher_fires_a_timer_when_its_clock_passes_it(
    rig: tuple[Dispatcher, Camera, list[TicketPush], ManualClock], site: Site
) -> None:
    d, camera, pushes, clock = rig
    t = open_ticket(d, camera, site)
    assert t["timer_at"] == clock.now() + timedelta(minutes=10)
    clock.advance(minutes=10)  # w01 never accepted: the next tick hands it on
    wait_until(lambda: next(r for r in rows(d) if r["id"] == t["id"])["worker_id"] != "w01")
    wait_until(lambda: ("w01", "unassigned") in [(p.worker_id, p.action) for p in pushes])


def test_a_resolve_without_an_after_photo_is_refused(
    rig: tuple[Dispatcher, Camera, list[TicketPush], ManualClock], site: Site
) -> None:
    d, camera, _, _ = rig
    tid = int(open_ticket(d, camera, site)["id"])  # type: ignore[call-overload]
    d.act(tid, Transition.ACCEPTED, worker_id="w01", actor="worker:w01")
    with pytest.raises(BadImage, match="an after-photo is required"):
        d.resolve(tid, worker_id="w01", photo=b"", note="done")
    assert status(d, tid) == "accepted" and camera.asked == []


def resolve_unanswered(d: Dispatcher, camera: Camera, ticket_id: int) -> Command:
    """The worker resolves; the camera is asked and (for now) says nothing: the command."""
    camera.answer = "silent"
    before = len(camera.asked)
    d.act(ticket_id, Transition.ACCEPTED, worker_id="w01", actor="worker:w01")
    d.resolve(ticket_id, worker_id="w01", photo=PHOTO, note="done")
    wait_until(lambda: len(camera.asked) > before)
    [cmd] = camera.asked[before:]
    assert cmd.ticket_id == str(ticket_id)
    return cmd


def answer(cmd: Command, **changes: object) -> CommandResult:
    """The answer its camera would give to ``cmd``, with ``changes``."""
    fields: dict[str, object] = {
        "command_id": cmd.command_id,
        "device_id": cmd.device_id,
        "action": "verify",
        "ts": cmd.issued_at,
        "outcome": "clear",
        "camera_id": cmd.camera_id,
        "ticket_id": cmd.ticket_id,
    }
    return CommandResult.model_validate({**fields, **changes})


def dead_letter_reasons(d: Dispatcher) -> list[str]:
    with d.engine.connect() as conn:
        return list(
            conn.execute(select(dead_letters.c.reason).order_by(dead_letters.c.id)).scalars()
        )


def verify_evidence(d: Dispatcher) -> list[object]:
    """The ticket of each stored verify snapshot."""
    with d.engine.connect() as conn:
        return list(
            conn.execute(select(evidence.c.ticket_id).where(evidence.c.kind == "verify")).scalars()
        )


def test_a_verify_result_counts_for_the_ticket_its_command_asked_about(
    rig: tuple[Dispatcher, Camera, list[TicketPush], ManualClock], site: Site
) -> None:
    """The device's ticket id is not trusted: a result attaches its image to the ticket of
    the command it answers, and a ticket id that is not even a number loses no outcome."""
    d, camera, _, clock = rig
    asked = int(open_ticket(d, camera, site)["id"])  # type: ignore[call-overload]
    other = int(open_ticket(d, camera, site, north_m=80)["id"])  # type: ignore[call-overload]
    cmd = resolve_unanswered(d, camera, asked)
    snapshot = synthetic_snapshot("garbage", (0.4, 0.5, 0.6, 0.8), 3)
    camera.bus.publish(
        topics.command_result("edge-01"),
        answer(cmd, outcome="still_present", ticket_id=str(other), snapshot=snapshot),
    )
    wait_until(lambda: status(d, asked) == "assigned")  # reopened to its worker
    assert verify_evidence(d) == [asked] and status(d, other) == "assigned"

    clock.advance(minutes=5)
    again = resolve_unanswered(d, camera, asked)
    camera.bus.publish(topics.command_result("edge-01"), answer(again, ticket_id="not-a-number"))
    wait_until(lambda: status(d, asked) == "closed")
    assert dead_letter_reasons(d) == []


def test_results_that_answer_no_command_of_ours_are_dead_lettered(
    rig: tuple[Dispatcher, Camera, list[TicketPush], ManualClock],
    site: Site,
    device_bus: Callable[..., BusClient],
) -> None:
    d, camera, _, _ = rig
    tid = int(open_ticket(d, camera, site)["id"])  # type: ignore[call-overload]
    cmd = resolve_unanswered(d, camera, tid)
    results = topics.command_result("edge-01")
    snapshot = synthetic_snapshot("garbage", (0.4, 0.5, 0.6, 0.8), 5)
    unknown = uuid.uuid4()
    camera.bus.publish(
        results, answer(cmd, command_id=unknown, outcome="still_present", snapshot=snapshot)
    )
    other_box = device_bus("edge-02")
    other_box.start(wait_s=10)
    other_box.publish(
        topics.command_result("edge-02"),
        answer(cmd, device_id="edge-02", outcome="still_present", snapshot=snapshot),
    )
    camera.bus.publish(results, answer(cmd, device_id="edge-02"))  # not its own name
    camera.bus.publish(results, b'{"schema": "gw.cmd_result", "v": 1, "outcome": "clear"}')
    wait_until(lambda: len(dead_letter_reasons(d)) == 4)
    reasons = set(dead_letter_reasons(d))
    expected = {
        f"unknown command {unknown}: no verification was asked with it",
        f"command {cmd.command_id} was sent to 'edge-01', not to 'edge-02'",
        "device_id 'edge-02' does not match topic device 'edge-01'",
    }
    assert expected < reasons
    assert "command_id" in next(iter(reasons - expected))  # the malformed one names what lacks
    assert status(d, tid) == "resolved" and verify_evidence(d) == []
    assert list(d.evidence.root.rglob("verify-*")) == []  # no image kept for a refused result
    with d.engine.connect() as conn:
        pending = conn.execute(select(verifications.c.answered_at)).scalars().all()
    assert pending == [None]

    camera.bus.publish(results, answer(cmd))  # the real answer still closes it
    wait_until(lambda: status(d, tid) == "closed")
    camera.bus.publish(results, answer(cmd))  # delivered twice: nothing more happens
    closed = next(r for r in rows(d) if r["id"] == tid)
    camera.bus.publish(results, answer(cmd, command_id=uuid.uuid4()))  # a marker behind it
    wait_until(lambda: len(dead_letter_reasons(d)) == 5)
    assert next(r for r in rows(d) if r["id"] == tid) == closed
