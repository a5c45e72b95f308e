"""The topic scheme: every MQTT topic gridwatch uses is built and parsed here."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

ROOT = "gw/v1"
DEVICE_ID_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}"
_DEVICE_ID = re.compile(rf"^{DEVICE_ID_PATTERN}$")

EdgeChannel = Literal["event", "status", "config", "cmd", "cmd/result", "snapshot"]
EDGE_CHANNELS: tuple[EdgeChannel, ...] = (
    "event",
    "status",
    "config",
    "cmd",
    "cmd/result",
    "snapshot",
)

SHARED_GROUP = "dispatchers"


def status_expiry_s(interval_s: float) -> int:
    """How long a heartbeat on ``status`` stays worth delivering (its MQTT v5 message expiry):
    one status interval, in whole seconds. A late heartbeat would make a right clock look wrong."""
    return max(1, math.ceil(interval_s))


def _check_id(kind: str, value: str) -> str:
    if not _DEVICE_ID.match(value):
        raise ValueError(f"invalid {kind} id for a topic: {value!r}")
    return value


def edge(device_id: str, channel: EdgeChannel) -> str:
    """``gw/v1/edge/{device_id}/{channel}``."""
    return f"{ROOT}/edge/{_check_id('device', device_id)}/{channel}"


def event(device_id: str) -> str:
    return edge(device_id, "event")


def status(device_id: str) -> str:
    return edge(device_id, "status")


def device_config(device_id: str) -> str:
    return edge(device_id, "config")


def command(device_id: str) -> str:
    return edge(device_id, "cmd")


def command_result(device_id: str) -> str:
    return edge(device_id, "cmd/result")


def worker_tickets(worker_id: str) -> str:
    """``gw/v1/worker/{worker_id}/tickets``: ticket pushes for a worker's native app."""
    return f"{ROOT}/worker/{_check_id('worker', worker_id)}/tickets"


def supervisor_alerts(supervisor_id: str) -> str:
    """``gw/v1/supervisor/{id}/alerts``: escalations and safety notices."""
    return f"{ROOT}/supervisor/{_check_id('supervisor', supervisor_id)}/alerts"


def all_edge(channel: EdgeChannel) -> str:
    """Wildcard subscription for one channel of every device."""
    return f"{ROOT}/edge/+/{channel}"


def shared(topic_filter: str, group: str = SHARED_GROUP) -> str:
    """An MQTT v5 shared subscription, so several dispatchers split one stream."""
    return f"$share/{group}/{topic_filter}"


@dataclass(frozen=True)
class EdgeTopic:
    """A parsed ``gw/v1/edge/...`` topic."""

    device_id: str
    channel: str


_EDGE_RE = re.compile(
    rf"^{ROOT}/edge/({DEVICE_ID_PATTERN})/(event|status|config|cmd|cmd/result|snapshot)$"
)


def parse_edge(topic: str) -> EdgeTopic | None:
    """Split an edge topic into device id and channel; None for anything else."""
    m = _EDGE_RE.match(topic)
    return EdgeTopic(m.group(1), m.group(2)) if m else None
