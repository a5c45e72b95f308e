"""Session fixtures that start the real services (Mosquitto, InfluxDB, PostgreSQL) on free loopback
ports in temporary folders, and factories for dispatchers and device connections on top of them."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import uvicorn

from broker.client import BusClient, BusSettings
from broker.mosquitto import BrokerOptions, MosquittoServer, free_port, site_accounts
from config.clock import Clock, SystemClock
from config.loader import placeholders
from config.site import SAMPLE_SITE, Site, load_site
from dispatcher.settings import DispatcherSettings
from models.offline import configure_offline
from simulators.local_services import InfluxServer, PostgresServer

os.environ.setdefault("GW_LOG_FORMAT", "console")
# Tests import ultralytics (export parity, the ultralytics backend): offline, no pip installs,
# its settings and font in our cache folder, before anything imports it.
configure_offline()


@pytest.fixture(scope="session")
def site_secrets() -> dict[str, str]:
    """Random values for the sample site's ${ENV} placeholders, put in the environment."""
    values = {name: secrets.token_urlsafe(12) for name in placeholders(SAMPLE_SITE)}
    values["GW_MQTT_PORT"] = str(free_port())
    os.environ.update(values)
    return values


@pytest.fixture(scope="session")
def site(site_secrets: dict[str, str]) -> Site:
    return load_site(SAMPLE_SITE)


@pytest.fixture(scope="session")
def mosquitto(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    server = MosquittoServer(
        tmp_path_factory.mktemp("mosquitto"),
        site_accounts(site),
        BrokerOptions(port=site.broker.port),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    server = InfluxServer(tmp_path_factory.mktemp("influxdb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # Not under pytest's tmp_path: its folders are private to the user running the tests, and
    # a root run starts PostgreSQL as the postgres user, who must reach the data folder.
    folder = Path(tempfile.mkdtemp(prefix="gridwatch-pg-"))
    server = PostgresServer(folder)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


DeviceFactory = Callable[..., BusClient]


def bus_factory(site: Site, port: int) -> tuple[DeviceFactory, list[BusClient]]:
    """A factory that connects as a device (its own account) or as any username/password to
    the broker on ``port``, and the list of the clients it made (for the caller to stop)."""
    made: list[BusClient] = []

    def connect(device_id: str, password: str | None = None, **settings: object) -> BusClient:
        dev = site.device(device_id)
        pw = password if password is not None else (dev.password.get_secret_value() if dev else "")
        bus = BusClient(
            BusSettings(
                client_id=str(settings.pop("client_id", f"t-{device_id}-{uuid.uuid4().hex[:6]}")),
                port=port,
                username=device_id,
                password=pw,
                **settings,  # type: ignore[arg-type]
            )
        )
        made.append(bus)
        return bus

    return connect, made


@contextmanager
def broker_of_its_own(
    site: Site, folder: Path, opts: BrokerOptions | None = None
) -> Iterator[tuple[MosquittoServer, DeviceFactory]]:
    """A Mosquitto that only one test uses (the site's accounts and ACL, ``opts`` on a free
    port, state in ``folder``) and a factory of connections to it; all closed afterwards."""
    server = MosquittoServer(
        folder, site_accounts(site), replace(opts or BrokerOptions(), port=free_port())
    )
    server.start()
    connect, made = bus_factory(site, server.port)
    try:
        yield server, connect
    finally:
        for bus in made:
            bus.stop()
        server.stop()


@pytest.fixture
def device_bus(site: Site, mosquitto: MosquittoServer) -> Iterator[DeviceFactory]:
    """Connect to the session's broker as a device or as any account; closed after the test."""
    connect, made = bus_factory(site, mosquitto.port)
    yield connect
    for bus in made:
        bus.stop(end_session=True)  # a session left behind would still subscribe on this broker


def dispatcher_settings(
    site_file: Path, state: Path, influx: InfluxServer, **overrides: object
) -> DispatcherSettings:
    values: dict[str, object] = {
        "site": site_file,
        "state_dir": state,
        "influx_url": influx.url,
        "influx_db": f"t_{uuid.uuid4().hex[:10]}",
        "mqtt_client_id": f"dispatcher-{uuid.uuid4().hex[:8]}",
        "share_group": f"t{uuid.uuid4().hex[:10]}",
        "secret_key": secrets.token_urlsafe(48),
        "admin_password": "admin-pass-1",
    }
    values.update(overrides)
    return DispatcherSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def make_dispatcher(
    site: Site, mosquitto: MosquittoServer, influx: InfluxServer, tmp_path: Path
) -> Iterator[Callable[..., object]]:
    """Start real dispatchers (fresh store and InfluxDB database each); stopped after the test."""
    from dispatcher.service import Dispatcher

    started: list[Dispatcher] = []

    def make(clock: Clock | None = None, **overrides: object) -> Dispatcher:
        state = overrides.pop("state_dir", None) or tmp_path / f"dispatcher-{len(started)}"
        settings = dispatcher_settings(SAMPLE_SITE, Path(str(state)), influx, **overrides)
        d = Dispatcher(settings, site, clock or SystemClock())
        d.start(wait_s=15)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


class ApiServer:
    """A real uvicorn server for a dispatcher's app, in a thread, on a free port."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,  # type: ignore[arg-type]
                access_log=False,
                timeout_graceful_shutdown=2,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("API server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def login(url: str, username: str, password: str) -> httpx.Client:
    """An HTTP client logged in as ``username``."""
    client = httpx.Client(base_url=url, timeout=15)
    r = client.post("/auth/login", json={"username": username, "password": password})
    r.raise_for_status()
    client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return client


def wait_until(
    predicate: Callable[[], object], timeout_s: float = 10, every_s: float = 0.05
) -> object:
    """Poll until ``predicate()`` is truthy; return its value, or fail the test with a message."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s: {predicate}")
        time.sleep(every_s)
