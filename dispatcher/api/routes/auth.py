"""Accounts: log in (rate-limited), log out, change password, who am I."""

from __future__ import annotations

import logging
import math
from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy.engine import RowMapping

from broker.mosquitto import DISPATCHER_ACCOUNT
from dispatcher import accounts
from dispatcher.api.deps import ClientAddress, CurrentUser, DispatcherDep, invalid
from dispatcher.api.models import ErrorPublic, LoginRequest, MePublic, PasswordChange, TokenPublic
from dispatcher.security import LoginThrottle, burn_verify_time, make_token, verify_password
from dispatcher.service import Dispatcher

log = logging.getLogger(__name__)
router = APIRouter(prefix="/auth", tags=["auth"])

WRONG_LOGIN = "wrong username or password"


def throttle(request: Request) -> LoginThrottle:
    t: LoginThrottle = request.app.state.login_throttle
    return t


def _token(d: Dispatcher, row: RowMapping, version: int) -> TokenPublic:
    token, expires = make_token(
        username=row["username"],
        role=row["role"],
        version=version,
        secret=d.settings.secret_key.get_secret_value(),
        now=d.clock.now(),
        ttl=timedelta(minutes=d.settings.token_ttl_minutes),
    )
    return TokenPublic(
        access_token=token,
        expires_at=expires,
        username=row["username"],
        role=row["role"],
        display_name=row["display_name"],
    )


def _refuse_if_locked(limiter: LoginThrottle, username: str, address: str, now: float) -> None:
    lock = limiter.retry_after(username, address, now)
    if lock is not None:
        log.warning(
            "denied: login for %r from %s is locked for %.0fs (%s)",
            username,
            address,
            lock.seconds,
            lock.reason,
        )
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed logins; try again later",
            headers={"Retry-After": str(max(1, math.ceil(lock.seconds)))},
        )


@router.post(
    "/login",
    response_model=TokenPublic,
    responses={
        401: {"model": ErrorPublic, "description": "wrong username or password"},
        429: {"model": ErrorPublic, "description": "too many failed logins; see Retry-After"},
    },
)
def login(
    body: LoginRequest, request: Request, d: DispatcherDep, address: ClientAddress
) -> TokenPublic:
    """Exchange a username and password for a signed token that expires.

    Device accounts (MQTT credentials) are refused: devices talk to the broker, not to this API.
    """
    limiter = throttle(request)
    now = d.clock.now().timestamp()
    _refuse_if_locked(limiter, body.username, address, now)
    if d.site.device(body.username) is not None or body.username == DISPATCHER_ACCOUNT:
        burn_verify_time()
        limiter.failed(body.username, address, now)
        log.warning(
            "denied: device account %r tried to log in to the HTTP API from %s",
            body.username,
            address,
        )
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, WRONG_LOGIN)
    with d.engine.connect() as conn:
        row = accounts.find_user(conn, body.username)
    disabled = row is not None and accounts.is_disabled(row)
    if row is None or disabled:
        burn_verify_time()
    if disabled:
        limiter.failed(body.username, address, now)
        log.warning("denied: login for disabled account %r from %s", body.username, address)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, WRONG_LOGIN)
    if row is None or not verify_password(body.password, row["password_hash"]):
        limiter.failed(body.username, address, now)
        log.warning("denied: failed login for %r from %s", body.username, address)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, WRONG_LOGIN)
    limiter.succeeded(body.username, address, now)
    log.info("%s logged in from %s", row["username"], address)
    return _token(d, row, row["token_version"])


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={401: {"model": ErrorPublic, "description": "not logged in"}},
)
def logout(d: DispatcherDep, user: CurrentUser) -> None:
    """End every session of this account: all its tokens stop working."""
    with d.engine.begin() as conn:
        accounts.revoke_tokens(conn, user.username)
    log.info("%s logged out", user.username)


@router.post(
    "/password",
    response_model=TokenPublic,
    responses={
        401: {"model": ErrorPublic, "description": "not logged in"},
        403: {"model": ErrorPublic, "description": "the current password is wrong"},
        429: {"model": ErrorPublic, "description": "too many wrong passwords; see Retry-After"},
    },
)
def change_password(
    body: PasswordChange,
    request: Request,
    d: DispatcherDep,
    user: CurrentUser,
    address: ClientAddress,
) -> TokenPublic:
    """Set a new password. Other sessions end; the answer is a fresh token for this one.

    Wrong current passwords count against the same limit as failed logins.
    """
    limiter = throttle(request)
    now = d.clock.now().timestamp()
    _refuse_if_locked(limiter, user.username, address, now)
    if body.new_password.strip().lower() == user.username.lower():
        raise invalid(("body", "new_password"), "the new password must not be the username")
    with d.engine.begin() as conn:
        row = accounts.find_user(conn, user.username)
        if row is None or not verify_password(body.current_password, row["password_hash"]):
            limiter.failed(user.username, address, now)
            log.warning("denied: %s gave a wrong current password from %s", user.actor, address)
            raise HTTPException(status.HTTP_403_FORBIDDEN, "the current password is wrong")
        version = accounts.set_password(conn, user.username, body.new_password)
    return _token(d, row, version)


@router.get(
    "/me",
    response_model=MePublic,
    responses={401: {"model": ErrorPublic, "description": "not logged in"}},
)
def me(d: DispatcherDep, user: CurrentUser) -> MePublic:
    all_grids = [g.id for g in d.site.grids]
    return MePublic(
        username=user.username,
        role=user.role,
        display_name=user.display_name,
        grid_id=user.home_grid,
        streets=sorted(user.streets)
        if user.streets is not None
        else [s.id for s in d.site.streets],
        grids=sorted(user.grids) if user.grids is not None else all_grids,
    )
