"""User accounts of the web app: seeded from the site (workers, supervisors) plus an admin."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.engine import RowMapping

from config.site import Site
from dispatcher.security import Role, hash_password
from dispatcher.store.schema import users
from dispatcher.tickets import insert_ignore

log = logging.getLogger(__name__)


def seed_users(conn: Connection, site: Site, at: datetime, admin_password: str | None) -> None:
    """Create missing accounts. Existing ones keep their (possibly changed) passwords."""
    wanted: list[tuple[str, Role, str, str | None]] = [
        (w.id, "worker", w.name, w.password.get_secret_value() if w.password else None)
        for w in site.workers
    ]
    wanted += [
        (s.id, "supervisor", s.name, s.password.get_secret_value() if s.password else None)
        for s in site.supervisors
    ]
    if admin_password:
        wanted.append(("admin", "admin", "Administrator", admin_password))
    existing = set(conn.execute(select(users.c.username)).scalars())
    for username, role, name, password in wanted:
        if username in existing:
            continue
        insert_ignore(
            conn,
            users,
            {
                "username": username,
                "role": role,
                "display_name": name,
                "password_hash": hash_password(password) if password else None,
                "token_version": 0,
                "created_at": at,
            },
        )
        if password is None:
            log.warning("account %s has no password; login disabled", username)


def set_position(conn: Connection, username: str, lat: float, lon: float, at: datetime) -> None:
    conn.execute(
        update(users).where(users.c.username == username).values(lat=lat, lon=lon, position_at=at)
    )


def worker_positions(conn: Connection) -> dict[str, tuple[float, float]]:
    rows = conn.execute(
        select(users.c.username, users.c.lat, users.c.lon).where(
            users.c.role == "worker", users.c.lat.is_not(None)
        )
    ).all()
    return {r.username: (r.lat, r.lon) for r in rows}


def find_user(conn: Connection, username: str) -> RowMapping | None:
    return conn.execute(select(users).where(users.c.username == username)).mappings().first()


def revoke_tokens(conn: Connection, username: str) -> int:
    """Invalidate every token of the account (logout everywhere); return the new version."""
    conn.execute(
        update(users)
        .where(users.c.username == username)
        .values(token_version=users.c.token_version + 1)
    )
    return int(
        conn.execute(select(users.c.token_version).where(users.c.username == username)).scalar_one()
    )


def set_password(conn: Connection, username: str, password: str) -> int:
    """Store a new password hash and revoke the account's tokens; return the new version."""
    conn.execute(
        update(users)
        .where(users.c.username == username)
        .values(password_hash=hash_password(password))
    )
    log.info("password changed for %s; its tokens are revoked", username)
    return revoke_tokens(conn, username)
