"""The API's documentation page in a real browser: Swagger UI at /docs renders every operation
from files the dispatcher serves itself, and the browser asks no other host for anything (an
offline machine shows the same page)."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Request, expect

from tests.web.conftest import DESK, ContextFactory, Screens, Stack


def test_docs_render_offline(new_context: ContextFactory, stack: Stack) -> None:
    shots = Screens("api-docs")
    ctx = new_context(**DESK)
    asked: list[str] = []

    def record(request: Request) -> None:
        asked.append(request.url)

    ctx.on("request", record)
    page = shots.watch(ctx.new_page())
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("gridwatch dispatcher")
    expect(page.locator(".opblock-tag-section").first).to_be_visible()
    spec = page.request.get("/openapi.json").json()
    operations = sum(
        1 for item in spec["paths"].values() for method in item if method in ("get", "post", "put")
    )
    expect(page.locator(".opblock")).to_have_count(operations)
    expect(
        page.locator(".opblock-summary-path[data-path='/accounts/{username}/disable']")
    ).to_have_count(1)
    ours = urlsplit(stack.url).netloc
    assert asked and {urlsplit(u).netloc for u in asked if not u.startswith("data:")} == {ours}
    shots.shot(page, "1")
    assert shots.errors == []
