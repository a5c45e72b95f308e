"""A dispatcher restarted in the middle of its work loses no ticket and no timer, and fires
nothing twice: events sent while it was down arrive through its persistent session, and the
timers that fell due meanwhile fire once when it is back."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from broker import topics
from broker.client import BusClient
from config.clock import ManualClock
from config.site import Site
from dispatcher.lifecycle import Transition
from dispatcher.service import Dispatcher
from dispatcher.store.schema import audit, tickets
from simulators.workers import after_photo
from tests.conftest import wait_until
from tests.dispatcher.factories import camera_event, offset

MORNING = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def state(d: Dispatcher) -> dict[int, tuple[str, str | None]]:
    with d.engine.connect() as conn:
        return {r.id: (r.status, r.worker_id) for r in conn.execute(select(tickets))}


def transitions(d: Dispatcher, ticket_id: int, name: str) -> int:
    with d.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(audit)
                .where(audit.c.ticket_id == ticket_id, audit.c.transition == name)
            ).scalar_one()
        )


def test_restart_loses_no_ticket_and_no_timer(
    site: Site,
    make_dispatcher: Callable[..., Dispatcher],
    device_bus: Callable[..., BusClient],
    tmp_path: Path,
) -> None:
    clock = ManualClock(MORNING)
    same = {
        "state_dir": tmp_path / "dispatcher",
        "mqtt_client_id": f"d-{uuid.uuid4().hex[:8]}",
        "share_group": f"r{uuid.uuid4().hex[:8]}",
    }
    first = make_dispatcher(clock=clock, **same)
    edge = device_bus("edge-01")
    edge.start(wait_s=10)  # it never answers a verify command
    cam = site.cameras[0]

    def send(n: int) -> None:
        where = offset(cam.position.lat, cam.position.lon, north_m=40 * n)
        edge.publish(
            topics.event("edge-01"),
            camera_event(site, "cam-01", clock.now(), track=f"t{n}", position=where),
        )

    for n in range(3):
        send(n)
    wait_until(lambda: len(state(first)) == 3)
    accepted, waiting, resolved = sorted(state(first))
    first.act(accepted, Transition.ACCEPTED, worker_id="w01", actor="worker:w01")
    first.act(resolved, Transition.ACCEPTED, worker_id="w01", actor="worker:w01")
    first.resolve(resolved, worker_id="w01", photo=after_photo(resolved, 1), note="cleaned")
    first.stop()

    # While it is down: two more problems are reported and eleven minutes pass, so the
    # waiting ticket's accept timeout and the resolved one's verification timeout fall due.
    for n in (3, 4):
        send(n)
    clock.advance(minutes=11)

    second = make_dispatcher(clock=clock, **same)
    wait_until(lambda: len(state(second)) == 5, timeout_s=15)
    wait_until(
        lambda: state(second)[waiting][1] != "w01" and state(second)[resolved][0] == "closed",
        timeout_s=15,
    )
    assert second.timers.run_due() == []  # already fired, once
    assert transitions(second, waiting, "reassigned") == 1
    assert transitions(second, resolved, "verified") == 1
    assert state(second)[accepted] == ("accepted", "w01")  # accepted work is untouched
    assert second.intake.stats.duplicates == 0
    # the next timers: accept timeouts ten minutes after the handover and the new assignments
    assert second.timers.earliest() == MORNING + timedelta(minutes=21)

    def unpushed() -> int:
        with second.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(audit).where(audit.c.pushed.is_(False))
                ).scalar_one()
            )

    wait_until(lambda: unpushed() == 0)  # every transition's push went out, and is marked
