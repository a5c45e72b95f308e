"""The supervisor's dashboard in a real browser over a small busy morning: KPI cards, trend
charts, the grid map coloured by backlog (click to filter), workers, devices, ticket search,
the detail view with evidence and audit trail, a reassignment and the CSV export."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.conftest import login, wait_until
from tests.web.conftest import DESK, ContextFactory, Screens, Stack, log_in, missing_keys

COLOURS = {0: "#cdeccf", 1: "#fff1b8", 2: "#fff1b8", 3: "#ffc078", 4: "#ffc078", 5: "#ffc078"}


def busy_morning(stack: Stack) -> list[int]:
    """Problems in front of the simulated cameras of street s1 (g1, g2); workers act on some
    through the API. Returns the new ticket ids."""
    admin = login(stack.url, "admin", stack.password("admin"))
    before = {t["id"] for t in admin.get("/tickets", params={"limit": 500}).json()["items"]}
    # distinct (camera, kind) pairs: two of a kind in front of one camera would merge
    problems = [
        ("cam-01", "garbage"),
        ("cam-02", "manhole_broken"),
        ("cam-03", "garbage"),
        ("cam-04", "manhole_missing"),
        ("cam-01", "manhole_broken"),
    ]
    for cam_id, kind in problems:
        cam = next(c for c in stack.site.cameras if c.id == cam_id)
        stack.devices[cam.device].raise_problem(cam, kind)

    def new_tickets() -> list[dict[str, Any]] | None:
        items = admin.get("/tickets", params={"limit": 500}).json()["items"]
        fresh = [t for t in items if t["id"] not in before]
        return fresh if len(fresh) == len(problems) else None

    made = wait_until(new_tickets, timeout_s=20)
    assert isinstance(made, list)
    workers: dict[str, httpx.Client] = {}
    for n, t in enumerate(sorted(made, key=lambda t: t["id"])):
        w = t["worker_id"]
        if not w:
            continue
        client = workers.setdefault(w, login(stack.url, w, stack.password(w)))
        if n in (0, 1):
            client.post(f"/tickets/{t['id']}/accept").raise_for_status()
        if n == 1:
            client.post(
                f"/tickets/{t['id']}/resolve",
                data={"note": "cleaned"},
                files={"photo": ("a.jpg", _jpeg(), "image/jpeg")},
            ).raise_for_status()
        if n == 2:
            client.post(f"/tickets/{t['id']}/reject", json={"reason": "shadow"}).raise_for_status()
    return [t["id"] for t in made]


def _jpeg() -> bytes:
    from tests.web.conftest import after_photo

    return after_photo()


def test_dashboard_answers_at_a_glance(new_context: ContextFactory, stack: Stack) -> None:
    made = busy_morning(stack)
    shots = Screens("dashboard")
    dash = shots.watch(new_context(**DESK).new_page())
    log_in(dash, "/dashboard/", "sup-s1", stack.password("sup-s1"))
    dash.wait_for_selector("body[data-loaded]")
    sup = login(stack.url, "sup-s1", stack.password("sup-s1"))

    kpi = sup.get("/metrics/kpis").json()
    expect(dash.locator("#kpi-backlog b")).to_have_text(str(kpi["backlog"]))
    assert kpi["opened"] >= len(made) and kpi["discovered_by"]["camera"] >= len(made)
    expect(dash.locator("#kpi-sources .source-row[data-source=camera] b")).to_have_text(
        str(kpi["discovered_by"]["camera"])
    )
    assert dash.locator("#chart-grid .uplot").count() == 1
    assert dash.locator("#chart-cat .uplot").count() == 1
    for period, buckets in (("week", 7), ("month", 30), ("day", 24)):
        before = dash.eval_on_selector("body", "b => b.dataset.loaded")
        dash.click(f".seg button[data-period={period}]")
        dash.wait_for_function(f"() => document.body.dataset.loaded !== '{before}'")
        series = sup.get("/metrics/series", params={"period": period}).json()
        assert buckets <= len(series["times"]) <= buckets + 1, period
        assert dash.locator("#chart-grid .uplot").count() == 1

    for g in sup.get("/grids").json():
        want = COLOURS.get(g["backlog"], "#ff8a80")
        assert dash.get_attribute(f"#map polygon[data-grid={g['id']}]", "fill") == want
    assert dash.locator("#map polygon").count() == 2  # only this supervisor's street
    assert dash.locator("#devices tbody tr").count() == 4
    expect(dash.locator("#devices tr[data-device=node-02]")).to_contain_text("离线")
    shots.shot(dash, "overview", full_page=True)

    dash.click("#map polygon[data-grid=g2]")
    dash.wait_for_function(
        "() => [...document.querySelectorAll('#tickets tbody tr')].length > 0 && "
        "[...document.querySelectorAll('#tickets tbody tr td:nth-child(4)')]"
        ".every(td => td.textContent === '和平里东二网格')"
    )

    with dash.expect_download() as download:
        dash.click("#export")
    text = download.value.path().read_text("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and {r["grid_id"] for r in rows} == {"g2"}

    target = sorted(made)[-1]
    dash.fill("#filters input[name=q]", str(target))
    dash.select_option("#filters select[name=grid]", "")
    dash.click("#filters button[type=submit]")
    expect(dash.locator("#tickets tbody tr")).to_have_count(1)
    dash.click(f"#tickets tbody tr[data-id='{target}']")
    expect(dash.locator("#detail")).to_be_visible()
    expect(dash.locator("#dd-audit")).to_contain_text("派单")
    dash.wait_for_function(
        "() => [...document.querySelectorAll('#dd-images img')].every(i => i.naturalWidth > 0)"
    )
    shots.shot(dash, "ticket")

    current = sup.get(f"/tickets/{target}").json()
    if current["status"] in ("open", "assigned", "accepted"):
        other = next(
            w.id
            for w in stack.site.workers
            if w.id != current["worker_id"] and w.grid in ("g1", "g2")
        )
        dash.select_option("#dd-actions select", other)
        dash.fill("#dd-reason", "人手调整")
        dash.click("#dd-actions button.secondary")
        wait_until(lambda: sup.get(f"/tickets/{target}").json()["worker_id"] == other)
        expect(dash.locator("#dd-audit")).to_contain_text("改派")
    assert missing_keys(dash) == []
    dash.click("#detail .detail-close button")
    dash.click("#lang")
    expect(dash.locator("#kpi-backlog h3")).to_have_text("Backlog")
    shots.shot(dash, "overview-en", full_page=True)
    assert missing_keys(dash) == []
    assert shots.errors == []
