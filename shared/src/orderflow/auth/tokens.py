"""Credential formats. API keys and session tokens are opaque random strings with a prefix
that says what they are (so a leaked one is easy to recognise and to grep for); only their
SHA-256 is stored, which suffices for 256-bit random secrets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

API_KEY_PREFIX = "ofk_"
SESSION_PREFIX = "ofs_"


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


@dataclass(frozen=True)
class NewApiKey:
    id: str
    secret: str

    @property
    def token(self) -> str:
        return f"{API_KEY_PREFIX}{self.id}_{self.secret}"


def new_api_key() -> NewApiKey:
    return NewApiKey(id=secrets.token_hex(6), secret=secrets.token_urlsafe(32))


def parse_api_key(token: str) -> tuple[str, str] | None:
    """`ofk_<id>_<secret>` -> (id, secret), or None when it is not shaped like a key."""
    if not token.startswith(API_KEY_PREFIX):
        return None
    key_id, sep, secret = token.removeprefix(API_KEY_PREFIX).partition("_")
    if not sep or len(key_id) != 12 or not secret or len(token) > 200:
        return None
    return key_id, secret


def new_session_token() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def new_password(length: int = 20) -> str:
    """A generated password for a first account (printed once by the set-up)."""
    return secrets.token_urlsafe(length)[:length]
