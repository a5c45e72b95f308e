"""What the shippers (pushes, metrics) share: their thread, woken after a commit or every
second, and the read of the audit rows they have still to ship."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Column, Connection, select

from dispatcher.store.schema import audit, tickets

# Pushes and points are made of an audit row and a few columns of its ticket: the shippers
# read thousands of rows a second, and a whole ticket row costs several times as much.
AUDIT_COLUMNS = tuple(
    c for c in audit.c if c.key not in ("pushed", "metric_sent", "reason_code", "reason_params")
)
TICKET_COLUMNS = tuple(
    tickets.c[k]
    for k in (
        "id",
        "category",
        "priority",
        "grid_id",
        "street_id",
        "source",
        "lat",
        "lon",
        "opened_at",
        "deadline",
    )
)
_SPLIT = len(AUDIT_COLUMNS)


def unshipped(
    conn: Connection, flag: Column[bool], *, after: int = 0, limit: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Audit rows whose ``flag`` (pushed, metric_sent) is still false and whose id is above
    ``after``, oldest first, up to ``limit``: each as (audit row, its ticket's columns)."""
    rows = conn.execute(
        select(*AUDIT_COLUMNS, *(c.label(f"ticket_{c.key}") for c in TICKET_COLUMNS))
        .join_from(audit, tickets, tickets.c.id == audit.c.ticket_id)
        .where(flag.is_(False), audit.c.id > after)
        .order_by(audit.c.id)
        .limit(limit)
    ).all()
    return [
        (
            {c.key: v for c, v in zip(AUDIT_COLUMNS, r[:_SPLIT], strict=True)},
            {c.key: v for c, v in zip(TICKET_COLUMNS, r[_SPLIT:], strict=True)},
        )
        for r in rows
    ]


class ShipperThread:
    """Start, wake and stop one background thread; subclasses write ``_run``."""

    thread_name = "shipper"

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Ship now (called after a commit that wrote audit rows)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        raise NotImplementedError
