"""Hypothesis strategies for hostile input: arbitrary JSON, and valid documents with one thing broken."""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from broker.messages import (
    CameraStatus,
    Command,
    CommandResult,
    DeviceConfig,
    DeviceStatus,
    Event,
    Evidence,
    Message,
    SupervisorAlert,
    TicketPush,
)

# The report command (python -m tests.faults.report) multiplies every example budget.
SCALE = max(1, int(os.environ.get("GW_FUZZ_SCALE", "1")))
# Cases tried per test in this process, written out by tests/hostile/conftest.py.
TRIED: Counter[str] = Counter()


def fuzz(examples: int) -> settings:
    """Hypothesis settings for a hostile-input property: ``examples`` times the scale."""
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


NOW = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
JPEG_HEAD = b"\xff\xd8\xff\xe0" + b"\x00" * 60

VALID_MESSAGES: dict[str, Message] = {
    "gw.event": Event(
        event_id=uuid.UUID(int=1),
        device_id="edge-01",
        source_id="cam-01",
        source_type="camera",
        kind="garbage",
        state="new",
        seq=7,
        ts=NOW,
        track_id="t1",
        confidence=0.8,
        bbox=(0.1, 0.2, 0.3, 0.4),
        snapshot=Evidence.from_jpeg(JPEG_HEAD, 64, 48),
    ),
    "gw.status": DeviceStatus(
        device_id="edge-01",
        online=True,
        ts=NOW,
        uptime_s=12.5,
        cameras=(CameraStatus(camera_id="cam-01", state="ok", fps=2.0),),
    ),
    "gw.config": DeviceConfig(device_id="edge-01", revision=3, issued_at=NOW),
    "gw.cmd": Command(
        command_id=uuid.UUID(int=2),
        device_id="edge-01",
        action="verify",
        issued_at=NOW,
        camera_id="cam-01",
        kind="garbage",
        region=(0.1, 0.1, 0.5, 0.5),
    ),
    "gw.cmd_result": CommandResult(
        command_id=uuid.UUID(int=3),
        device_id="edge-01",
        action="verify",
        ts=NOW,
        outcome="clear",
    ),
    "gw.ticket": TicketPush(
        ticket_id="12",
        worker_id="w01",
        action="assigned",
        status="assigned",
        category="garbage",
        priority=3,
        opened_at=NOW,
        ts=NOW,
    ),
    "gw.alert": SupervisorAlert(
        supervisor_id="sup-s1",
        ticket_id="12",
        reason="safety",
        category="manhole_missing",
        ts=NOW,
    ),
}
EXAMPLES: dict[str, dict[str, Any]] = {
    k: json.loads(m.to_json()) for k, m in VALID_MESSAGES.items()
}

NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "../../etc/passwd",
    "..\\..\\boot.ini",
    "gw/v1/edge/+/event",
    "#",
    "$SYS/#",
    "' OR 1=1 --",
    "'; DROP TABLE tickets; --",
    "<script>alert(1)</script>",
    "%s%s%n",
    "\u202eevil",
    "A" * 70_000,
    "9999-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00+14:00",
    "2026-02-30T25:61:61Z",
    "NaN",
    "Infinity",
    "\ud800",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(NASTY_STRINGS)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a JSON document (dict keys and list indexes)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_doc(draw: st.DrawFn, example: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A copy of ``example`` with one key removed, replaced by junk, or a junk key added."""
    doc = copy.deepcopy(example)
    path = draw(st.sampled_from(_paths(doc)))
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    how = draw(st.sampled_from(["delete", "replace", "add"]))
    if how == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif how == "add" and isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    else:
        parent[path[-1]] = draw(json_values)
    return doc, f"{how} {'.'.join(map(str, path))}"


def mutated(schema: str) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    return mutated_doc(EXAMPLES[schema])
