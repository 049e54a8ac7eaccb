"""Staff accounts, logins and CSRF tokens.

Passwords are hashed with Argon2id (argon2-cffi). A login is a random token in an HttpOnly,
SameSite=Strict cookie; the database keeps only the token's SHA-256, so logging out (deleting
the row) ends it everywhere. Each login has its own CSRF token, which every form carries.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from scalpscan.app.db import LoginSession, User, utcnow

__all__ = [
    "AuthError",
    "MIN_PASSWORD_LENGTH",
    "add_user",
    "check_password",
    "start_session",
    "find_session",
    "end_session",
    "tokens_match",
    "new_token",
]

#: Shortest password `add_user` accepts.
MIN_PASSWORD_LENGTH = 10
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,80}$")
_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the answer's timing the same.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AuthError(ValueError):
    """A staff account that cannot be created; the message says why."""


def new_token() -> str:
    """A random URL-safe token (256 bits)."""
    return secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_match(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens; False when either is missing."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def add_user(db: Session, name: str, password: str) -> User:
    """Create a staff account (the caller commits).

    Raises:
        AuthError: a bad or taken name, or a password shorter than `MIN_PASSWORD_LENGTH`.
    """
    if not _NAME.match(name):
        raise AuthError(f"user name {name!r}: use 1-80 letters, digits, '.', '_', '@' or '-'")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if db.scalar(select(User).where(User.name == name)) is not None:
        raise AuthError(f"user {name!r} exists already")
    user = User(name=name, password_hash=_hasher.hash(password))
    db.add(user)
    return user


def check_password(db: Session, name: str, password: str) -> User | None:
    """The user when the name and password match, else None."""
    user = db.scalar(select(User).where(User.name == name))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def start_session(db: Session, user: User, *, hours: float) -> tuple[str, LoginSession]:
    """Open a login for ``user``: returns the cookie's token and the row (the caller commits)."""
    token = new_token()
    now = utcnow()
    db.execute(delete(LoginSession).where(LoginSession.expires_at < now))
    login = LoginSession(token_hash=_digest(token), csrf=new_token(), user_id=user.id, created_at=now,
                         expires_at=now + dt.timedelta(hours=hours))
    db.add(login)
    return token, login


def find_session(db: Session, token: str | None) -> LoginSession | None:
    """The live login a cookie token belongs to, or None (unknown, logged out or expired)."""
    if not token or len(token) > 200:
        return None
    login = db.scalar(select(LoginSession).where(LoginSession.token_hash == _digest(token)))
    if login is None or login.expires_at < utcnow():
        return None
    return login


def end_session(db: Session, token: str | None) -> None:
    """Log out: the token stops working at once (the caller commits)."""
    if token:
        db.execute(delete(LoginSession).where(LoginSession.token_hash == _digest(token)))
