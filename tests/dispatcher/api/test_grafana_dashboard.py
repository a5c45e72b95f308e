"""The provisioned Grafana dashboard (docs/grafana) asks valid InfluxQL of the measurements the
dispatcher really writes, and its headline numbers agree with dispatcher.metrics.

Grafana itself is not installed here: its macros ($timeFilter, $__interval, the template
variables) are expanded as Grafana would, and every query runs against the real InfluxDB."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from dispatcher import metrics
from tests.conftest import wait_until
from tests.dispatcher.api.conftest import Env, jpeg

GRAFANA = Path(__file__).resolve().parents[3] / "docs" / "grafana"


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (GRAFANA / "dashboards" / "gridwatch.json").read_text("utf-8")
    )
    return data


def expand(query: str, period: metrics.Period) -> str:
    """Grafana's macros as Grafana expands them, with every template variable on 'All'."""
    query = query.replace("$timeFilter", period.where()).replace("$__interval", "1h")
    return re.sub(r"\$(street|grid|category)\b", ".*", query)


def queries(panel: dict[str, Any]) -> dict[str, str]:
    return {t["refId"]: t["query"] for t in panel["targets"] if t.get("rawQuery")}


def test_dashboard_is_well_formed() -> None:
    d = dashboard()
    assert d["uid"] == "gridwatch-kpis"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) >= 12
    for p in d["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] in ("${datasource}", "__expr__"), p["title"]
            if t["datasource"]["uid"] == "__expr__":
                refs = set(re.findall(r"\$([A-Z])", t["expression"]))
                assert refs <= {x["refId"] for x in p["targets"]}, p["title"]
    provisioning = (GRAFANA / "provisioning" / "datasources" / "gridwatch.yaml").read_text()
    assert "uid: gridwatch-influxdb" in provisioning
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == "gridwatch-influxdb"


def test_every_query_runs_and_agrees_with_the_dispatcher(env: Env) -> None:
    made = [env.ticket("g1"), env.ticket("g2"), env.ticket("g3", "manhole_broken")]
    w01 = env.client("w01")
    w01.post(f"/tickets/{made[0]['id']}/accept").raise_for_status()
    w01.post(
        f"/tickets/{made[0]['id']}/resolve", files={"photo": ("a.jpg", jpeg(), "image/jpeg")}
    ).raise_for_status()
    env.client("sup-s1").post(
        f"/tickets/{made[1]['id']}/reject", json={"reason": "shadow"}
    ).raise_for_status()
    d = env.dispatcher
    wait_until(lambda: d.metrics.pending() == 0, timeout_s=20)
    period = metrics.Period.last(timedelta(days=2), env.clock.now() + timedelta(minutes=1))
    influx = d.influx
    answers: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for panel in dashboard()["panels"]:
        answers[panel["title"]] = {
            ref: influx.query(expand(q, period)) for ref, q in queries(panel).items()
        }
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            values = {r["value"] for r in influx.query(expand(var["query"], period))}
            assert values, var["name"]
    total = metrics.totals(influx, period)

    def single(title: str, ref: str = "A") -> float:
        rows = answers[title][ref]
        value = next(v for k, v in rows[0].items() if k not in ("time",)) if rows else 0
        return float(value or 0)

    assert single("Opened 新增") == total.opened >= 3
    assert single("Closed 结案") == total.closed
    assert single("Backlog now 积压") == total.backlog
    reopened, resolved = single("Reopen rate 返工率", "A"), single("Reopen rate 返工率", "B")
    assert resolved == total.resolved >= 1 and reopened == total.reopened
    by_source = {r["source"]: r for r in answers["Found by 发现来源"]["A"]}
    assert set(by_source) <= {"camera", "sensor", "citizen"} and "camera" in by_source
    per_grid = {r["grid"] for r in answers["Opened per grid cell 分网格新增"]["A"]}
    assert {"g1", "g2", "g3"} <= per_grid
