"""What workers and supervisors do through the API, against the real dispatcher: the ticket
lifecycle, evidence, false alarms kept as hard negatives, reassignment, review, CSV export,
positions and the live stream."""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert

from dispatcher.store.schema import audit
from tests.conftest import wait_until
from tests.dispatcher.api.conftest import Env, jpeg


def test_worker_accepts_arrives_and_resolves_with_a_photo(env: Env) -> None:
    t = env.ticket("g1")
    w01 = env.client("w01")
    assert w01.post(f"/tickets/{t['id']}/accept").json()["status"] == "accepted"
    again = w01.post(f"/tickets/{t['id']}/accept")
    assert again.status_code == 409
    assert again.json()["detail"] == f"cannot accept ticket {t['id']}: it is accepted"
    assert w01.post(f"/tickets/{t['id']}/arrived").json()["arrived_at"] is not None
    r = w01.post(
        f"/tickets/{t['id']}/resolve",
        data={"note": "已清理"},
        files={"photo": ("after.jpg", jpeg(800, 600), "image/jpeg")},
    )
    assert r.status_code == 200 and r.json()["status"] in ("resolved", "closed")
    detail = w01.get(f"/tickets/{t['id']}").json()
    kinds = [e["kind"] for e in detail["evidence"]]
    assert kinds == ["snapshot", "after_photo"]
    assert [a["transition"] for a in detail["audit"]][:5] == [
        "opened",
        "assigned",
        "accepted",
        "arrived",
        "resolved",
    ]
    assert detail["audit"][4]["reason"] == "已清理"
    photo = w01.get(detail["evidence"][1]["url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content[:2] == b"\xff\xd8"
    assert env.client("sup-s1").get(detail["evidence"][1]["url"]).status_code == 200


def test_decline_hands_the_ticket_to_someone_else(env: Env) -> None:
    t = env.ticket("g2")
    assert t["worker_id"] == "w02"
    w02 = env.client("w02")
    r = w02.post(f"/tickets/{t['id']}/decline", json={"reason": "正在处理其他紧急工单"})
    assert r.status_code == 200
    moved = env.client("admin").get(f"/tickets/{t['id']}").json()
    assert moved["worker_id"] != "w02"
    assert [a["transition"] for a in moved["audit"]][2] == "declined"
    assert w02.get(f"/tickets/{t['id']}").status_code == 404


def test_each_audit_reason_comes_as_code_params_and_english(env: Env) -> None:
    t = env.ticket("g2")
    w02 = env.client("w02")
    assert w02.post(f"/tickets/{t['id']}/decline", json={"reason": "车坏了"}).status_code == 200
    with env.dispatcher.engine.begin() as conn:  # a row written before reasons had codes
        conn.execute(
            insert(audit).values(
                ticket_id=t["id"],
                at=env.clock.now(),
                actor="system",
                transition="escalated",
                from_status="assigned",
                to_status="assigned",
                reason="legacy words",
                pushed=True,
                metric_sent=True,
            )
        )
    trail = env.client("admin").get(f"/tickets/{t['id']}").json()["audit"]
    why = [(a["reason"], a["reason_code"], a["reason_params"]) for a in trail]
    assert why[0] == (None, None, None)
    assert why[1] == ("on duty in g2", "assign.home", {"grid": "g2"})
    assert why[2] == ("车坏了", "note", {"text": "车坏了"})
    text, code, params = why[3]
    assert code in ("assign.home", "assign.neighbour") and text.startswith("declined by w02; ")
    assert params["cause"] == {"code": "assign.declined_by", "params": {"worker": "w02"}}
    assert why[4] == ("legacy words", None, None)


def test_false_alarm_is_rejected_and_kept_as_a_hard_negative(env: Env) -> None:
    t = env.ticket("g4")
    w04 = env.client("w04")
    r = w04.post(f"/tickets/{t['id']}/reject", json={"reason": "阴影误识别"})
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["close_reason"]) == ("rejected", "false_alarm")
    kept = list(
        Path(env.dispatcher.settings.state_dir, "hard_negatives").rglob(f"ticket{t['id']}-*")
    )
    assert any(p.suffix == ".jpg" for p in kept), kept
    assert w04.post(f"/tickets/{t['id']}/reject", json={"reason": "again"}).status_code == 409


def test_a_hard_negative_that_cannot_be_written_does_not_fail_the_rejection(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    root = Path(env.dispatcher.settings.state_dir, "hard_negatives")
    aside = root.with_name("hard_negatives.aside")
    if root.exists():
        root.rename(aside)
    root.write_text("a file where the folder should be")
    try:
        t = env.ticket("g4")
        with caplog.at_level(logging.ERROR, logger="dispatcher.hard_negatives"):
            r = env.client("w04").post(f"/tickets/{t['id']}/reject", json={"reason": "误报"})
        assert r.status_code == 200 and r.json()["status"] == "rejected"
        assert any(
            f"hard negatives of ticket {t['id']} not written" in m for m in caplog.messages
        ), caplog.messages
    finally:
        root.unlink()
        if aside.exists():
            aside.rename(root)


def test_supervisor_reassigns_reviews_and_rejects(env: Env) -> None:
    sup = env.client("sup-s2")
    t = env.ticket("g3")
    r = sup.post(f"/tickets/{t['id']}/reassign", json={"worker_id": "w04", "reason": "w03 病假"})
    assert r.status_code == 200 and r.json()["worker_id"] == "w04"
    assert env.client("w03").get(f"/tickets/{t['id']}").status_code == 404
    w04 = env.client("w04")
    w04.post(f"/tickets/{t['id']}/accept").raise_for_status()
    w04.post(
        f"/tickets/{t['id']}/resolve", files={"photo": ("a.jpg", jpeg(), "image/jpeg")}
    ).raise_for_status()
    status = sup.get(f"/tickets/{t['id']}").json()["status"]
    if status == "resolved":
        r = sup.post(
            f"/tickets/{t['id']}/review", json={"decision": "close", "reason": "现场已核实"}
        )
        assert r.status_code == 200 and r.json()["status"] == "closed"
    r = sup.post(
        f"/tickets/{t['id']}/review", json={"decision": "reopen", "reason": "市民再次投诉"}
    )
    assert r.status_code == 200 and r.json()["status"] == "assigned"
    assert r.json()["reopen_count"] == 1
    r = sup.post(f"/tickets/{t['id']}/reassign", json={"reason": "让系统重新选人"})
    assert r.status_code == 200 and r.json()["worker_id"] != "w04"
    r = sup.post(f"/tickets/{t['id']}/reject", json={"reason": "重复工单"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert sup.post(f"/tickets/{t['id']}/reassign", json={"reason": "x"}).status_code == 409


def test_filters_pagination_and_csv_export(env: Env) -> None:
    made = [env.ticket("g1", "manhole_broken") for _ in range(3)]
    sup = env.client("sup-s1")
    page = sup.get("/tickets", params={"category": "manhole_broken", "limit": 2}).json()
    assert page["total"] >= 3 and len(page["items"]) == 2 and page["limit"] == 2
    rest = sup.get(
        "/tickets", params={"category": "manhole_broken", "limit": 2, "offset": 2}
    ).json()
    seen = {t["id"] for t in page["items"] + rest["items"]}
    assert {t["id"] for t in made} <= seen
    by_status = sup.get(
        "/tickets",
        params=[
            ("status", "assigned"),
            ("status", "accepted"),
            ("grid", "g1"),
            ("source", "camera"),
        ],
    ).json()
    assert all(
        t["status"] in ("assigned", "accepted") and t["grid_id"] == "g1" for t in by_status["items"]
    )
    assert sup.get("/tickets", params={"overdue": True}).json()["total"] == 0
    assert sup.get("/tickets", params={"q": "manhole"}).json()["total"] >= 3
    assert sup.get("/tickets", params={"q": "%_"}).json()["total"] == 0
    r = sup.get("/tickets/export", params={"category": "manhole_broken"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    text = r.content.decode("utf-8")
    assert text.startswith("\ufeffid,category,priority,status")
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert {int(r["id"]) for r in rows} >= {t["id"] for t in made}
    assert all(r["category"] == "manhole_broken" and r["street_id"] == "s1" for r in rows)


def test_csv_export_neutralises_formulas(env: Env) -> None:
    t = env.ticket("g2")
    env.client("sup-s1").post(
        f"/tickets/{t['id']}/reject", json={"reason": '=HYPERLINK("http://x")'}
    ).raise_for_status()
    from dispatcher.api.routes.tickets import _csv_cell

    assert _csv_cell("=1+1") == "'=1+1" and _csv_cell("ok") == "ok" and _csv_cell(3) == 3


def test_site_grids_and_worker_position(env: Env) -> None:
    w01 = env.client("w01")
    site = w01.get("/site").json()
    assert site["name"] == "和平里街道办事处"
    assert {c["id"] for c in site["categories"]} == set(env.site.categories)
    grids = w01.get("/grids").json()
    assert len(grids) == 4 and all(g["backlog"] is None for g in grids)
    assert grids[0]["polygon"][0] == grids[0]["polygon"][-1]
    r = w01.put("/workers/me/position", json={"lat": 39.9566, "lon": 116.417, "accuracy_m": 12})
    assert r.status_code == 200
    me = env.client("sup-s1").get("/workers/w01").json()
    assert (me["lat"], me["lon"]) == (39.9566, 116.417) and me["on_duty"] is True
    backlog = {g["id"]: g["backlog"] for g in env.client("sup-s1").get("/grids").json()}
    assert set(backlog) == {"g1", "g2"} and all(isinstance(n, int) for n in backlog.values())


def test_live_stream_delivers_a_push_to_its_worker_only(env: Env) -> None:
    """A worker connected to /stream receives their new ticket as it is assigned; another
    worker's stream stays quiet (it listens for 4 s, then hangs up)."""
    got: dict[str, list[dict[str, object]]] = {"w01": [], "w02": []}
    ready = {"w01": threading.Event(), "w02": threading.Event()}

    def listen(user: str, quiet_s: float) -> None:
        token = env.client(user).headers["Authorization"]
        try:
            with httpx.stream(
                "GET",
                env.url + "/stream",
                headers={"Authorization": token},
                timeout=httpx.Timeout(10, read=quiet_s),
            ) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                event = ""
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                        if event == "hello":
                            ready[user].set()
                    elif line.startswith("data: ") and event == "ticket":
                        got[user].append(json.loads(line[6:]))
                        return
        except httpx.ReadTimeout:
            return

    threads = [
        threading.Thread(target=listen, args=("w01", 10), daemon=True),
        threading.Thread(target=listen, args=("w02", 4), daemon=True),
    ]
    for th in threads:
        th.start()
    assert ready["w01"].wait(10) and ready["w02"].wait(10)
    t = env.ticket("g1")
    wait_until(lambda: got["w01"], timeout_s=10)
    push = got["w01"][0]
    assert (push["ticket_id"], push["action"], push["worker_id"]) == (
        str(t["id"]),
        "assigned",
        "w01",
    )
    for th in threads:
        th.join(10)
    assert got["w02"] == []
