"""Password hashing (argon2) and signed, expiring access tokens (JWT, HS256)."""

from __future__ import annotations

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
