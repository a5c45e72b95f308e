"""Store-and-forward: every message is written to a local SQLite outbox before it is published,
and deleted only after the broker's PUBACK.

- ``Outbox`` is the durable queue (WAL, ``synchronous=FULL``: a committed row survives kill -9
  and power loss). Events get their per-device ``seq`` in the same transaction that stores
  them, so ``seq`` order is publishing order. It is bounded by rows, bytes and age; eviction
  is logged, counted and goes by rank: ``update`` events first, then command results,
  ``cleared``, ``new``, and events of safety kinds (``OutboxSettings.safety_kinds``) last;
  oldest first within a rank. Age never evicts a safety event.
- ``OutboxPublisher`` is the device's only publisher of queued messages: while connected it
  keeps at most ``window`` publishes in flight, oldest first, and a row leaves the queue when
  its PUBACK arrives. After a reconnect paho re-sends the in-flight ones itself and the
  publisher continues after them; a new process replays the whole backlog in order. A
  publish not acknowledged within ``ack_timeout_s`` while connected is sent again (the
  dispatcher is idempotent on ``event_id``, so a duplicate costs nothing).
- A PUBACK that says "No matching subscribers" (no dispatcher subscribed yet, or a restarted
  Mosquitto 2.0 that did not restore the dispatchers' shared subscription) keeps the row: the
  publisher pauses, backing off from 1 s to 30 s, and then replays from the oldest such row,
  in order, one message at a time until one is routed (so a dispatcher that subscribes in
  the middle of a window does not get newer rows before older ones); any routed PUBACK ends
  the pause at once. Every (re)connect starts the same way: one message, then the window.
- A PUBACK is not always delivery. A broker killed before it saved what it acknowledged loses
  it, and a restarted Mosquitto 2.0 routes a publish to no dispatcher until the dispatchers
  have subscribed again, yet answers "success" if any other session (a monitoring client, a
  persistent test listener) subscribes to the topic. So an acknowledged row moves to the
  ``acknowledged`` table for a while: rows acknowledged within ``resend_before_loss_s``
  before a connection was lost are sent again (first, in order) after the reconnect, and
  rows acknowledged in the first ``resend_after_connect_s`` of a connection are sent again
  once that time has passed. The cost is a few duplicates per reconnect.
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
ROW_COLUMNS = "id, topic, payload, size, created_at, rank, event_id, kind, state"
PURGE_EVERY_S = 1.0
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
CREATE TABLE IF NOT EXISTS acknowledged (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    rank INTEGER NOT NULL,
    event_id TEXT,
    kind TEXT,
    state TEXT,
    acked_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS acknowledged_at ON acknowledged (acked_at);
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
        """Delete rows from the queue without keeping them; returns how many were still there."""
        return self._take(row_ids, keep=False)

    def acknowledge(self, row_ids: list[int]) -> int:
        """Take acknowledged rows out of the queue into the ``acknowledged`` table, where they
        wait to be sent again (``replay``) or purged; returns how many were still queued."""
        return self._take(row_ids, keep=True)

    def _take(self, row_ids: list[int], keep: bool) -> int:
        """Delete queued rows (copied to ``acknowledged`` first when ``keep``), in one
        transaction; returns how many were still queued."""
        if not row_ids:
            return 0
        at = self.clock.now().timestamp()
        taken, freed = 0, 0
        with self._lock:
            with self._transaction() as db:
                for rid in row_ids:
                    if keep:
                        db.execute(
                            f"INSERT OR REPLACE INTO acknowledged ({ROW_COLUMNS}, acked_at)"
                            f" SELECT {ROW_COLUMNS}, ? FROM outbox WHERE id = ?",
                            (at, rid),
                        )
                    r = db.execute(
                        "DELETE FROM outbox WHERE id = ? RETURNING size", (rid,)
                    ).fetchone()
                    if r is not None:
                        taken += 1
                        freed += int(r[0])
            self._count -= taken
            self._bytes -= freed
        return taken

    def replay(self, since: float) -> list[int]:
        """Put the rows acknowledged at or after ``since`` (the clock's timestamp) back in the
        queue, in their old places; returns their ids, oldest first."""
        with self._lock:
            with self._transaction() as db:
                rows = db.execute(
                    f"INSERT INTO outbox ({ROW_COLUMNS}) SELECT {ROW_COLUMNS} FROM acknowledged"
                    " WHERE acked_at >= ? ORDER BY id RETURNING id, size",
                    (since,),
                ).fetchall()
                db.execute("DELETE FROM acknowledged WHERE acked_at >= ?", (since,))
            self._count += len(rows)
            self._bytes += sum(int(r[1]) for r in rows)
        return sorted(int(r[0]) for r in rows)

    def purge_acknowledged(self, before: float) -> int:
        """Forget rows acknowledged before ``before`` for good; returns how many."""
        with self._lock:
            query = "FROM acknowledged WHERE acked_at < ?"
            if self._db.execute(f"SELECT 1 {query} LIMIT 1", (before,)).fetchone() is None:
                return 0  # no write transaction when there is nothing to forget
            with self._transaction() as db:
                n = db.execute(f"DELETE {query}", (before,)).rowcount
        return int(n)

    def newest_acknowledgement(self) -> float | None:
        """When the newest row still kept as acknowledged was acknowledged (clock timestamp)."""
        with self._lock:
            value = self._db.execute("SELECT MAX(acked_at) FROM acknowledged").fetchone()[0]
        return None if value is None else float(value)

    @property
    def kept_acknowledged(self) -> int:
        """Acknowledged rows kept for sending again."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM acknowledged").fetchone()[0])

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


