"""Typed dependencies of the routes: the dispatcher, the current user, what they may see, role guards."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import ColumnElement, false, true

from config.site import Site
from dispatcher.accounts import find_user, is_disabled
from dispatcher.security import BadToken, Role, read_token
from dispatcher.service import Dispatcher
from dispatcher.store.schema import tickets

log = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False, description="the access_token from POST /auth/login")


def get_dispatcher(request: Request) -> Dispatcher:
    d: Dispatcher = request.app.state.dispatcher
    return d


DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


@dataclass(frozen=True)
class User:
    """A logged-in person and the part of the site they may see.

    ``streets``/``grids`` are None for the admin (everything); a supervisor has their streets
    and those streets' grid cells; a worker sees only tickets assigned to them.
    """

    username: str
    role: Role
    display_name: str
    streets: frozenset[str] | None
    grids: frozenset[str] | None
    home_grid: str | None = None

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.username}"

    def oversees_grid(self, grid_id: str | None) -> bool:
        """True for the admin, and for a supervisor whose streets hold the cell."""
        if self.role == "admin":
            return True
        return self.role == "supervisor" and grid_id is not None and grid_id in (self.grids or ())

    def tickets_visible(self) -> ColumnElement[bool]:
        """The tickets this user may see: a worker their own, a supervisor their streets'."""
        if self.role == "admin":
            return true()
        if self.role == "worker":
            return tickets.c.worker_id == self.username
        return tickets.c.street_id.in_(sorted(self.streets)) if self.streets else false()


def user_from_row(username: str, role: Role, display_name: str, site: Site) -> User:
    if role == "admin":
        return User(username, role, display_name, None, None)
    if role == "supervisor":
        sup = next((s for s in site.supervisors if s.id == username), None)
        streets = frozenset(sup.streets) if sup else frozenset()
        grids = frozenset(g.id for g in site.grids if g.street in streets)
        return User(username, role, display_name, streets, grids)
    worker = next((w for w in site.workers if w.id == username), None)
    return User(
        username, role, display_name, frozenset(), frozenset(), worker.grid if worker else None
    )


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def invalid(loc: tuple[str, ...], message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, so every 422 reads the same."""
    return HTTPException(422, [{"loc": list(loc), "msg": message, "type": "value_error"}])


def current_user(
    request: Request,
    d: DispatcherDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The user of the bearer token. Tokens come only in the Authorization header (never in
    URLs, which end up in logs and browser history)."""
    if creds is None or not creds.credentials:
        log.warning("denied: no token (%s %s)", request.method, request.url.path)
        raise unauthorized("not logged in")
    try:
        claims = read_token(
            creds.credentials, secret=d.settings.secret_key.get_secret_value(), now=d.clock.now()
        )
    except BadToken as exc:
        log.warning("denied: %s (%s %s)", exc, request.method, request.url.path)
        raise unauthorized(str(exc)) from exc
    with d.engine.connect() as conn:
        row = find_user(conn, claims.username)
    if row is not None and is_disabled(row):
        log.warning(
            "denied: account %s is disabled (%s %s)",
            claims.username,
            request.method,
            request.url.path,
        )
        raise unauthorized("account disabled")
    if row is None or row["token_version"] != claims.version or row["role"] != claims.role:
        log.warning(
            "denied: token for %s is no longer valid (%s %s)",
            claims.username,
            request.method,
            request.url.path,
        )
        raise unauthorized("token revoked")
    request.state.token_claims = claims
    return user_from_row(row["username"], row["role"], row["display_name"], d.site)


CurrentUser = Annotated[User, Depends(current_user)]


def require(*roles: Role) -> Callable[[Request, User], User]:
    """A dependency that lets only the given roles through (403 for the others, logged)."""

    def guard(request: Request, user: CurrentUser) -> User:
        if user.role not in roles:
            log.warning("denied: %s may not %s %s", user.actor, request.method, request.url.path)
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"only for {' or '.join(roles)}")
        return user

    return guard


WorkerUser = Annotated[User, Depends(require("worker"))]
SupervisorUser = Annotated[User, Depends(require("supervisor", "admin"))]
AdminUser = Annotated[User, Depends(require("admin"))]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


ClientAddress = Annotated[str, Depends(client_address)]
