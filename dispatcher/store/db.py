"""Engine setup for the ticket store (SQLite WAL by default, PostgreSQL for scale-out) and migrations."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# Any constant: the PostgreSQL advisory lock that serialises migrations between processes.
MIGRATION_LOCK_KEY = 0x67770000


_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_LOCK = threading.Lock()


def _writer_lock(url: str) -> threading.RLock:
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(url, threading.RLock())


class SqliteEngine(Engine):
    """An SQLite engine whose ``begin()`` takes the write lock at once (BEGIN IMMEDIATE), so
    read-modify-write transactions serialise without lock-upgrade failures, while
    ``connect()`` (reads) begins a deferred transaction that never waits for a writer (WAL).

    Writers of one process first queue on a Python lock: SQLite's own busy handler sleeps in
    steps of up to 100 ms while it waits, which added that much latency to every push and
    point whenever two threads wanted to write at once.
    """

    @contextlib.contextmanager
    def try_begin(self) -> Iterator[Connection | None]:
        """Like ``begin()`` when no other thread of this process is writing; else yields None
        at once (for work that can wait for a quieter moment)."""
        lock = _writer_lock(str(self.url))
        if not lock.acquire(blocking=False):
            yield None
            return
        try:
            with self.begin() as conn:
                yield conn
        finally:
            lock.release()

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        with _writer_lock(str(self.url)), self.connect() as conn:
            conn.info["immediate"] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop("immediate", None)


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys on every connection."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            # Pooled connections: closing the last connection to a WAL database checkpoints
            # and syncs it, which cost ~30 ms per transaction with a connection each time.
            pool_size=8,
            max_overflow=8,
        )
        engine.__class__ = SqliteEngine  # same state; only begin() differs

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("immediate") else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the database schema to the latest revision (idempotent; safe from several processes)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    log.info("ticket store schema is current (%s)", engine.url.render_as_string())


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"
