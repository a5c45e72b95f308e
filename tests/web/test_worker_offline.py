"""The worker app on a flaky connection: it installs (manifest, service worker), opens with no
network from its cache, and actions taken offline wait in a queue and are sent when the
network returns."""

from __future__ import annotations

from playwright.sync_api import expect
from sqlalchemy import select

from dispatcher.store.schema import tickets
from tests.conftest import wait_until
from tests.web.conftest import PHONE, ContextFactory, Screens, Stack, log_in, missing_keys
from tests.web.test_worker_to_dashboard import camera_with_a_worker


def status_of(stack: Stack, ticket_id: int) -> str:
    with stack.dispatcher.engine.connect() as conn:
        return str(
            conn.execute(select(tickets.c.status).where(tickets.c.id == ticket_id)).scalar_one()
        )


def test_installable_and_queues_actions_while_offline(
    new_context: ContextFactory, stack: Stack
) -> None:
    cam, worker, _ = camera_with_a_worker(stack)
    shots = Screens("offline")
    ctx = new_context(**PHONE)
    app = shots.watch(ctx.new_page())

    manifest = app.request.get(stack.url + "/app/manifest.webmanifest").json()
    assert manifest["start_url"] == "/app/" and manifest["display"] == "standalone"
    assert {i["sizes"] for i in manifest["icons"]} >= {"192x192", "512x512"}
    for icon in manifest["icons"]:
        assert app.request.get(stack.url + icon["src"]).ok, icon["src"]

    log_in(app, "/app/", worker, stack.password(worker))
    expect(app.locator("#net")).to_have_class("net live")
    assert app.evaluate("""async () => {
        const reg = await navigator.serviceWorker.ready;
        return reg.active !== null && reg.scope.endsWith('/app/');
    }""")
    app.reload()  # now under the service worker's control, with the shell cached
    expect(app.locator("#net")).to_have_class("net live")
    assert app.evaluate("navigator.serviceWorker.controller !== null")

    stack.devices[cam.device].raise_problem(cam, "garbage")
    card = app.locator("#tickets li.ticket.new").first
    expect(card).to_be_visible()
    ticket_id = int(card.get_attribute("data-id") or 0)

    ctx.set_offline(True)
    app.reload()  # the shell comes from the cache; the list from the last copy
    expect(app.locator("#title")).to_have_text("网格员工单")
    expect(app.locator(f"#tickets li[data-id='{ticket_id}']")).to_be_visible()
    app.locator(f"#tickets li[data-id='{ticket_id}']").click()
    app.locator("#act-accept").click()
    expect(app.locator("#d-pending")).to_be_visible()
    app.locator("#back").click()
    expect(app.locator("#queue-state")).to_have_text("1 个操作待提交")
    expect(app.locator("#net")).not_to_have_class("net live")
    queued = app.locator(f"#tickets li[data-id='{ticket_id}']")
    expect(queued.locator(".status")).to_have_text("处理中")  # as it will be once sent
    expect(queued.locator("strong")).to_have_text("垃圾堆积")  # labels kept for offline use
    expect(queued.locator(".pending")).to_be_visible()
    shots.shot(app, "worker-queued")
    assert status_of(stack, ticket_id) == "assigned"

    ctx.set_offline(False)
    app.evaluate("window.dispatchEvent(new Event('online'))")
    wait_until(lambda: status_of(stack, ticket_id) == "accepted", timeout_s=20)
    expect(app.locator("#queue-state")).to_be_hidden()
    expect(app.locator("#net")).to_have_class("net live")

    # a false alarm, reported through the same queue, with a preset reason
    app.locator(f"#tickets li[data-id='{ticket_id}']").click()
    app.locator("#act-reject").click()
    app.locator("#reason-presets button").first.click()
    shots.shot(app, "worker-false-alarm")
    app.click("#reason-form button[type=submit]")
    wait_until(lambda: status_of(stack, ticket_id) == "rejected", timeout_s=15)
    assert missing_keys(app) == []
    assert [e for e in shots.errors if "Failed to load resource" not in e] == []
