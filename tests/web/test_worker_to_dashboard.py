"""The whole loop in a real browser: a worker on a phone-sized screen receives a pushed ticket
without reloading, accepts it, takes an after-photo and resolves it; the camera confirms; the
supervisor's dashboard shows the closure and the KPI change. Both languages, no missing key."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import Page, expect
from sqlalchemy import select

from config.site import Camera
from dispatcher.assign import choose_worker
from dispatcher.store.schema import tickets
from tests.conftest import wait_until
from tests.web.conftest import (
    DESK,
    PHONE,
    SIMULATED,
    ContextFactory,
    Screens,
    Stack,
    after_photo,
    log_in,
    missing_keys,
)


def camera_with_a_worker(stack: Stack) -> tuple[Camera, str, str]:
    """A simulated camera whose grid cell has someone on duty now; its worker and the
    supervisor of its street (the same choice the dispatcher makes)."""
    from dispatcher.grids import GridIndex

    index, now = GridIndex(stack.site), datetime.now(UTC)
    for cam in stack.site.cameras:
        if cam.device not in SIMULATED:
            continue
        cell = index.locate(cam.position.lat, cam.position.lon)
        assert cell is not None
        choice = choose_worker(
            site=stack.site,
            grid_id=cell.id,
            at=now,
            open_load={},
            positions={},
            target=(cam.position.lat, cam.position.lon),
        )
        if choice.worker_id:
            sup = next(s.id for s in stack.site.supervisors if cell.street in s.streets)
            return cam, choice.worker_id, sup
    raise AssertionError("nobody is on duty near any simulated camera")


def ticket_status(stack: Stack, ticket_id: int) -> str:
    with stack.dispatcher.engine.connect() as conn:
        return str(
            conn.execute(select(tickets.c.status).where(tickets.c.id == ticket_id)).scalar_one()
        )


def kpi_counts(page: Page) -> tuple[int, int]:
    data = page.eval_on_selector("#kpis", "el => [el.dataset.closed, el.dataset.opened]")
    return int(data[0]), int(data[1])


def refresh_dashboard(page: Page) -> None:
    before = page.eval_on_selector("body", "b => b.dataset.loaded || ''")
    page.click(".seg button[data-period=day]")
    page.wait_for_function(
        f"() => document.body.dataset.loaded && document.body.dataset.loaded !== '{before}'"
    )


def test_pushed_ticket_to_closure_on_the_dashboard(
    new_context: ContextFactory, stack: Stack, tmp_path: Path
) -> None:
    cam, worker, supervisor = camera_with_a_worker(stack)
    shots = Screens("flow")

    desk = new_context(**DESK)
    dash = shots.watch(desk.new_page())
    log_in(dash, "/dashboard/", supervisor, stack.password(supervisor))
    dash.wait_for_selector("body[data-loaded]")
    closed_before, opened_before = kpi_counts(dash)

    phone = new_context(
        **PHONE,
        permissions=["geolocation"],
        geolocation={"latitude": cam.position.lat, "longitude": cam.position.lon},
    )
    app = shots.watch(phone.new_page())
    app.goto("/app/")
    app.wait_for_selector("body[data-ready='1']")
    shots.shot(app, "worker-1-login")
    log_in(app, "/app/", worker, stack.password(worker))
    expect(app.locator("#net")).to_have_class("net live")
    expect(app.locator("#empty")).to_be_visible()
    shots.shot(app, "worker-2-empty")
    app.evaluate("window.__notReloaded = true")

    stack.devices[cam.device].raise_problem(cam, "garbage")
    card = app.locator("#tickets li.ticket").first
    expect(card).to_be_visible()
    assert app.evaluate("window.__notReloaded") is True, "the list must update without a reload"
    expect(app.locator("#badge")).to_have_text("1")
    expect(app.locator("#toast")).to_be_visible()
    shots.shot(app, "worker-3-pushed")
    ticket_id = int(card.get_attribute("data-id") or 0)

    card.click()
    expect(app.locator("#act-accept")).to_be_visible()
    app.wait_for_function("() => document.querySelector('#d-snapshot').naturalWidth > 0")
    assert app.locator("#d-map .marker.ticket").count() == 1
    assert (app.get_attribute("#d-maplink", "href") or "").startswith("geo:")
    expect(app.locator("#d-sla")).to_contain_text("剩余")
    shots.shot(app, "worker-4-detail")

    app.click("#act-accept")
    expect(app.locator("#act-arrived")).to_be_visible()
    wait_until(lambda: ticket_status(stack, ticket_id) == "accepted")
    app.click("#act-arrived")
    expect(app.locator("#act-arrived")).to_be_hidden()
    app.click("#act-resolve")
    photo = tmp_path / "after.jpg"
    photo.write_bytes(after_photo())
    app.set_input_files("#photo", str(photo))
    expect(app.locator("#photo-preview")).to_be_visible()
    app.fill("textarea[name=note]", "已清理，垃圾已运走")
    shots.shot(app, "worker-5-resolve")
    app.click("#resolve-submit")
    expect(app.locator("#view-list")).to_be_visible()
    wait_until(lambda: ticket_status(stack, ticket_id) == "closed", timeout_s=20)
    app.click(".tab[data-tab=done]")
    expect(app.locator(f"#tickets li[data-id='{ticket_id}'] .status")).to_have_text("已结案")
    shots.shot(app, "worker-6-done")

    deadline = time.monotonic() + 20
    while kpi_counts(dash)[0] <= closed_before and time.monotonic() < deadline:
        refresh_dashboard(dash)
    closed_after, opened_after = kpi_counts(dash)
    assert closed_after == closed_before + 1 and opened_after == opened_before + 1
    expect(dash.locator(f"#tickets tbody tr[data-id='{ticket_id}'] .status")).to_have_text("已结案")
    expect(dash.locator(f"#workers tr[data-worker='{worker}'] .closed-today")).to_have_text("1")
    shots.shot(dash, "dashboard-1", full_page=True)
    dash.click(f"#tickets tbody tr[data-id='{ticket_id}']")
    expect(dash.locator("#detail")).to_be_visible()
    expect(dash.locator("#dd-audit")).to_contain_text("复核通过并结案")
    dash.wait_for_function(
        "() => [...document.querySelectorAll('#dd-images img')].every(i => i.naturalWidth > 0)"
    )
    assert dash.locator("#dd-images img").count() >= 2  # camera snapshot and after-photo
    shots.shot(dash, "dashboard-2-ticket")

    assert missing_keys(app) == [] and missing_keys(dash) == []
    dash.click("#detail .detail-close button")
    dash.click("#lang")
    expect(dash.locator("#kpi-closure h3")).to_have_text("Closure rate")
    dash.wait_for_selector("body[data-loaded]")
    shots.shot(dash, "dashboard-3-en", full_page=True)
    app.click("#lang")
    expect(app.locator("#title")).to_have_text("Grid worker tickets")
    app.locator(f"#tickets li[data-id='{ticket_id}']").click()
    expect(app.locator("#d-info")).to_have_text("Closed")
    shots.shot(app, "worker-7-en")
    assert missing_keys(app) == [] and missing_keys(dash) == [], "untranslated keys"
    assert shots.errors == []
