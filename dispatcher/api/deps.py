"""Typed dependencies of the routes: the dispatcher, the current user, role guards."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from dispatcher.security import BadToken, Role, read_token
from dispatcher.service import Dispatcher
from dispatcher.store.schema import users

log = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False)


def get_dispatcher(request: Request) -> Dispatcher:
    d: Dispatcher = request.app.state.dispatcher
    return d


DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


@dataclass(frozen=True)
class User:
    username: str
    role: Role
    display_name: str

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.username}"


def current_user(
    request: Request,
    d: DispatcherDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    token = creds.credentials if creds else request.query_params.get("access_token")
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not logged in",
                            headers={"WWW-Authenticate": "Bearer"})
    try:
        claims = read_token(token, secret=d.settings.secret_key.get_secret_value(), now=d.clock.now())
    except BadToken as exc:
        log.warning("denied: %s (%s %s)", exc, request.method, request.url.path)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc),
                            headers={"WWW-Authenticate": "Bearer"}) from exc
    with d.engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.username == claims.username)).mappings().first()
    if row is None or row["token_version"] != claims.version or row["role"] != claims.role:
        log.warning("denied: token for %s is no longer valid", claims.username)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token revoked",
                            headers={"WWW-Authenticate": "Bearer"})
    return User(row["username"], row["role"], row["display_name"])


CurrentUser = Annotated[User, Depends(current_user)]
