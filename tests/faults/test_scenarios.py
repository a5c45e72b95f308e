"""The fault scenarios with real processes, in their reduced form (the report command runs them
at full length: ``python -m tests.faults.report``; GW_LONG_TESTS=1 runs the full forms here).

Each test runs one scenario and asserts every check it reports: zero events lost, zero
duplicate tickets, every alarm with its ticket, every push delivered, everything drained,
and the scenario's own checks. Checks listed in ``KNOWN_OPEN`` are open findings
(docs/reliability.md): they must still fail, so that a fix is noticed and the docs updated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from simulators.local_services import InfluxServer
from tests.faults.scenarios import SCENARIOS, CannotMount, Outcome

LONG = os.environ.get("GW_LONG_TESTS") == "1"

# Reduced forms for `make test`; None: full form only (the report command, GW_LONG_TESTS=1).
FAST: dict[str, dict[str, Any] | None] = {
    "in-a-row": {},
    "broker": None,
    "broker-behind": None,
    "broker-behind-durable": None,
    "dispatcher": None,
    "influx": None,
    "edge": None,
    "outbox-disk": {"full_s": 3, "before_s": 1.5},
    "store-disk": {"full_s": 3, "before_s": 1.5, "after_s": 1},
    "clock": {"rounds": 2},
}
# The full forms, as the report command runs them.
FULL: dict[str, dict[str, Any]] = {
    "in-a-row": {
        "broker_down_s": 20,
        "dispatcher_down_s": 20,
        "edge_down_s": 10,
        "influx_down_s": 30,
        "gap_s": 10,
        "per_s": 10,
    },
    "broker": {"down_s": 20, "before_s": 20, "after_s": 20, "per_s": 10},
    "broker-behind": {"backlog_s": 10, "down_s": 20, "before_s": 10, "after_s": 10, "per_s": 10},
    "broker-behind-durable": {
        "backlog_s": 10,
        "down_s": 20,
        "before_s": 10,
        "after_s": 10,
        "per_s": 10,
    },
    "dispatcher": {"down_s": 60, "before_s": 10, "after_s": 45, "per_s": 10},
    "influx": {"down_s": 60, "before_s": 10, "after_s": 10, "per_s": 10},
    "edge": {"down_s": 20, "before_s": 10, "after_s": 10, "per_s": 10},
    "outbox-disk": {"full_s": 20, "per_s": 10},
    "store-disk": {"full_s": 20, "per_s": 10},
    "clock": {"rounds": 5},
}
# Open findings that show only in some runs (they depend on timing): tolerated either way.
# The intake applies a device's overtaken events in the device's order, so every alarm
# makes its ticket after a broker restart; in-a-row (which also kills the agent) keeps that
# check tolerated until it is measured again.
KNOWN_FLAKY: dict[str, set[str]] = {
    name: {
        "events arrive in the device's order",
        "right clocks keep their event times",
    }
    for name in ("broker", "broker-behind", "broker-behind-durable", "in-a-row")
}
KNOWN_FLAKY["in-a-row"].add("every alarm made its ticket")
# After a dispatcher restart, Mosquitto 2.0.11 let a live event overtake its session's queue
# (docs/reliability.md, Open); the intake keeps the tickets right.
KNOWN_FLAKY["dispatcher"] = {"events arrive in the device's order"}
KNOWN_OPEN: dict[str, set[str]] = {}


def run_scenario(name: str, folder: Path, influx: InfluxServer, params: dict[str, Any]) -> Outcome:
    """Run one scenario; InfluxDB is shared except where InfluxDB itself is the fault."""
    fn = SCENARIOS[name]
    try:
        if name in ("influx", "in-a-row"):
            return fn(folder, **params)
        return fn(folder, influx, **params)
    except CannotMount as exc:
        pytest.skip(f"needs a size-limited folder: {exc}")


def judge(name: str, out: Outcome) -> None:
    known = KNOWN_OPEN.get(name, set())
    tolerated = known | KNOWN_FLAKY.get(name, set())
    unexpected = [k for k in out.failed() if k not in tolerated]
    assert not unexpected, out.explain()
    fixed = [k for k in known if out.checks.get(k)]
    assert not fixed, (
        f"{name}: open finding(s) {fixed} now pass: move them out of KNOWN_OPEN and update "
        "docs/reliability.md"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, p in FAST.items() if p is not None or LONG])
def test_fault_scenario(name: str, tmp_path: Path, influx: InfluxServer) -> None:
    params = FULL[name] if LONG else FAST[name]
    assert params is not None
    judge(name, run_scenario(name, tmp_path / name, influx, params))
