"""The supervisor is told at once, in a real browser against the real dispatcher and broker: a
missing manhole cover seen by a camera (published as the edge box would) puts an alert on the
dashboard of that street's supervisor without a reload, and not on the other street's; the KPI
cards and the "needs attention" list follow the events, and the list filters by reason."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from dispatcher import tickets as ticket_ops
from tests.conftest import login
from tests.dispatcher.factories import new_ticket
from tests.web.conftest import DESK, ContextFactory, Screens, Stack, log_in, missing_keys


def open_dashboard(new_context: ContextFactory, stack: Stack, shots: Screens, user: str) -> Page:
    page = shots.watch(new_context(**DESK).new_page())
    log_in(page, "/dashboard/", user, stack.password(user))
    page.wait_for_selector("body[data-loaded]")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    # set on this page only: a reload would lose it
    page.evaluate("window.gwSamePage = true")
    return page


def manhole_missing(stack: Stack, camera_id: str) -> None:
    cam = next(c for c in stack.site.cameras if c.id == camera_id)
    stack.devices[cam.device].raise_problem(cam, "manhole_missing")


def test_a_missing_manhole_cover_alerts_its_supervisor_live(
    new_context: ContextFactory, stack: Stack
) -> None:
    shots = Screens("dashboard-live")
    s1 = open_dashboard(new_context, stack, shots, "sup-s1")
    s2 = open_dashboard(new_context, stack, shots, "sup-s2")
    sup1 = login(stack.url, "sup-s1", stack.password("sup-s1"))
    admin = login(stack.url, "admin", stack.password("admin"))
    backlog_before = s1.locator("#kpi-backlog b").inner_text()
    expect(s1.locator("#alerts-count")).to_be_hidden()

    manhole_missing(stack, "cam-02")  # street s1
    toast = s1.locator(".alert-toast[data-reason=safety]")
    expect(toast).to_have_count(1, timeout=20_000)
    ticket_id = toast.get_attribute("data-ticket")
    assert ticket_id is not None
    ticket = admin.get(f"/tickets/{ticket_id}").json()
    assert (ticket["category"], ticket["street_id"]) == ("manhole_missing", "s1")
    expect(toast).to_contain_text("安全隐患")
    expect(toast).to_contain_text(f"#{ticket_id}")
    expect(toast).to_contain_text("井盖")
    expect(s1.locator("#alerts-count")).to_have_text("1")
    backlog = str(sup1.get("/metrics/kpis").json()["backlog"])
    assert backlog != backlog_before
    expect(s1.locator("#kpi-backlog b")).to_have_text(backlog)
    assert s1.evaluate("window.gwSamePage") is True
    shots.shot(s1, "1-alert")

    # the other street's supervisor was told nothing; their own street's hazard reaches them
    expect(s2.locator(".alert-toast")).to_have_count(0)
    expect(s2.locator("#alerts-count")).to_be_hidden()
    manhole_missing(stack, "cam-05")  # street s2
    expect(s2.locator(".alert-toast[data-reason=safety]")).to_have_count(1, timeout=20_000)
    other = s2.locator(".alert-toast").get_attribute("data-ticket")
    assert admin.get(f"/tickets/{other}").json()["street_id"] == "s2"
    assert s2.evaluate("window.gwSamePage") is True
    s1.wait_for_timeout(1000)
    expect(s1.locator(".alert-toast")).to_have_count(1)
    expect(s1.locator("#alerts-count")).to_have_text("1")

    # nobody can take a new ticket in s1 (as when every worker declined): it needs attention
    d, site = stack.dispatcher, stack.site
    centre = next(g for g in site.grids if g.id == "g2").polygon.representative_point()
    with d.engine.begin() as conn:
        orphan = new_ticket(
            conn, site, kind="garbage", lat=centre.y, lon=centre.x, at=d.clock.now()
        )
        ticket_ops.assign(
            conn,
            site,
            orphan,
            at=d.clock.now(),
            actor="system",
            exclude=frozenset(w.id for w in site.workers),
        )
    d.committed()
    expect(s1.locator(".alert-toast[data-reason=no_worker]")).to_have_count(1, timeout=20_000)
    row = s1.locator(f"#attention-table tbody tr[data-id='{orphan}']")
    expect(row.locator(".reason[data-reason=no_worker]")).to_have_text("无人接单")
    expect(row.locator(".reason[data-reason=escalated]")).to_be_visible()
    expect(s1.locator("#alerts-count")).to_have_text("2")
    expect(s2.locator(f"#attention-table tbody tr[data-id='{orphan}']")).to_have_count(0)
    shots.shot(s1, "2-attention")

    # filters: the ticket stays while either of its reasons is chosen
    s1.click("#attention-filters [data-reason=no_worker]")
    expect(s1.locator("#attention-filters [data-reason=no_worker]")).to_have_attribute(
        "aria-pressed", "false"
    )
    expect(row).to_have_count(1)
    s1.click("#attention-filters [data-reason=escalated]")
    expect(row).to_have_count(0)
    s1.click("#attention-filters [data-reason=no_worker]")
    expect(row).to_have_count(1)
    s1.click("#attention-filters [data-reason=escalated]")

    # the alert list: newest first, and each opens its ticket
    s1.click("#alerts-btn")
    items = s1.locator("#alerts-list li")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_have_attribute("data-reason", "no_worker")
    expect(items.nth(1)).to_have_attribute("data-ticket", ticket_id)
    items.nth(1).click()
    expect(s1.locator("#detail")).to_be_visible()
    expect(s1.locator("#dd-title")).to_contain_text(f"#{ticket_id}")
    s1.click("#detail .detail-close button")
    s1.click("#alerts-btn")
    s1.click("#alerts-read")
    expect(s1.locator("#alerts-count")).to_be_hidden()

    s1.click("#lang")
    expect(s1.locator("#attention h2")).to_have_text("Needs attention")
    expect(row.locator(".reason[data-reason=no_worker]")).to_have_text("No worker")
    expect(s1.locator("#map")).to_have_attribute("aria-label", "Backlog by grid cell")
    assert s1.evaluate("window.gwSamePage") is True
    assert missing_keys(s1) == [] and missing_keys(s2) == []
    assert shots.errors == []
