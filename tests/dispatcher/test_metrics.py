"""KPI queries against a real InfluxDB, fed through the real ticket store and metrics shipper."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from broker.mosquitto import free_port
from config.site import Site
from dispatcher import metrics
from dispatcher.lifecycle import Transition as T
from dispatcher.metrics import InfluxUnavailable, InfluxV1, MetricsShipper, Period
from dispatcher.store.schema import audit
from simulators.local_services import InfluxServer
from tests.dispatcher.factories import new_ticket, sqlite_store, step

DAY = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; 09:00 UTC is 17:00 in Asia/Shanghai
G1, G2 = (39.957, 116.417), (39.957, 116.422)


def at(hh: int, mm: int = 0) -> datetime:
    return DAY + timedelta(hours=hh, minutes=mm)


def play_a_morning(engine: Engine, site: Site) -> None:
    """Six tickets with known fates (times UTC):

    t1 g1 camera garbage: fixed and verified in 32 min (SLA met)
    t2 g1 camera garbage: resolved, reopened by the camera, fixed again: 45 min
    t3 g2 citizen manhole_missing: verified after 150 min (SLA of 60 missed)
    t4 g2 sensor garbage: cancelled (cleared before anyone came)
    t5 g1 camera garbage: w01 timed out, reassigned to w05, still open at the end
    t6 g2 camera garbage: rejected as a false alarm
    """
    with engine.begin() as c:
        t1 = new_ticket(c, site, kind="garbage", lat=G1[0], lon=G1[1], at=at(9))
        step(c, t1, T.ASSIGNED, at(9), worker_id="w01")
        step(c, t1, T.ACCEPTED, at(9, 5))
        step(c, t1, T.RESOLVED, at(9, 30))
        step(c, t1, T.VERIFIED, at(9, 32))
        t3 = new_ticket(
            c, site, kind="manhole_missing", lat=G2[0], lon=G2[1], at=at(9), source="citizen"
        )
        step(c, t3, T.ASSIGNED, at(9), worker_id="w02")
        step(c, t3, T.ACCEPTED, at(9, 10))
        step(c, t3, T.RESOLVED, at(11, 20))
        step(c, t3, T.VERIFIED, at(11, 30))
        t4 = new_ticket(
            c, site, kind="garbage", lat=G2[0], lon=G2[1] + 0.001, at=at(9, 10), source="sensor"
        )
        step(c, t4, T.CANCELLED, at(9, 15))
        t2 = new_ticket(c, site, kind="garbage", lat=G1[0] + 0.001, lon=G1[1], at=at(10))
        step(c, t2, T.ASSIGNED, at(10), worker_id="w01")
        step(c, t2, T.ACCEPTED, at(10, 2))
        step(c, t2, T.RESOLVED, at(10, 20))
        step(c, t2, T.REOPENED, at(10, 22))
        step(c, t2, T.ACCEPTED, at(10, 23))
        step(c, t2, T.RESOLVED, at(10, 40))
        step(c, t2, T.VERIFIED, at(10, 45))
        t5 = new_ticket(c, site, kind="garbage", lat=G1[0] + 0.002, lon=G1[1], at=at(11))
        step(c, t5, T.ASSIGNED, at(11), worker_id="w01")
        step(c, t5, T.REASSIGNED, at(11, 10), worker_id="w05")
        t6 = new_ticket(c, site, kind="garbage", lat=G2[0] + 0.001, lon=G2[1], at=at(12))
        step(c, t6, T.ASSIGNED, at(12), worker_id="w02")
        step(c, t6, T.REJECTED, at(12, 5))


@pytest.fixture(scope="module")
def morning(site: Site, influx: InfluxServer, tmp_path_factory: pytest.TempPathFactory) -> InfluxV1:
    engine = sqlite_store(tmp_path_factory.mktemp("metrics-store"))
    play_a_morning(engine, site)
    client = InfluxV1(influx.url, f"t_{uuid.uuid4().hex[:10]}")
    client.ensure_database()
    shipper = MetricsShipper(engine, client)
    assert shipper.ship_all() == 26
    assert shipper.pending() == 0
    # Shipping everything again (a crash before the rows were marked) changes nothing.
    with engine.begin() as conn:
        conn.execute(update(audit).values(metric_sent=False))
    assert shipper.ship_all() == 26
    engine.dispose()
    return client


WHOLE = Period(at(8), at(13))


def test_totals(morning: InfluxV1) -> None:
    k = metrics.totals(morning, WHOLE)
    assert (k.opened, k.closed, k.cancelled, k.rejected, k.reopened, k.resolved) == (
        6,
        3,
        1,
        1,
        1,
        4,
    )
    assert k.closure_rate == pytest.approx(3 / 4)  # due: 6 opened - 1 cancelled - 1 rejected
    assert k.median_close_s == 45 * 60 and k.p90_close_s == 150 * 60
    assert (k.sla_met, k.sla_total) == (2, 3) and k.sla_compliance == pytest.approx(2 / 3)
    assert k.reopen_rate == pytest.approx(1 / 4)
    assert k.backlog == 1


def test_by_grid_category_and_source(morning: InfluxV1) -> None:
    grids = {k.key: k for k in metrics.kpis(morning, WHOLE, "grid")}
    assert set(grids) == {"g1", "g2"}
    assert (grids["g1"].opened, grids["g1"].closed, grids["g1"].backlog) == (3, 2, 1)
    assert grids["g1"].closure_rate == pytest.approx(2 / 3)
    assert grids["g1"].sla_compliance == 1.0
    assert (grids["g2"].opened, grids["g2"].closed, grids["g2"].closure_rate) == (3, 1, 1.0)
    assert grids["g2"].sla_compliance == 0.0
    cats = {k.key: k for k in metrics.kpis(morning, WHOLE, "category")}
    assert cats["manhole_missing"].median_close_s == 150 * 60
    only_g1 = metrics.kpis(morning, WHOLE, "category", filters={"grid": "g1"})
    assert [(k.key, k.opened) for k in only_g1] == [("garbage", 3)]
    both = metrics.totals(morning, WHOLE, filters={"grid": ["g1", "g2"], "street": ["s1"]})
    assert (both.opened, both.median_close_s) == (6, 45 * 60)  # exact across the two cells
    assert metrics.kpis(morning, WHOLE, "grid", filters={"grid": []}) == []


def test_by_worker(morning: InfluxV1) -> None:
    workers = {k.key: k for k in metrics.kpis(morning, WHOLE, "worker")}
    w01, w02, w05 = workers["w01"], workers["w02"], workers["w05"]
    assert (w01.given, w01.closed, w01.backlog) == (3, 2, 0)  # t5 went to w05
    assert w01.closure_rate == pytest.approx(2 / 3) and w01.reopen_rate == pytest.approx(1 / 3)
    assert (w05.given, w05.closed, w05.backlog) == (1, 0, 1)
    assert (w02.given, w02.closed, w02.closure_rate) == (2, 1, 0.5)
    assert metrics.backlog(morning, at(13), "worker") == {"w05": 1}
    assert metrics.backlog(morning, at(11, 5), "worker") == {"w01": 1, "w02": 1}  # t5, t3


def test_discovery_by_source(morning: InfluxV1) -> None:
    [all_] = metrics.discovery(morning, WHOLE)
    assert (all_.camera, all_.sensor, all_.citizen, all_.total) == (4, 1, 1, 6)
    assert all_.automatic_share == pytest.approx(5 / 6)
    by_grid = {d.key: d for d in metrics.discovery(morning, WHOLE, "grid")}
    assert (by_grid["g2"].camera, by_grid["g2"].sensor, by_grid["g2"].citizen) == (1, 1, 1)


def test_time_series(morning: InfluxV1, site: Site) -> None:
    hourly = metrics.series(morning, T.OPENED, WHOLE, "hour", site.tz)
    local = [s.hour for s in hourly.starts]
    assert local == [16, 17, 18, 19, 20]  # 08:00–13:00 UTC in Asia/Shanghai
    assert hourly.values["all"] == [0, 3, 1, 1, 1]
    closed = metrics.series(morning, T.VERIFIED, WHOLE, "hour", site.tz, by="grid")
    assert closed.values == {"g1": [0, 1, 1, 0, 0], "g2": [0, 0, 0, 1, 0]}
    for interval in ("day", "week", "month"):
        s = metrics.series(morning, T.OPENED, WHOLE, interval, site.tz)  # type: ignore[arg-type]
        assert len(s.starts) == 1 and s.values["all"] == [6]
    assert metrics.series(morning, T.OPENED, WHOLE, "week", site.tz).starts[0].day == 5  # Monday
    backlog = metrics.backlog_series(morning, WHOLE, "hour", site.tz)
    # end of 09h: t3 open (t1 closed, t4 cancelled); 10h: +t2 closed; 11h: t3 closed, t5 open;
    # 12h: t6 opened and rejected
    assert backlog.values["all"] == [0, 1, 1, 1, 1]
    per_worker = metrics.backlog_series(morning, WHOLE, "hour", site.tz, by="worker")
    assert per_worker.values["w05"] == [0, 0, 0, 1, 1]


def test_queries_refuse_bad_input(morning: InfluxV1) -> None:
    with pytest.raises(ValueError, match="unknown dimension"):
        metrics.kpis(morning, WHOLE, "street; DROP")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period must look like"):
        Period.last("yesterday", at(12))
    with pytest.raises(ValueError, match="not after its start"):
        Period(at(12), at(11))
    # A quote in a filter value is escaped, not executed.
    assert metrics.kpis(morning, WHOLE, "grid", filters={"grid": "g1' OR '1'='1"}) == []


def test_grid_report_for_the_demo(morning: InfluxV1) -> None:
    rows = {r.grid: r for r in metrics.grid_report(morning, "5h", now=at(13))}
    assert rows["g1"].closed == 2 and rows["g2"].cancelled == 1


def test_points_wait_in_the_store_while_influxdb_is_down(site: Site, tmp_path: Path) -> None:
    engine = sqlite_store(tmp_path / "store")
    with engine.begin() as c:
        t = new_ticket(c, site, kind="garbage", lat=G1[0], lon=G1[1], at=at(9))
        step(c, t, T.ASSIGNED, at(9), worker_id="w01")
    port = free_port()
    client = InfluxV1(f"http://127.0.0.1:{port}", "gridwatch", timeout_s=2)
    shipper = MetricsShipper(engine, client)
    with pytest.raises(InfluxUnavailable):
        shipper.ship_all()
    assert shipper.pending() == 2
    server = InfluxServer(tmp_path / "influx", port=port)
    server.start()
    try:
        client.ensure_database()
        assert shipper.ship_all() == 2 and shipper.pending() == 0
        assert metrics.totals(client, Period(at(8), at(10))).opened == 1
    finally:
        server.stop()
        engine.dispose()


def test_an_unreachable_server_is_taken_for_what_the_settings_imply() -> None:
    """A dispatcher starting while InfluxDB is down: with a token it must be 2.x/3.x (1.x has
    no tokens), without one 1.x; a wrong guess would buffer points forever."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    assert isinstance(metrics.connect(url, "gw", token="t0ken"), metrics.InfluxV2)
    assert isinstance(metrics.connect(url, "gw"), metrics.InfluxV1)
