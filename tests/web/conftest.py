"""Real-browser fixtures: headless Chromium (Debian's) driven by Playwright, against a real
dispatcher, Mosquitto and InfluxDB, with simulated cameras publishing as real devices do.

Screenshots go to artifacts/screenshots/ (kept out of git). With GW_SCREENSHOTS_TO_DOCS=1 they
are also copied to docs/screenshots/, which is how the README's pictures are refreshed.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from broker.mosquitto import MosquittoServer
from config.clock import SystemClock
from config.site import SAMPLE_SITE, Site
from dispatcher.api.app import create_app
from dispatcher.service import Dispatcher
from simulators.devices import DeviceSimulator
from simulators.local_services import InfluxServer
from tests.conftest import ApiServer, dispatcher_settings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
DESK = {"viewport": {"width": 1366, "height": 900}}
ADMIN_PASSWORD = "admin-pass-1"
SIMULATED = ("edge-01", "edge-02", "edge-03", "node-01")


def after_photo() -> bytes:
    """A phone-sized JPEG standing in for the camera's after-photo (the app shrinks it)."""
    img = Image.new("RGB", (2400, 1800), (96, 150, 96))
    ImageDraw.Draw(img).rectangle((600, 500, 1800, 1300), outline=(250, 250, 250), width=30)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


@dataclass
class Stack:
    site: Site
    dispatcher: Dispatcher
    api: ApiServer
    secrets: dict[str, str]
    devices: dict[str, DeviceSimulator] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.api.url

    def password(self, username: str) -> str:
        if username == "admin":
            return ADMIN_PASSWORD
        return self.secrets[f"GW_PW_{username.upper().replace('-', '_')}"]


@pytest.fixture(scope="module")
def stack(
    site: Site,
    site_secrets: dict[str, str],
    mosquitto: MosquittoServer,
    influx: InfluxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    settings = dispatcher_settings(
        SAMPLE_SITE,
        tmp_path_factory.mktemp("web-dispatcher"),
        influx,
        admin_password=ADMIN_PASSWORD,
    )
    d = Dispatcher(settings, site, SystemClock())
    d.start(wait_s=15)
    sims: dict[str, DeviceSimulator] = {}
    try:
        for device_id in SIMULATED:
            dev = site.device(device_id)
            assert dev is not None
            sim = DeviceSimulator(
                site,
                device_id,
                dev.password.get_secret_value(),
                seed=len(sims),
                fix_probability=1.0,
                kind=dev.kind,
            )
            sim.start()
            sims[device_id] = sim
        with ApiServer(create_app(d)) as api:
            yield Stack(site, d, api, site_secrets, sims)
    finally:
        for sim in sims.values():
            sim.stop()
        d.stop()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make test does)")
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


class Screens:
    """Numbered screenshots of one test, with page errors and console errors collected."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.errors: list[str] = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def watch(self, page: Page) -> Page:
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on(
            "console",
            lambda m: (
                self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        return page

    def shot(self, page: Page, name: str, *, full_page: bool = False) -> Path:
        path = ARTIFACTS / f"{self.prefix}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        if os.environ.get("GW_SCREENSHOTS_TO_DOCS") == "1":
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS / path.name)
        return path


ContextFactory = Callable[..., BrowserContext]


@pytest.fixture
def new_context(browser: Browser, stack: Stack) -> Iterator[ContextFactory]:
    """Browser contexts (one per person) on the stack's URL; closed after the test, so their
    live streams end before the server stops."""
    made: list[BrowserContext] = []

    def make(**options: object) -> BrowserContext:
        ctx = browser.new_context(
            base_url=stack.url, locale="zh-CN", timezone_id="Asia/Shanghai", **options
        )  # type: ignore[arg-type]
        ctx.set_default_timeout(15_000)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def log_in(page: Page, path: str, username: str, password: str) -> None:
    page.goto(path)
    page.wait_for_selector("body[data-ready='1']")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("#login-form button[type=submit]")


def missing_keys(page: Page) -> list[str]:
    keys: list[str] = page.evaluate("window.gwMissingKeys")
    return keys
