"""User accounts of the web app: seeded from the site (workers, supervisors) plus an admin.

An account is disabled by prefixing its password hash with ``!`` (as ``passwd -l`` does): no
password matches it, its tokens are revoked, and enabling it again restores the old password.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.engine import RowMapping

from config.site import Site
from dispatcher.security import Role, hash_password
from dispatcher.store.schema import users
from dispatcher.tickets import insert_ignore

log = logging.getLogger(__name__)

DISABLED = "!"
"""The prefix of a disabled account's password hash."""
SITE_ROLES: tuple[Role, ...] = ("worker", "supervisor")


def seed_users(conn: Connection, site: Site, at: datetime, admin_password: str | None) -> None:
    """Create missing accounts; existing ones keep their (possibly changed) passwords.

    Workers and supervisors no longer in the site file are disabled (their tokens revoked). One
    who comes back stays disabled until the admin enables the account again.
    """
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
    in_site = {username for username, *_ in wanted}
    for row in conn.execute(select(users).where(users.c.role.in_(SITE_ROLES))).mappings().all():
        if row["username"] in in_site:
            if is_disabled(row):
                log.warning(
                    "account %s is in the site file but disabled; the admin can enable it",
                    row["username"],
                )
        elif not is_disabled(row):
            set_disabled(conn, row["username"], True)
            log.warning(
                "%s %s is no longer in the site file: account disabled, its tokens revoked",
                row["role"],
                row["username"],
            )


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
    """Store a new password hash and revoke the account's tokens; return the new version.

    A disabled account stays disabled (with the new password once it is enabled)."""
    row = find_user(conn, username)
    new_hash = hash_password(password)
    if row is not None and is_disabled(row):
        new_hash = DISABLED + new_hash
    conn.execute(update(users).where(users.c.username == username).values(password_hash=new_hash))
    log.info("password changed for %s; its tokens are revoked", username)
    return revoke_tokens(conn, username)


def is_disabled(row: Mapping[Any, Any]) -> bool:
    return str(row["password_hash"] or "").startswith(DISABLED)


def set_disabled(conn: Connection, username: str, disabled: bool) -> bool:
    """Disable (revoking every token) or enable an account; False when nothing changed."""
    row = find_user(conn, username)
    if row is None or is_disabled(row) == disabled:
        return False
    stored = str(row["password_hash"] or "")
    new_hash = DISABLED + stored if disabled else stored.removeprefix(DISABLED) or None
    conn.execute(update(users).where(users.c.username == username).values(password_hash=new_hash))
    if disabled:
        revoke_tokens(conn, username)
    return True
