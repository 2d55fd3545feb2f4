"""Local account passwords: argon2id hashes (argon2-cffi's defaults follow RFC 9106)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# verified when the account does not exist, so an unknown name costs as much as a wrong
# password and timing does not tell which names exist
_DUMMY = _hasher.hash("orderflow: no such account")

MIN_LENGTH = 12
MAX_LENGTH = 256


def check_strength(password: str) -> str | None:
    """Why this password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"at most {MAX_LENGTH} characters"
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def verify(password_hash: str | None, password: str) -> bool:
    """Checked in a worker thread: argon2 takes tens of milliseconds by design."""
    target = password_hash or _DUMMY

    def check() -> bool:
        try:
            return _hasher.verify(target, password)
        except (VerificationError, InvalidHashError):
            return False

    ok = await asyncio.to_thread(check)
    return ok and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
