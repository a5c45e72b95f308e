"""The authorization matrix over real HTTP: a worker sees and changes only their own tickets,
a supervisor only their street's, roles keep to their routes, and every denial is logged."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.dispatcher.api.conftest import Env, jpeg


@pytest.fixture(scope="module")
def four(env: Env) -> dict[str, dict[str, Any]]:
    """One ticket per grid cell: g1→w01, g2→w02 (street s1), g3→w03, g4→w04 (street s2)."""
    made = {g: env.ticket(g) for g in ("g1", "g2", "g3", "g4")}
    assert {g: t["worker_id"] for g, t in made.items()} == {
        "g1": "w01",
        "g2": "w02",
        "g3": "w03",
        "g4": "w04",
    }
    return made


def test_worker_sees_only_their_own_tickets(env: Env, four: dict[str, dict[str, Any]]) -> None:
    w01 = env.client("w01")
    listed = w01.get("/tickets", params={"limit": 500}).json()
    assert listed["items"] and {t["worker_id"] for t in listed["items"]} == {"w01"}
    assert four["g1"]["id"] in {t["id"] for t in listed["items"]}
    assert w01.get(f"/tickets/{four['g1']['id']}").status_code == 200
    # filters cannot widen the view
    assert w01.get("/tickets", params={"worker": "w02"}).json()["total"] == 0
    assert w01.get("/tickets", params={"q": str(four["g2"]["id"])}).json()["total"] == 0


def test_worker_cannot_read_or_act_on_another_workers_ticket(
    env: Env, four: dict[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    w01 = env.client("w01")
    other = four["g2"]["id"]
    snapshot = env.evidence_of(other)[0]
    with caplog.at_level(logging.WARNING):
        answers = {
            "read": w01.get(f"/tickets/{other}").status_code,
            "image": w01.get(f"/evidence/{snapshot}").status_code,
            "incident": w01.get(f"/incidents/{four['g2']['incident_id']}").status_code,
            "accept": w01.post(f"/tickets/{other}/accept").status_code,
            "arrived": w01.post(f"/tickets/{other}/arrived").status_code,
            "decline": w01.post(f"/tickets/{other}/decline", json={"reason": "x"}).status_code,
            "reject": w01.post(f"/tickets/{other}/reject", json={"reason": "x"}).status_code,
            "resolve": w01.post(
                f"/tickets/{other}/resolve", files={"photo": ("a.jpg", jpeg(), "image/jpeg")}
            ).status_code,
        }
    assert answers == dict.fromkeys(answers, 404)
    assert caplog.text.count(f"denied: worker:w01 asked for ticket {other}") >= 6
    assert f"denied: worker:w01 asked for evidence {snapshot}" in caplog.text
    owner = env.client("w02").get(f"/tickets/{other}").json()
    assert owner["status"] == "assigned" and owner["audit"][-1]["transition"] == "assigned"


def test_supervisor_sees_only_their_street(
    env: Env, four: dict[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    sup = env.client("sup-s1")
    listed = sup.get("/tickets", params={"limit": 500}).json()["items"]
    assert {t["street_id"] for t in listed} == {"s1"}
    assert {four["g1"]["id"], four["g2"]["id"]} <= {t["id"] for t in listed}
    assert sup.get("/tickets", params={"street": "s2"}).json()["total"] == 0
    y = four["g3"]
    with caplog.at_level(logging.WARNING):
        assert sup.get(f"/tickets/{y['id']}").status_code == 404
        assert sup.get(f"/evidence/{env.evidence_of(y['id'])[0]}").status_code == 404
        assert sup.get(f"/incidents/{y['incident_id']}").status_code == 404
        assert (
            sup.post(f"/tickets/{y['id']}/reassign", json={"reason": "mine now"}).status_code == 404
        )
        assert sup.post(f"/tickets/{y['id']}/reject", json={"reason": "x"}).status_code == 404
        assert sup.get("/workers/w03").status_code == 404
        assert sup.get("/devices/edge-04").status_code == 404
        assert sup.get("/grids/g3").status_code == 404
        assert sup.get("/metrics/kpis", params={"street": "s2"}).status_code == 404
    assert "denied: supervisor:sup-s1 asked for ticket" in caplog.text
    assert "denied: supervisor:sup-s1 asked for metrics of street s2" in caplog.text
    assert {g["id"] for g in sup.get("/grids").json()} == {"g1", "g2"}
    assert {w["id"] for w in sup.get("/workers").json()["items"]} == {"w01", "w02", "w05"}
    assert {d["id"] for d in sup.get("/devices").json()["items"]} == {
        "edge-01",
        "edge-02",
        "node-01",
        "node-02",
    }
    export = sup.get("/tickets/export").text
    assert f"\n{four['g1']['id']}," in export and f"\n{y['id']}," not in export
    # a supervisor cannot hand a ticket to a worker of another street
    r = sup.post(
        f"/tickets/{four['g1']['id']}/reassign", json={"worker_id": "w03", "reason": "help"}
    )
    assert (
        r.status_code == 422 and r.json()["detail"][0]["msg"] == "no worker 'w03' in your streets"
    )


def test_roles_keep_to_their_routes(
    env: Env, four: dict[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    w01, sup = env.client("w01"), env.client("sup-s1")
    own = four["g1"]["id"]
    with caplog.at_level(logging.WARNING):
        for path in (
            "/workers",
            "/devices",
            "/metrics/kpis",
            "/metrics/series",
            "/metrics/grids",
            "/tickets/export",
        ):
            assert w01.get(path).status_code == 403, path
        assert w01.post(f"/tickets/{own}/reassign", json={"reason": "x"}).status_code == 403
        assert (
            w01.post(
                f"/tickets/{own}/review", json={"decision": "close", "reason": "x"}
            ).status_code
            == 403
        )
        assert sup.post(f"/tickets/{own}/accept").status_code == 403
        photo = {"photo": ("a.jpg", jpeg(), "image/jpeg")}
        assert sup.post(f"/tickets/{own}/resolve", files=photo).status_code == 403
        assert sup.put("/workers/me/position", json={"lat": 39.95, "lon": 116.4}).status_code == 403
    assert "denied: worker:w01 may not GET /workers" in caplog.text
    assert "denied: supervisor:sup-s1 tried to accepted ticket" not in caplog.text
    assert "denied: supervisor:sup-s1 tried to accept" in caplog.text


def test_anonymous_requests_are_refused(env: Env, four: dict[str, dict[str, Any]]) -> None:
    anon = env.anonymous()
    tid = four["g1"]["id"]
    for method, path in (
        ("GET", "/tickets"),
        ("GET", f"/tickets/{tid}"),
        ("POST", f"/tickets/{tid}/accept"),
        ("GET", "/workers"),
        ("GET", "/metrics/kpis"),
        ("GET", "/grids"),
        ("GET", "/site"),
        ("GET", "/stream"),
        ("GET", f"/evidence/{env.evidence_of(tid)[0]}"),
    ):
        r = anon.request(method, path)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"] == "Bearer"


def test_admin_sees_everything(env: Env, four: dict[str, dict[str, Any]]) -> None:
    admin = env.client("admin")
    ids = {t["id"] for t in admin.get("/tickets", params={"limit": 500}).json()["items"]}
    assert {t["id"] for t in four.values()} <= ids
    assert len(admin.get("/grids").json()) == 4
    assert len(admin.get("/devices").json()["items"]) == len(env.site.devices)
    assert admin.get(f"/evidence/{env.evidence_of(four['g4']['id'])[0]}").status_code == 200
