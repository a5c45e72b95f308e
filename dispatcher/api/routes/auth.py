"""Login: a username and password in, a signed expiring token out."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select

from dispatcher.api.deps import DispatcherDep
from dispatcher.api.models import LoginRequest, TokenPublic
from dispatcher.security import make_token, verify_password
from dispatcher.store.schema import users

log = logging.getLogger(__name__)
router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=TokenPublic, responses={401: {"description": "wrong login"}})
def login(body: LoginRequest, d: DispatcherDep) -> TokenPublic:
    with d.engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.username == body.username)).mappings().first()
    if row is None or not verify_password(body.password, row["password_hash"]):
        log.warning("denied: failed login for %r", body.username[:64])
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password")
    token, expires = make_token(
        username=row["username"],
        role=row["role"],
        version=row["token_version"],
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
