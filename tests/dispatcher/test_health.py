"""/health tells the truth about the ticket store: "degraded", with the store's error, while
the store refuses writes, and "ok" again once the events waiting meanwhile went through."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select

from broker import topics
from broker.client import BusClient
from config.site import Site
from dispatcher.api.app import create_app
from dispatcher.service import Dispatcher
from dispatcher.store.schema import tickets
from tests.conftest import ApiServer, wait_until
from tests.dispatcher.factories import camera_event, refusing_writes


def test_health_is_degraded_while_the_ticket_store_refuses_writes(
    site: Site, make_dispatcher: Callable[..., Dispatcher], device_bus: Callable[..., BusClient]
) -> None:
    d = make_dispatcher()
    edge = device_bus("edge-01")
    edge.start(wait_s=10)
    with ApiServer(create_app(d)) as api, httpx.Client(base_url=api.url, timeout=15) as web:

        def health() -> dict[str, Any]:
            r = web.get("/health")
            r.raise_for_status()
            return dict(r.json())

        assert (health()["status"], health()["store_error"]) == ("ok", None)
        with refusing_writes(d.engine):
            edge.publish(topics.event("edge-01"), camera_event(site, "cam-01", datetime.now(UTC)))
            seen = wait_until(lambda: (h := health())["store_error"] and h)
            assert isinstance(seen, dict)
            assert seen["status"] == "degraded"
            assert "readonly database" in seen["store_error"]
            assert seen["dead_letters"] == 0 and seen["events_received"] == 0

        def opened() -> int:
            with d.engine.connect() as conn:
                return len(conn.execute(select(tickets.c.id)).all())

        wait_until(lambda: opened() == 1, timeout_s=20)
        wait_until(lambda: health()["status"] == "ok", timeout_s=10)
        after = health()
        assert after["store_error"] is None and after["events_received"] == 1
        assert after["dead_letters"] == 0
