"""One real dispatcher (Mosquitto, InfluxDB, SQLite store) and its HTTP API per test module,
driven by a ManualClock set to a day-shift morning so assignment is predictable: a ticket in
g1 goes to w01, g2 to w02, g3 to w03, g4 to w04. Streets: s1 = g1+g2 (sup-s1), s2 = g3+g4."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from broker.mosquitto import MosquittoServer
from config.clock import ManualClock
from config.site import SAMPLE_SITE, Site
from dispatcher import tickets as ticket_ops
from dispatcher.api.app import create_app
from dispatcher.evidence import record as record_evidence
from dispatcher.service import Dispatcher
from dispatcher.store.schema import evidence
from simulators.local_services import InfluxServer
from tests.conftest import ApiServer, dispatcher_settings, login
from tests.dispatcher.factories import new_ticket, offset

ADMIN_PASSWORD = "admin-pass-1"
CELL_CENTRES = {
    "g1": (39.957, 116.4175),
    "g2": (39.957, 116.4225),
    "g3": (39.961, 116.4175),
    "g4": (39.961, 116.4225),
}


def day_shift_morning(site: Site) -> datetime:
    """The most recent 10:00 site time at or before now: everyone on the day shift is on duty,
    nobody is on a break, and the time is at most a day old (InfluxDB keeps it)."""
    local = datetime.now(UTC).astimezone(site.tz)
    at = datetime.combine(local.date(), time(10, 0), tzinfo=site.tz)
    if at > local:
        at -= timedelta(days=1)
    return at.astimezone(UTC)


def jpeg(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (90, 140, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "JPEG")
    return buf.getvalue()


@dataclass
class Env:
    """The running dispatcher, its API and ways to make tickets and log in."""

    site: Site
    dispatcher: Dispatcher
    api: ApiServer
    clock: ManualClock
    secrets: dict[str, str]
    made: int = 0

    @property
    def url(self) -> str:
        return self.api.url

    def password(self, username: str) -> str:
        if username == "admin":
            return ADMIN_PASSWORD
        return self.secrets[f"GW_PW_{username.upper().replace('-', '_')}"]

    def client(self, username: str) -> httpx.Client:
        return login(self.url, username, self.password(username))

    def anonymous(self, source: str | None = None) -> httpx.Client:
        """A client without a token; ``source``: the address it connects from (127.x.y.z)."""
        transport = httpx.HTTPTransport(local_address=source) if source else None
        return httpx.Client(base_url=self.url, timeout=15, transport=transport)

    def ticket(self, grid: str, kind: str = "garbage", *, snapshot: bool = True) -> dict[str, Any]:
        """A new assigned ticket in ``grid`` (each at its own spot, so none merge), with a
        camera snapshot as evidence; returns the ticket row."""
        self.made += 1
        lat, lon = offset(
            *CELL_CENTRES[grid],
            north_m=40 * (self.made % 9) - 160,
            east_m=40 * (self.made // 9 % 9) - 160,
        )
        d, at = self.dispatcher, self.clock.now()
        stored = (
            d.evidence.save(jpeg(colour=(self.made % 255, 80, 80)), "snapshot", at)
            if snapshot
            else None
        )
        with d.engine.begin() as conn:
            tid = new_ticket(
                conn, self.site, kind=kind, lat=lat, lon=lon, at=at, camera_ids=("cam-01",)
            )
            row = ticket_ops.assign(conn, self.site, tid, at=at, actor="system")
            if stored is not None:
                record_evidence(conn, stored, "snapshot", at, tid)
        d.committed()
        return dict(row)

    def evidence_of(self, ticket_id: int) -> list[int]:
        from sqlalchemy import select

        with self.dispatcher.engine.connect() as conn:
            return list(
                conn.execute(
                    select(evidence.c.id).where(evidence.c.ticket_id == ticket_id)
                ).scalars()
            )


@pytest.fixture(scope="module")
def env(
    site: Site,
    site_secrets: dict[str, str],
    mosquitto: MosquittoServer,
    influx: InfluxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    clock = ManualClock(day_shift_morning(site))
    state: Path = tmp_path_factory.mktemp("api-dispatcher")
    settings = dispatcher_settings(SAMPLE_SITE, state, influx, admin_password=ADMIN_PASSWORD)
    d = Dispatcher(settings, site, clock)
    d.start(wait_s=15)
    try:
        with ApiServer(create_app(d)) as api:
            yield Env(site, d, api, clock, site_secrets)
    finally:
        d.stop()
