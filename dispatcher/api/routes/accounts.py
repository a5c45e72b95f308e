"""Accounts, for the admin: list them, reset a password, disable and enable an account."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from sqlalchemy import Connection, select
from sqlalchemy.engine import RowMapping

from dispatcher import accounts
from dispatcher.api.deps import AdminUser, DispatcherDep, invalid
from dispatcher.api.models import AccountPublic, ErrorPublic, PasswordReset, Responses
from dispatcher.service import Dispatcher
from dispatcher.store.schema import users

log = logging.getLogger(__name__)
router = APIRouter(prefix="/accounts", tags=["accounts"])

ADMIN_ONLY: Responses = {
    401: {"model": ErrorPublic, "description": "not logged in, or the token expired"},
    403: {"model": ErrorPublic, "description": "only the admin manages accounts"},
}
ONE: Responses = ADMIN_ONLY | {404: {"model": ErrorPublic, "description": "no such account"}}
Username = Annotated[str, Path(min_length=1, max_length=64, description="the account's username")]


def _public(d: Dispatcher, row: RowMapping) -> AccountPublic:
    listed = {w.id for w in d.site.workers} | {s.id for s in d.site.supervisors}
    return AccountPublic(
        username=row["username"],
        role=row["role"],
        display_name=row["display_name"],
        disabled=accounts.is_disabled(row),
        has_password=bool(str(row["password_hash"] or "").removeprefix(accounts.DISABLED)),
        in_site=row["role"] == "admin" or row["username"] in listed,
        created_at=row["created_at"],
    )


def _existing(conn: Connection, username: str) -> RowMapping:
    row = accounts.find_user(conn, username)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"account {username!r} not found")
    return row


@router.get("", response_model=list[AccountPublic], responses=ADMIN_ONLY)
def list_accounts(d: DispatcherDep, user: AdminUser) -> list[AccountPublic]:
    """Every account, with whether it is disabled and whether the site file still lists it."""
    with d.engine.connect() as conn:
        rows = conn.execute(select(users).order_by(users.c.role, users.c.username)).mappings()
        return [_public(d, r) for r in rows]


@router.post("/{username}/password", response_model=AccountPublic, responses=ONE)
def reset_password(
    username: Username, body: PasswordReset, d: DispatcherDep, user: AdminUser
) -> AccountPublic:
    """Give the account a new password; every token of it stops working. A disabled account
    stays disabled."""
    if body.new_password.strip().lower() == username.lower():
        raise invalid(("body", "new_password"), "the new password must not be the username")
    with d.engine.begin() as conn:
        _existing(conn, username)
        accounts.set_password(conn, username, body.new_password)
        row = _existing(conn, username)
    log.info("%s reset the password of %s; its tokens are revoked", user.actor, username)
    return _public(d, row)


@router.post(
    "/{username}/disable",
    response_model=AccountPublic,
    responses=ONE
    | {409: {"model": ErrorPublic, "description": "the admin cannot disable their own account"}},
)
def disable_account(username: Username, d: DispatcherDep, user: AdminUser) -> AccountPublic:
    """No more logins for the account, and every token of it stops working now."""
    if username == user.username:
        raise HTTPException(status.HTTP_409_CONFLICT, "you cannot disable your own account")
    with d.engine.begin() as conn:
        _existing(conn, username)
        changed = accounts.set_disabled(conn, username, True)
        row = _existing(conn, username)
    if changed:
        log.warning("%s disabled account %s; its tokens are revoked", user.actor, username)
    return _public(d, row)


@router.post("/{username}/enable", response_model=AccountPublic, responses=ONE)
def enable_account(username: Username, d: DispatcherDep, user: AdminUser) -> AccountPublic:
    """Let the account log in again, with the password it had (or a reset one)."""
    with d.engine.begin() as conn:
        _existing(conn, username)
        changed = accounts.set_disabled(conn, username, False)
        row = _existing(conn, username)
    if changed:
        log.warning("%s enabled account %s", user.actor, username)
    return _public(d, row)
