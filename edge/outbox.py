"""Store-and-forward: every message is written to a local SQLite outbox before it is published,
and deleted only after the broker's PUBACK.

- ``Outbox`` is the durable queue (WAL, ``synchronous=FULL``: a committed row survives kill -9
  and power loss). Events get their per-device ``seq`` in the same transaction that stores
  them, so ``seq`` order is publishing order. It is bounded by rows, bytes and age; eviction
  is logged, counted and goes by rank: ``update`` events first, then command results,
  ``cleared``, ``new``, and events of safety kinds (``OutboxSettings.safety_kinds``) last;
  oldest first within a rank. Age never evicts a safety event.
- ``OutboxPublisher`` is the device's only publisher of queued messages: while connected it
  keeps at most ``window`` publishes in flight, oldest first, and deletes a row when its
  PUBACK arrives. After a reconnect paho re-sends the in-flight ones itself and the
  publisher continues after them; a new process replays the whole backlog in order. A
  publish not acknowledged within ``ack_timeout_s`` while connected is sent again (the
  dispatcher is idempotent on ``event_id``, so a duplicate costs nothing).
- A PUBACK that says "No matching subscribers" (no dispatcher subscribed yet, or a restarted
  Mosquitto 2.0 that did not restore the dispatchers' shared subscription) does not delete the
  row: the publisher pauses, backing off from 1 s to 30 s, and then replays from the oldest
  such row, in order.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from broker.client import BusClient, BusError
from broker.messages import Event
from config.clock import Clock
from edge.settings import OutboxSettings

log = logging.getLogger(__name__)

RANK_UPDATE, RANK_OTHER, RANK_CLEARED, RANK_NEW, RANK_SAFETY = range(5)
UNROUTED_BACKOFF_MIN_S = 1.0
UNROUTED_BACKOFF_MAX_S = 30.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    rank INTEGER NOT NULL,
    event_id TEXT,
    kind TEXT,
    state TEXT
);
CREATE INDEX IF NOT EXISTS outbox_eviction ON outbox (rank, id);
CREATE INDEX IF NOT EXISTS outbox_age ON outbox (created_at);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    event_id TEXT,
    rejected_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('seq', 0), ('evicted', 0);
"""


@dataclass(frozen=True)
class QueuedMessage:
    """One row of the outbox."""

    id: int
    topic: str
    payload: bytes
    event_id: str | None
    kind: str | None
    state: str | None
    created_at: float


