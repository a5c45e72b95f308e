"""The one logging setup: structured lines carrying device, camera and ticket ids."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

# Context keys a log call may pass in ``extra=``; they appear as fields of the record.
CONTEXT_KEYS = (
    "device_id",
    "camera_id",
    "sensor_id",
    "ticket_id",
    "event_id",
    "worker_id",
    "topic",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any context ids."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                doc[key] = str(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the context ids appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        ctx = " ".join(
            f"{k}={record.__dict__[k]}" for k in CONTEXT_KEYS if record.__dict__.get(k) is not None
        )
        return f"{base} [{ctx}]" if ctx else base


def setup_logging(level: str | None = None, *, json_lines: bool | None = None) -> None:
    """Configure the root logger once per process; GW_LOG_LEVEL and GW_LOG_FORMAT override."""
    level = (level or os.environ.get("GW_LOG_LEVEL") or "INFO").upper()
    if json_lines is None:
        json_lines = os.environ.get("GW_LOG_FORMAT", "json") == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else ConsoleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("apscheduler", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
