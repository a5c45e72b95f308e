"""The ticket store: migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from dispatcher.store.db import alembic_config, make_engine, migrate, sqlite_url
from dispatcher.store.schema import metadata


def schema_drift(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    url = (
        sqlite_url(tmp_path / "d.db")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    e = make_engine(url)
    request.addfinalizer(e.dispose)
    return e


def test_migrations_match_the_declared_tables(engine: Engine) -> None:
    migrate(engine)
    migrate(engine)  # a second run is a no-op
    assert schema_drift(engine) == []
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_downgrade_and_upgrade_again(engine: Engine) -> None:
    migrate(engine)
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert "incident_tracks" not in inspect(engine).get_table_names()
    migrate(engine)
    assert schema_drift(engine) == []


def test_processes_starting_together_migrate_once(pg_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        e = make_engine(pg_url)
        try:
            migrate(e)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            e.dispose()

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    e = make_engine(pg_url)
    assert schema_drift(e) == []
    e.dispose()
