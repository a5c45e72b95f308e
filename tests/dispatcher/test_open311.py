"""Open311 GeoReport v2 round trip over HTTP: a citizen's report joins the camera's incident,
and its status follows the ticket to closure."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from broker import topics
from broker.client import BusClient
from config.clock import ManualClock
from config.site import Site
from dispatcher.api.app import create_app
from dispatcher.lifecycle import Transition
from dispatcher.service import Dispatcher
from dispatcher.store.schema import citizen_reports, tickets
from simulators.workers import after_photo
from tests.conftest import ApiServer, wait_until
from tests.dispatcher.factories import camera_event

MORNING = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CAM1 = (39.9562, 116.4165)


def ticket_rows(d: Dispatcher) -> list[dict[str, object]]:
    with d.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(tickets).order_by(tickets.c.id)).mappings()]


def test_open311_round_trip(
    site: Site, make_dispatcher: Callable[..., Dispatcher], device_bus: Callable[..., BusClient]
) -> None:
    clock = ManualClock(MORNING)
    d = make_dispatcher(clock=clock)
    with ApiServer(create_app(d)) as api:
        web = httpx.Client(base_url=api.url + "/open311/v2", timeout=15)
        services = {s["service_code"]: s for s in web.get("/services.json").json()}
        assert set(services) == {"garbage", "manhole_missing", "manhole_broken", "waterlogging"}
        assert services["garbage"]["type"] == "realtime"

        r = web.post(
            "/requests.json",
            data={
                "service_code": "garbage",
                "lat": str(CAM1[0]),
                "long": str(CAM1[1]),
                "description": "路口垃圾成堆 / rubbish piling up",
                "email": "li@example.cn",
                "address_string": "和平里东街 1 号",
            },
        )
        assert r.status_code == 201, r.text
        [created] = r.json()
        rid = created["service_request_id"]
        [t] = ticket_rows(d)
        assert (t["source"], t["status"], t["worker_id"]) == ("citizen", "assigned", "w01")

        # The camera sees the same pile a minute later: no second ticket.
        clock.advance(minutes=1)
        edge = device_bus("edge-01")
        edge.start(wait_s=10)
        edge.publish(topics.event("edge-01"), camera_event(site, "cam-01", clock.now()))
        wait_until(lambda: d.intake.stats.received >= 1)
        wait_until(lambda: d.intake.backlog() == 0 and len(ticket_rows(d)) == 1)
        # A second citizen reports it too: a second request on the same ticket.
        r2 = web.post(
            "/requests.json",
            json={"service_code": "garbage", "lat": CAM1[0] + 0.0001, "long": CAM1[1]},
        )
        assert r2.status_code == 201 and len(ticket_rows(d)) == 1
        with d.engine.connect() as conn:
            incidents = set(conn.execute(select(citizen_reports.c.incident_id)).scalars())
        assert incidents == {t["incident_id"]}

        [req] = web.get(f"/requests/{rid}.json").json()
        assert req["status"] == "open" and "assigned" in req["status_notes"]
        assert req["service_code"] == "garbage" and req["agency_responsible"] == site.office.name
        assert datetime.fromisoformat(req["expected_datetime"]) == MORNING + timedelta(minutes=240)
        assert datetime.fromisoformat(req["requested_datetime"]) == MORNING
        assert "email" not in req and "li@example.cn" not in r.text + str(req)
        assert req["lat"] == CAM1[0] and req["address"] == "和平里东街 1 号"

        tid = int(t["id"])  # type: ignore[call-overload]
        d.act(tid, Transition.ACCEPTED, worker_id="w01", actor="worker:w01")
        d.resolve(tid, worker_id="w01", photo=after_photo(tid, 1), note="cleaned")
        clock.advance(seconds=121)  # nobody answers the verify: garbage closes on the photo
        d.timers.run_due()
        closed = web.get("/requests.json", params={"status": "closed"}).json()
        assert {c["service_request_id"] for c in closed} == {
            rid,
            r2.json()[0]["service_request_id"],
        }
        assert closed[0]["status_notes"].endswith("fixed and verified")
        assert web.get("/requests.json", params={"status": "open"}).json() == []
        assert len(web.get("/requests.json", params={"service_code": "garbage"}).json()) == 2
        assert (
            web.get(
                "/requests.json",
                params={"start_date": (MORNING + timedelta(minutes=2)).isoformat()},
            ).json()
            == []
        )

        def error(resp: httpx.Response) -> tuple[int, str]:
            [e] = resp.json()
            assert e["code"] == resp.status_code
            return resp.status_code, str(e["description"])

        code, why = error(
            web.post("/requests.json", data={"service_code": "ufo", "lat": "39.9", "long": "116.4"})
        )
        assert code == 404 and "ufo" in why
        code, why = error(web.post("/requests.json", data={"service_code": "garbage"}))
        assert code == 400 and "lat" in why
        code, why = error(
            web.post(
                "/requests.json", data={"service_code": "garbage", "lat": "31.2", "long": "121.5"}
            )
        )
        assert code == 400 and "outside the area" in why
        assert error(web.get("/requests/999.json"))[0] == 404
        assert error(web.get("/requests.json", params={"start_date": "yesterday"}))[0] == 400
        assert len(ticket_rows(d)) == 1


def test_open311_api_key_when_configured(make_dispatcher: Callable[..., Dispatcher]) -> None:
    d = make_dispatcher(open311_api_key="k-123")
    with ApiServer(create_app(d)) as api:
        web = httpx.Client(base_url=api.url + "/open311/v2", timeout=15)
        body = {"service_code": "garbage", "lat": str(CAM1[0]), "long": str(CAM1[1])}
        assert web.post("/requests.json", data=body).status_code == 403
        assert web.post("/requests.json", data=body | {"api_key": "wrong"}).status_code == 403
        assert web.post("/requests.json", data=body | {"api_key": "k-123"}).status_code == 201
