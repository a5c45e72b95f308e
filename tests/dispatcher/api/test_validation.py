"""Bad input gets a clear 4xx that names what is wrong, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.evidence import MAX_IMAGE_BYTES
from tests.dispatcher.api.conftest import Env


@pytest.fixture(scope="module")
def mine(env: Env) -> dict[str, Any]:
    return env.ticket("g1")


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/tickets/0", {}, "ticket_id"),
        ("/tickets/-3", {}, "ticket_id"),
        ("/tickets/99999999999999999999", {}, "ticket_id"),
        ("/tickets/abc", {}, "ticket_id"),
        ("/tickets", {"status": "lost"}, "status"),
        ("/tickets", {"limit": 0}, "limit"),
        ("/tickets", {"limit": 501}, "limit"),
        ("/tickets", {"offset": -1}, "offset"),
        ("/tickets", {"opened_from": "2026-01-01T00:00:00"}, "opened_from"),
        ("/tickets", {"opened_from": "1900-01-01T00:00:00Z"}, "opened_from"),
        ("/tickets", {"opened_to": "not a date"}, "opened_to"),
        ("/tickets", {"q": "x" * 65}, "q"),
        ("/tickets", {"grid": "G 1"}, "grid"),
        ("/tickets", {"sort": "random"}, "sort"),
        ("/tickets", {"overdue": "maybe"}, "overdue"),
        ("/incidents/0", {}, "incident_id"),
        ("/evidence/abc", {}, "evidence_id"),
        ("/grids/" + "g" * 65, {}, "grid_id"),
    ],
)
def test_bad_queries_name_the_field(
    env: Env, path: str, params: dict[str, Any], field: str
) -> None:
    r = env.client("admin").get(path, params=params)
    assert r.status_code == 422, r.text
    assert field in {str(part) for e in r.json()["detail"] for part in e["loc"]}


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/metrics/kpis", {"period": "year"}, "period"),
        ("/metrics/series", {"transition": "exploded"}, "transition"),
        ("/metrics/series", {"group_by": "worker"}, "group_by"),
        ("/workers", {"on_duty": "perhaps"}, "on_duty"),
        ("/devices", {"kind": "toaster"}, "kind"),
    ],
)
def test_bad_supervisor_queries_name_the_field(
    env: Env, path: str, params: dict[str, Any], field: str
) -> None:
    r = env.client("sup-s1").get(path, params=params)
    assert r.status_code == 422, r.text
    assert field in {str(part) for e in r.json()["detail"] for part in e["loc"]}


def test_bad_bodies(env: Env, mine: dict[str, Any]) -> None:
    w01 = env.client("w01")
    tid = mine["id"]
    cases: list[tuple[str, dict[str, Any], str]] = [
        (f"/tickets/{tid}/decline", {"json": {}}, "reason"),
        (f"/tickets/{tid}/decline", {"json": {"reason": ""}}, "reason"),
        (f"/tickets/{tid}/decline", {"json": {"reason": "x" * 501}}, "reason"),
        (f"/tickets/{tid}/decline", {"json": {"reason": "ok", "extra": 1}}, "extra"),
        (
            f"/tickets/{tid}/reject",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            "body",
        ),
        (
            f"/tickets/{tid}/resolve",
            {"files": {"photo": ("a.jpg", b"not an image", "image/jpeg")}},
            "photo",
        ),
        (f"/tickets/{tid}/resolve", {"data": {"note": "n" * 501}}, "note"),
    ]
    for path, kwargs, field in cases:
        r = w01.post(path, **kwargs)
        assert r.status_code == 422, (path, r.text)
        assert field in {str(p) for e in r.json()["detail"] for p in e["loc"]}, r.text
    r = w01.put("/workers/me/position", json={"lat": 91, "lon": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "lat"]
    r = env.anonymous().post("/auth/login", json={"username": "u" * 65, "password": "p"})
    assert r.status_code == 422
    r = env.client("sup-s1").post(
        f"/tickets/{tid}/review", json={"decision": "maybe", "reason": "x"}
    )
    assert r.status_code == 422
    r = env.client("sup-s1").post(
        f"/tickets/{tid}/reassign", json={"worker_id": "W 1", "reason": "x"}
    )
    assert r.status_code == 422


def test_not_an_image_says_why(env: Env, mine: dict[str, Any]) -> None:
    r = env.client("w01").post(
        f"/tickets/{mine['id']}/resolve",
        files={"photo": ("a.gif", b"GIF89a" + b"\0" * 40, "image/gif")},
    )
    assert r.status_code == 422
    msg = r.json()["detail"][0]["msg"]
    assert "not a readable image: not JPEG, PNG or WEBP" in msg and "GIF89a" in msg, msg


def test_a_resolve_without_an_after_photo_is_refused(env: Env, mine: dict[str, Any]) -> None:
    w01 = env.client("w01")
    path = f"/tickets/{mine['id']}/resolve"
    for r in (
        w01.post(path, data={"note": "fixed"}),
        w01.post(path, files={"photo": ("after.jpg", b"", "image/jpeg")}),
    ):
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "photo"], r.text
    assert w01.get(f"/tickets/{mine['id']}").json()["status"] == "assigned"


def test_oversized_photo_is_413(env: Env, mine: dict[str, Any]) -> None:
    big = b"\xff\xd8" + b"\0" * (MAX_IMAGE_BYTES + 10)
    r = env.client("w01").post(
        f"/tickets/{mine['id']}/resolve", files={"photo": ("big.jpg", big, "image/jpeg")}
    )
    assert r.status_code == 413 and "photo larger than" in r.json()["detail"]
    assert env.client("w01").get(f"/tickets/{mine['id']}").json()["status"] == "assigned"


def test_unknown_things_are_404_not_500(env: Env) -> None:
    admin = env.client("admin")
    for path in (
        "/tickets/2147483647",
        "/incidents/2147483647",
        "/evidence/2147483647",
        "/workers/nobody",
        "/devices/nothing",
        "/grids/nowhere",
    ):
        assert admin.get(path).status_code == 404, path
    assert admin.post("/tickets/2147483647/reject", json={"reason": "x"}).status_code == 404
    assert admin.get("/metrics/kpis", params={"street": "s9"}).status_code == 404
