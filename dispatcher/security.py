"""Password hashing (argon2) and signed, expiring access tokens (JWT, HS256)."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

Role = Literal["worker", "supervisor", "admin"]
ALGORITHM = "HS256"
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    if not hashed:
        return False
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class TokenClaims:
    username: str
    role: Role
    version: int
    expires: datetime


def make_token(
    *, username: str, role: Role, version: int, secret: str, now: datetime, ttl: timedelta
) -> tuple[str, datetime]:
    expires = now + ttl
    token = jwt.encode(
        {"sub": username, "role": role, "ver": version, "iat": now, "exp": expires},
        secret,
        algorithm=ALGORITHM,
    )
    return token, expires


class BadToken(ValueError):
    """A token that is malformed, forged or expired."""


def read_token(token: str, *, secret: str, now: datetime) -> TokenClaims:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "role", "ver", "exp"], "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise BadToken(f"invalid token: {exc}") from exc
    expires = datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo)
    if expires <= now:
        raise BadToken("token expired")
    if claims["role"] not in ("worker", "supervisor", "admin"):
        raise BadToken("invalid token: unknown role")
    return TokenClaims(str(claims["sub"]), claims["role"], int(claims["ver"]), expires)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("gridwatch-dummy-password")


def burn_verify_time() -> None:
    """Spend as long as a real password check, so unknown usernames cannot be told by timing."""
    verify_password("not-the-password", _dummy_hash())


@dataclass
class _Failures:
    times: list[float]
    locked_until: float = 0.0


class LoginThrottle:
    """Failed-login limits, per username+client address and per client address, in this process.

    After ``max_failures`` failures within ``window_s`` for one username from one address, that
    pair is locked for ``lockout_s``; one address is locked after ``max_per_address`` failures
    across usernames (password spraying). State lives in memory: several dispatcher processes
    each keep their own counts, so the effective limit is per process.
    """

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 300,
        lockout_s: float = 300,
        max_per_address: int = 100,
        max_keys: int = 10_000,
    ) -> None:
        self.max_failures, self.window_s, self.lockout_s = max_failures, window_s, lockout_s
        self.max_per_address, self.max_keys = max_per_address, max_keys
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, str], _Failures] = {}
        self._addresses: dict[str, _Failures] = {}

    def retry_after(self, username: str, address: str, now: float) -> float | None:
        """Seconds until this login may be tried again, or None when it may be tried now."""
        with self._lock:
            waits = [
                f.locked_until - now
                for f in (self._pairs.get((username, address)), self._addresses.get(address))
                if f is not None and f.locked_until > now
            ]
        return max(waits) if waits else None

    def failed(self, username: str, address: str, now: float) -> None:
        with self._lock:
            if len(self._pairs) + len(self._addresses) > self.max_keys:
                self._prune(now)
            pair = self._pairs.setdefault((username, address), _Failures([]))
            self._count(pair, now, self.max_failures)
            self._count(
                self._addresses.setdefault(address, _Failures([])), now, self.max_per_address
            )

    def _count(self, f: _Failures, now: float, limit: int) -> None:
        f.times = [t for t in f.times if now - t < self.window_s] + [now]
        if len(f.times) >= limit:
            f.locked_until = now + self.lockout_s
            f.times = []

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._pairs.pop((username, address), None)

    def _stale(self, f: _Failures, now: float) -> bool:
        return f.locked_until <= now and all(now - t >= self.window_s for t in f.times)

    def _prune(self, now: float) -> None:
        for pair in [k for k, f in self._pairs.items() if self._stale(f, now)]:
            del self._pairs[pair]
        for address in [k for k, f in self._addresses.items() if self._stale(f, now)]:
            del self._addresses[address]
