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


@dataclass(frozen=True)
class LoginLock:
    """Why a login may not be tried now, and for how many more seconds."""

    seconds: float
    reason: str


class LoginThrottle:
    """Failed-login limits, kept in this process's memory. Within ``window_s``:

    - ``max_failures`` for one username from one address lock that pair for ``lockout_s``;
    - ``max_per_address`` across usernames lock the address for ``lockout_s`` (spraying);
    - ``max_per_account`` for one username from any addresses lock the account for
      ``account_lockout_s`` (guesses spread over many addresses). Anyone can set this lock off,
      so it is short: while the failures in the window stay at the limit, each new one locks
      again, which holds guessing to about ``max_per_account`` per window. Addresses the
      account logged in from successfully within ``known_s`` are not held by it, so an
      attacker cannot lock a worker out of the phone the worker already uses.

    Several dispatcher processes each keep their own counts, so the effective limits are per
    process.
    """

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 300,
        lockout_s: float = 300,
        max_per_address: int = 100,
        max_per_account: int = 20,
        account_lockout_s: float = 60,
        known_s: float = 30 * 24 * 3600,
        max_keys: int = 10_000,
    ) -> None:
        self.max_failures, self.window_s, self.lockout_s = max_failures, window_s, lockout_s
        self.max_per_address, self.max_keys = max_per_address, max_keys
        self.max_per_account, self.account_lockout_s = max_per_account, account_lockout_s
        self.known_s = known_s
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, str], _Failures] = {}
        self._addresses: dict[str, _Failures] = {}
        self._accounts: dict[str, _Failures] = {}
        self._known: dict[tuple[str, str], float] = {}

    def retry_after(self, username: str, address: str, now: float) -> LoginLock | None:
        """The longest lock on this login, or None when it may be tried now."""
        with self._lock:
            candidates = [
                (
                    self._pairs.get((username, address)),
                    "too many failed logins for this account from this address",
                ),
                (self._addresses.get(address), "too many failed logins from this address"),
            ]
            known_at = self._known.get((username, address))
            if known_at is None or now - known_at >= self.known_s:
                candidates.append(
                    (self._accounts.get(username), "too many failed logins for this account")
                )
        locks = [
            LoginLock(f.locked_until - now, reason)
            for f, reason in candidates
            if f is not None and f.locked_until > now
        ]
        return max(locks, key=lambda lock: lock.seconds) if locks else None

    def failed(self, username: str, address: str, now: float) -> None:
        with self._lock:
            if len(self._pairs) + len(self._addresses) + len(self._accounts) > self.max_keys:
                self._prune(now)
            pair = self._pairs.setdefault((username, address), _Failures([]))
            self._count(pair, now, self.max_failures, self.lockout_s)
            address_failures = self._addresses.setdefault(address, _Failures([]))
            self._count(address_failures, now, self.max_per_address, self.lockout_s)
            account = self._accounts.setdefault(username, _Failures([]))
            self._count(account, now, self.max_per_account, self.account_lockout_s)

    def _count(self, f: _Failures, now: float, limit: int, lockout_s: float) -> None:
        f.times = [t for t in f.times if now - t < self.window_s] + [now]
        if len(f.times) >= limit:
            f.locked_until = now + lockout_s

    def succeeded(self, username: str, address: str, now: float) -> None:
        """Forget this pair's failures and remember the address as one the account uses.

        The account's failures from elsewhere stay counted: a success here says nothing about
        the guesses made from other addresses.
        """
        with self._lock:
            self._pairs.pop((username, address), None)
            self._known.pop((username, address), None)
            self._known[(username, address)] = now
            while len(self._known) > self.max_keys:
                del self._known[next(iter(self._known))]

    def _stale(self, f: _Failures, now: float) -> bool:
        return f.locked_until <= now and all(now - t >= self.window_s for t in f.times)

    def _prune(self, now: float) -> None:
        for pair in [k for k, f in self._pairs.items() if self._stale(f, now)]:
            del self._pairs[pair]
        for address in [k for k, f in self._addresses.items() if self._stale(f, now)]:
            del self._addresses[address]
        for username in [k for k, f in self._accounts.items() if self._stale(f, now)]:
            del self._accounts[username]
