"""The first closed loop against real Mosquitto and InfluxDB: detection → ticket → push → point."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select

from broker import topics
from broker.client import BusClient, Delivery
from broker.messages import Event, TicketPush
from config.site import Site
from dispatcher.service import Dispatcher
from dispatcher.store.schema import audit, dead_letters, tickets
from tests.conftest import ApiServer, login, wait_until


def detection(site: Site, camera_id: str = "cam-01", **overrides: object) -> Event:
    cam = next(c for c in site.cameras if c.id == camera_id)
    fields: dict[str, object] = dict(
        event_id=uuid.uuid4(),
        device_id=cam.device,
        source_id=cam.id,
        source_type="camera",
        kind="garbage",
        state="new",
        seq=1,
        ts=datetime.now(UTC),
        track_id="trk-1",
        confidence=0.9,
        bbox=(0.4, 0.5, 0.6, 0.8),
        position=cam.position,
    )
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def count(d: Dispatcher, table: object, *where: object) -> int:
    with d.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())  # type: ignore[arg-type]


def test_detection_becomes_a_pushed_ticket_and_a_point(
    site: Site, make_dispatcher: Callable[..., Dispatcher], device_bus: Callable[..., BusClient]
) -> None:
    d = make_dispatcher()
    listener = device_bus("dispatcher", site.broker.dispatcher_password.get_secret_value())
    pushes: list[Delivery] = []
    listener.subscribe(f"{topics.ROOT}/worker/+/tickets", pushes.append)
    listener.start(wait_s=10)
    edge = device_bus("edge-01")
    edge.start(wait_s=10)
    ev = detection(site)
    edge.publish(topics.event("edge-01"), ev)

    wait_until(lambda: count(d, tickets) == 1)
    with d.engine.connect() as conn:
        t = conn.execute(select(tickets)).mappings().one()
    assert t["grid_id"] == "g1" and t["status"] == "assigned" and t["category"] == "garbage"
    on_duty = {"w01", "w05"}  # day or night worker of g1, whichever is on shift now
    assert t["worker_id"] in on_duty or t["worker_id"] in {"w02", "w03"}

    push = wait_until(lambda: next((p for p in pushes if b'"assigned"' in p.payload), None))
    assert isinstance(push, Delivery)
    msg = TicketPush.from_json(push.payload)
    assert push.topic == topics.worker_tickets(t["worker_id"])
    assert (msg.ticket_id, msg.worker_id, msg.category) == (str(t["id"]), t["worker_id"], "garbage")

    rows = wait_until(
        lambda: d.influx.query("SELECT * FROM ticket WHERE transition = 'assigned'"),
        timeout_s=15,
    )
    assert isinstance(rows, list) and len(rows) == 1
    assert rows[0]["grid"] == "g1" and rows[0]["worker"] == t["worker_id"]
    assert rows[0]["ticket_id"] == t["id"]


def test_redelivered_event_makes_one_ticket(
    site: Site, make_dispatcher: Callable[..., Dispatcher], device_bus: Callable[..., BusClient]
) -> None:
    d = make_dispatcher()
    edge = device_bus("edge-02")
    edge.start(wait_s=10)
    ev = detection(site, "cam-03")
    for _ in range(3):
        edge.publish(topics.event("edge-02"), ev)
    wait_until(lambda: d.intake.stats.received >= 3)
    assert count(d, tickets) == 1
    assert d.intake.stats.duplicates == 2
    assert count(d, audit, audit.c.transition == "opened") == 1


def test_malformed_messages_are_dead_lettered_and_service_keeps_running(
    site: Site, make_dispatcher: Callable[..., Dispatcher], device_bus: Callable[..., BusClient]
) -> None:
    d = make_dispatcher()
    edge = device_bus("edge-03")
    edge.start(wait_s=10)
    good = detection(site, "cam-05")
    bad_doc = json.loads(detection(site, "cam-05").to_json())
    bad_doc["kind"] = "alien_invasion"
    wrong_device = detection(site, "cam-01")  # edge-01's camera, sent by edge-03
    for payload in (
        b"not json at all",
        b'{"schema": "gw.event"}',
        json.dumps(bad_doc).encode(),
        wrong_device.to_json(),
        good.to_json(),
    ):
        edge.publish(topics.event("edge-03"), payload)
    wait_until(lambda: count(d, tickets) == 1 and count(d, dead_letters) == 4)
    with d.engine.connect() as conn:
        reasons = [r.reason for r in conn.execute(select(dead_letters.c.reason)).all()]
    assert any("not JSON" in r or "Invalid JSON" in r for r in reasons)
    assert any("unknown category 'alien_invasion'" in r for r in reasons)
    assert any("does not match topic device" in r for r in reasons)


def test_worker_accepts_and_resolves_through_the_api(
    site: Site,
    make_dispatcher: Callable[..., Dispatcher],
    device_bus: Callable[..., BusClient],
    site_secrets: dict[str, str],
) -> None:
    d = make_dispatcher()
    edge = device_bus("edge-04")
    edge.start(wait_s=10)
    edge.publish(topics.event("edge-04"), detection(site, "cam-07", kind="manhole_broken"))
    wait_until(lambda: count(d, tickets) == 1)
    with d.engine.connect() as conn:
        t = conn.execute(select(tickets)).mappings().one()
    from tests.conftest import ApiServer as _  # noqa: F401  (keeps the import explicit)

    with ApiServer(__import__("dispatcher.api.app", fromlist=["create_app"]).create_app(d)) as api:
        worker = login(api.url, t["worker_id"], site_secrets[f"GW_PW_{t['worker_id'].upper()}"])
        listed = worker.get("/tickets").json()
        assert [x["id"] for x in listed["items"]] == [t["id"]]
        assert worker.post(f"/tickets/{t['id']}/accept").json()["status"] == "accepted"
        assert worker.post(f"/tickets/{t['id']}/accept").status_code == 409
        r = worker.post(
            f"/tickets/{t['id']}/resolve", files={"photo": ("a.jpg", b"nope", "image/jpeg")}
        )
        assert r.status_code == 422 and "not a readable image" in r.json()["detail"][0]["msg"]