class Outbox:
    """The durable queue; safe to use from several threads."""

    def __init__(self, path: Path, settings: OutboxSettings, clock: Clock) -> None:
        self.path = path
        self.settings = settings
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        if self._count:
            log.info("outbox %s holds %d unacknowledged messages; they go first", path, self._count)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (the caller holds the lock). A COMMIT that fails (a full disk
        fails there, when SQLite writes the WAL) is rolled back too, unless SQLite already
        did, so the next transaction can begin."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _rank(self, kind: str | None, state: str | None) -> int:
        if state is None:
            return RANK_OTHER
        if state == "update":
            return RANK_UPDATE
        if kind in self.settings.safety_kinds:
            return RANK_SAFETY
        return RANK_NEW if state == "new" else RANK_CLEARED

    def add_event(self, topic: str, build: Callable[[int], Event]) -> Event:
        """Store the event ``build(seq)`` with the next sequence number; return it."""
        with self._lock:
            counts = (self._count, self._bytes)
            try:
                with self._transaction() as db:
                    seq = int(
                        db.execute(
                            "UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value"
                        ).fetchone()[0]
                    )
                    event = build(seq)
                    self._insert(
                        topic, event.to_json(), str(event.event_id), event.kind, event.state
                    )
            except BaseException:
                self._count, self._bytes = counts
                raise
            self._bound_after_store()
        return event

    def add(self, topic: str, payload: bytes) -> None:
        """Store any other message (a command result) for publishing in order."""
        with self._lock:
            counts = (self._count, self._bytes)
            try:
                with self._transaction():
                    self._insert(topic, payload, None, None, None)
            except BaseException:
                self._count, self._bytes = counts
                raise
            self._bound_after_store()

    def _bound_after_store(self) -> None:
        """Evict to the bounds after a message was committed (lock held). The message is stored
        whatever happens here, so a failure (the disk full) is logged, not raised: a caller
        must not take a stored message for a lost one and store it again. The next store
        evicts what this one could not."""
        try:
            self._enforce_limits()
        except sqlite3.Error:
            log.exception(
                "outbox %s: message stored, but evicting to the bounds failed; retried at the"
                " next store",
                self.path,
            )

    def _insert(
        self, topic: str, payload: bytes, event_id: str | None, kind: str | None, state: str | None
    ) -> None:
        self._db.execute(
            "INSERT INTO outbox (topic, payload, size, created_at, rank, event_id, kind, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                topic,
                payload,
                len(payload),
                self.clock.now().timestamp(),
                self._rank(kind, state),
                event_id,
                kind,
                state,
            ),
        )
        self._count += 1
        self._bytes += len(payload)

    def after(self, last_id: int, limit: int) -> list[QueuedMessage]:
        """Up to ``limit`` messages with id above ``last_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, event_id, kind, state, created_at FROM outbox"
                " WHERE id > ? ORDER BY id LIMIT ?",
                (last_id, limit),
            ).fetchall()
        return [QueuedMessage(int(r[0]), r[1], bytes(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def get(self, row_id: int) -> QueuedMessage | None:
        with self._lock:
            r = self._db.execute(
                "SELECT id, topic, payload, event_id, kind, state, created_at FROM outbox"
                " WHERE id = ?",
                (row_id,),
            ).fetchone()
        return QueuedMessage(int(r[0]), r[1], bytes(r[2]), r[3], r[4], r[5], r[6]) if r else None

    def remove(self, row_ids: list[int]) -> int:
        """Delete acknowledged rows; returns how many were still there."""
        if not row_ids:
            return 0
        removed, freed = 0, 0
        with self._lock:
            with self._transaction() as db:
                for rid in row_ids:
                    r = db.execute(
                        "DELETE FROM outbox WHERE id = ? RETURNING size", (rid,)
                    ).fetchone()
                    if r is not None:
                        removed += 1
                        freed += int(r[0])
            self._count -= removed
            self._bytes -= freed
        return removed

    def reject(self, row_id: int) -> None:
        """Move a row the broker refused to the ``rejected`` table (kept for inspection)."""
        with self._lock:
            with self._transaction() as db:
                r = db.execute(
                    "DELETE FROM outbox WHERE id = ? RETURNING topic, payload, event_id, size",
                    (row_id,),
                ).fetchone()
                if r is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO rejected (id, topic, payload, event_id, rejected_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (row_id, r[0], r[1], r[2], self.clock.now().timestamp()),
                    )
            if r is not None:
                self._count -= 1
                self._bytes -= int(r[3])

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest event ever stored."""
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])

    @property
    def depth(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def evicted(self) -> int:
        """Messages evicted over the outbox's lifetime."""
        with self._lock:
            return int(
                self._db.execute("SELECT value FROM meta WHERE key = 'evicted'").fetchone()[0]
            )

    def _evict(self, where: str, params: tuple[object, ...], why: str) -> bool:
        row = self._db.execute(
            "SELECT id, size, event_id, kind, state, rank FROM outbox"
            f" WHERE {where} ORDER BY rank, id LIMIT 1",
            params,
        ).fetchone()
        if row is None:
            return False
        self._db.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
        self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'evicted'")
        self._count -= 1
        self._bytes -= int(row[1])
        level = logging.ERROR if row[5] == RANK_SAFETY else logging.WARNING
        log.log(
            level,
            "outbox evicted %s %s event (%s) to stay within bounds: %s",
            row[4] or "a",
            row[3] or "non-event",
            row[2] or f"row {row[0]}",
            why,
            extra={"event_id": row[2]},
        )
        return True

    def _enforce_limits(self) -> None:
        """Evict by rank, oldest first, until within rows, bytes and age (lock held)."""
        s = self.settings
        cutoff = self.clock.now().timestamp() - s.max_age_hours * 3600
        counts = (self._count, self._bytes)
        try:
            with self._transaction():
                while self._evict(
                    "created_at < ? AND rank < ?", (cutoff, RANK_SAFETY), "older than max_age_hours"
                ):
                    pass
                while (self._count > s.max_messages or self._bytes > s.max_bytes) and self._evict(
                    "1 = 1", (), f"over {s.max_messages} messages or {s.max_bytes} bytes"
                ):
                    pass
        except BaseException:
            self._count, self._bytes = counts
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


class OutboxPublisher:
    """Publishes the outbox in order over a ``BusClient``, deleting rows on PUBACK."""

    def __init__(self, outbox: Outbox, bus: BusClient, settings: OutboxSettings) -> None:
        self.outbox = outbox
        self.bus = bus
        self.settings = settings
        self.published = 0
        self.acknowledged = 0
        self._inflight: dict[int, tuple[int, float]] = {}  # mid -> (row id, sent at)
        self._sent_rows: set[int] = set()
        self._cursor = 0
        self.unrouted = 0
        self._acks: deque[tuple[int, bool | None]] = deque()  # None: no matching subscribers
        self._rewind_to: int | None = None
        self._hold_until = 0.0
        self._backoff = UNROUTED_BACKOFF_MIN_S
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
        bus.on_acknowledged(self._on_ack)
        bus.on_unrouted(self._on_unrouted)
        bus.on_connected(lambda _present: self._wake.set())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    def wake(self) -> None:
        """Something was added: publish soon."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def _on_ack(self, mid: int, ok: bool) -> None:
        self._acks.append((mid, ok))
        self._wake.set()

    def _on_unrouted(self, mid: int) -> None:
        self._acks.append((mid, None))
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5 if time.monotonic() >= self._hold_until else 0.25)
            self._wake.clear()
            try:
                self._settle_acks()
                if self.bus.connected:
                    self._resend_stale()
                    self._fill_window()
            except Exception:
                log.exception("outbox publisher failed; retrying")
                self._stop.wait(1)

    def _settle_acks(self) -> None:
        done: list[int] = []
        unrouted: list[int] = []
        while self._acks:
            mid, ok = self._acks.popleft()
            with self._lock:
                entry = self._inflight.pop(mid, None)
            if entry is None:
                continue
            row_id = entry[0]
            self._sent_rows.discard(row_id)
            log.debug(
                "outbox row %s (mid %s): %s",
                row_id,
                mid,
                {None: "no subscriber", True: "acknowledged", False: "refused"}[ok],
            )
            if ok is None:
                unrouted.append(row_id)
            elif ok:
                done.append(row_id)
            else:
                log.error("broker refused outbox row %s; moved to the rejected table", row_id)
                self.outbox.reject(row_id)
        self.acknowledged += self.outbox.remove(done)
        if unrouted:
            self.unrouted += len(unrouted)
            first = min(unrouted)
            self._rewind_to = first if self._rewind_to is None else min(self._rewind_to, first)
            self._hold_until = time.monotonic() + self._backoff
            log.warning(
                "broker has no subscriber for %d outbox messages (dispatcher not subscribed?);"
                " keeping them, replaying in %.0fs",
                len(unrouted),
                self._backoff,
            )
            self._backoff = min(self._backoff * 2, UNROUTED_BACKOFF_MAX_S)
        elif done:
            self._backoff = UNROUTED_BACKOFF_MIN_S

    def _send(self, row_id: int, topic: str, payload: bytes) -> bool:
        try:
            published = self.bus.publish(topic, payload, qos=1)
        except BusError:
            log.exception("publish of outbox row %s failed", row_id)
            return False
        log.debug("outbox row %s published as mid %s", row_id, published.mid)
        with self._lock:
            self._inflight[published.mid] = (row_id, time.monotonic())
        self._sent_rows.add(row_id)
        self.published += 1
        return True

    def _resend_stale(self) -> None:
        now = time.monotonic()
        with self._lock:
            stale = [
                (mid, rid)
                for mid, (rid, at) in self._inflight.items()
                if now - at > self.settings.ack_timeout_s
            ]
            for mid, _ in stale:
                del self._inflight[mid]
        for _, rid in stale:
            self._sent_rows.discard(rid)
            row = self.outbox.get(rid)
            if row is not None:
                log.warning(
                    "outbox row %s not acknowledged in %.0fs; sending it again",
                    rid,
                    self.settings.ack_timeout_s,
                )
                self._send(row.id, row.topic, row.payload)

    def _fill_window(self) -> None:
        if time.monotonic() < self._hold_until:
            return
        if self._rewind_to is not None:
            self._cursor = min(self._cursor, self._rewind_to - 1)
            self._rewind_to = None
        room = self.settings.window - self.in_flight
        while room > 0 and self.bus.connected:
            batch = self.outbox.after(self._cursor, room)
            if not batch:
                return
            for row in batch:
                if row.id in self._sent_rows:
                    self._cursor = row.id
                    continue
                if not self._send(row.id, row.topic, row.payload):
                    return
                self._cursor = row.id
                room -= 1