@dataclass(frozen=True)
class _Ack:
    """The broker's answer to one publish: routed (True), refused (False), or no subscriber
    (None)."""

    mid: int
    outcome: bool | None


@dataclass(frozen=True)
class _Link:
    """The connection came up or went down, at ``at`` (the outbox clock's timestamp)."""

    up: bool
    at: float


class OutboxPublisher:
    """Publishes the outbox in order over a ``BusClient``; a row leaves the queue on PUBACK."""

    def __init__(self, outbox: Outbox, bus: BusClient, settings: OutboxSettings) -> None:
        self.outbox = outbox
        self.bus = bus
        self.settings = settings
        self.published = 0
        self.acknowledged = 0
        self.unrouted = 0
        self.resent = 0  # acknowledged rows put back in the queue to be sent again
        self._inflight: dict[int, tuple[int, float]] = {}  # mid -> (row id, sent at)
        self._sent_rows: set[int] = set()
        self._cursor = 0
        # Broker answers and connection changes, in the order the network thread saw them.
        self._news: deque[_Ack | _Link] = deque()
        self._rewind_to: int | None = None
        self._hold_until = 0.0
        self._backoff = UNROUTED_BACKOFF_MIN_S
        self._probing = True  # one message in flight until one is routed
        self._keep = settings.resend_before_loss_s > 0 or settings.resend_after_connect_s > 0
        # When the last connection was lost (a new process: when it last heard a PUBACK).
        self._lost_at: float | None = outbox.newest_acknowledgement()
        self._settle: tuple[float, float] | None = None  # (monotonic due, connected at)
        self._up = False
        self._purged_at = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
        bus.on_acknowledged(self._on_ack)
        bus.on_unrouted(self._on_unrouted)
        bus.on_connected(lambda _present: self._on_link(True))
        bus.on_disconnected(lambda _reason: self._on_link(False))

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

    @property
    def settling(self) -> bool:
        """True while what the current connection's broker acknowledged may still be sent
        again (its first ``resend_after_connect_s``)."""
        return self._settle is not None or any(isinstance(n, _Link) for n in list(self._news))

    def _on_ack(self, mid: int, ok: bool) -> None:
        self._news.append(_Ack(mid, ok))
        self._wake.set()

    def _on_unrouted(self, mid: int) -> None:
        self._news.append(_Ack(mid, None))
        self._wake.set()

    def _on_link(self, up: bool) -> None:
        self._news.append(_Link(up, self.outbox.clock.now().timestamp()))
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5 if time.monotonic() >= self._hold_until else 0.25)
            self._wake.clear()
            try:
                self._take_news()
                self._purge()
                if self.bus.connected:
                    self._resend_settled()
                    self._resend_stale()
                    self._fill_window()
            except Exception:
                log.exception("outbox publisher failed; retrying")
                self._stop.wait(1)

    def _take_news(self) -> None:
        done: list[int] = []
        unrouted: list[int] = []
        while self._news:
            news = self._news.popleft()
            if isinstance(news, _Link):
                self._settle_acks(done, unrouted)
                done, unrouted = [], []
                self._link_changed(news)
                continue
            with self._lock:
                entry = self._inflight.pop(news.mid, None)
            if entry is None:
                continue
            row_id = entry[0]
            self._sent_rows.discard(row_id)
            log.debug(
                "outbox row %s (mid %s): %s",
                row_id,
                news.mid,
                {None: "no subscriber", True: "acknowledged", False: "refused"}[news.outcome],
            )
            if news.outcome is None:
                unrouted.append(row_id)
            elif news.outcome:
                done.append(row_id)
            else:
                log.error("broker refused outbox row %s; moved to the rejected table", row_id)
                self.outbox.reject(row_id)
        self._settle_acks(done, unrouted)

    def _settle_acks(self, done: list[int], unrouted: list[int]) -> None:
        if done:
            settle = self.outbox.acknowledge if self._keep else self.outbox.remove
            self.acknowledged += settle(done)
        if unrouted:
            self.unrouted += len(unrouted)
            first = min(unrouted)
            self._rewind_to = first if self._rewind_to is None else min(self._rewind_to, first)
            self._hold_until = time.monotonic() + self._backoff
            self._probing = True
            log.warning(
                "broker has no subscriber for %d outbox messages (dispatcher not subscribed?);"
                " keeping them, replaying in %.0fs, one at a time until one is routed",
                len(unrouted),
                self._backoff,
            )
            self._backoff = min(self._backoff * 2, UNROUTED_BACKOFF_MAX_S)
        elif done:
            # Routed: someone subscribes now. Refused rows go again at once, in order.
            self._backoff = UNROUTED_BACKOFF_MIN_S
            self._hold_until = 0.0
            self._probing = False

    def _link_changed(self, link: _Link) -> None:
        s = self.settings
        was_up, self._up = self._up, link.up
        if not link.up:
            if was_up:
                self._lost_at = link.at
            self._settle = None
            return
        self._probing = True
        now = time.monotonic()
        with self._lock:  # paho sends these again itself now: their ack timeout starts over
            self._inflight = {mid: (rid, now) for mid, (rid, _) in self._inflight.items()}
        if s.resend_before_loss_s > 0 and self._lost_at is not None:
            self._resend(
                self._lost_at - s.resend_before_loss_s,
                f"acknowledged in the {s.resend_before_loss_s:g}s before the connection was lost:"
                " a broker that died before saving them has lost them",
            )
        self._lost_at = None
        if s.resend_after_connect_s > 0:
            self._settle = (now + s.resend_after_connect_s, link.at)

    def _resend_settled(self) -> None:
        """Once a connection is ``resend_after_connect_s`` old, send again what was
        acknowledged on it until then."""
        if self._settle is None or time.monotonic() < self._settle[0]:
            return
        self._resend(
            self._settle[1],
            f"acknowledged in the first {self.settings.resend_after_connect_s:g}s after"
            " connecting: a broker that had just restarted may have routed them to no dispatcher",
        )
        self._settle = None

    def _resend(self, since: float, why: str) -> None:
        ids = self.outbox.replay(since)
        if not ids:
            return
        self.resent += len(ids)
        self._rewind_to = ids[0] if self._rewind_to is None else min(self._rewind_to, ids[0])
        log.info("outbox: sending %d messages again (%s)", len(ids), why)

    def _purge(self) -> None:
        """Forget acknowledged rows that no resend rule can still want."""
        now = time.monotonic()
        if not self._keep or now - self._purged_at < PURGE_EVERY_S:
            return
        self._purged_at = now
        s = self.settings
        keep_from = self.outbox.clock.now().timestamp() - s.resend_before_loss_s
        if self._lost_at is not None:
            keep_from = min(keep_from, self._lost_at - s.resend_before_loss_s)
        if self._settle is not None:
            keep_from = min(keep_from, self._settle[1])
        self.outbox.purge_acknowledged(keep_from)

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
        if self._probing:  # one message alone until the broker routes one
            room = min(room, 1 - self.in_flight)
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
