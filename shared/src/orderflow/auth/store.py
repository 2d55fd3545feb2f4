"""The identity store, schema `auth` in the services' database: every service reads it, so
a key revoked or an account locked is refused by all four at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ..db import Connection, Pool, migrate
from . import tokens

SCHEMA = "auth"


async def prepare(pool: Pool) -> None:
    """Create or upgrade the schema (idempotent, safe with replicas starting together)."""
    await migrate(pool, schema=SCHEMA, package="orderflow.auth", shared=False)


@dataclass(frozen=True)
class Account:
    username: str
    display_name: str
    email: str | None
    password_hash: str | None
    roles: tuple[str, ...]
    team: tuple[str, ...]
    disabled: bool
    failed_logins: int
    locked_until: datetime | None

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scopes: tuple[str, ...]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class Session:
    username: str
    csrf_token: str
    expires_at: datetime


def _account(row: asyncpg.Record) -> Account:
    return Account(
        username=row["username"],
        display_name=row["display_name"],
        email=row["email"],
        password_hash=row["password_hash"],
        roles=tuple(row["roles"]),
        team=tuple(row["team"]),
        disabled=row["disabled"],
        failed_logins=row["failed_logins"],
        locked_until=row["locked_until"],
    )


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scopes=tuple(row["scopes"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


# --- accounts -----------------------------------------------------------------------------


async def upsert_account(
    conn: Connection | Pool,
    *,
    username: str,
    display_name: str,
    roles: Sequence[str],
    team: Sequence[str] = (),
    email: str | None = None,
    password_hash: str | None = None,
) -> Account:
    row = await conn.fetchrow(
        """INSERT INTO auth.accounts (username, display_name, email, password_hash, roles, team)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (username) DO UPDATE SET
               display_name = EXCLUDED.display_name, email = EXCLUDED.email,
               password_hash = COALESCE(EXCLUDED.password_hash, accounts.password_hash),
               roles = EXCLUDED.roles, team = EXCLUDED.team, updated_at = now()
           RETURNING *""",
        username,
        display_name,
        email,
        password_hash,
        list(roles),
        list(team),
    )
    assert row is not None
    return _account(row)


async def get_account(conn: Connection | Pool, username: str) -> Account | None:
    row = await conn.fetchrow("SELECT * FROM auth.accounts WHERE username = $1", username)
    return _account(row) if row else None


async def list_accounts(conn: Connection | Pool) -> list[Account]:
    rows = await conn.fetch("SELECT * FROM auth.accounts ORDER BY username")
    return [_account(r) for r in rows]


async def set_password(conn: Connection | Pool, username: str, password_hash: str) -> bool:
    done = await conn.execute(
        """UPDATE auth.accounts SET password_hash = $2, failed_logins = 0, locked_until = NULL,
               updated_at = now() WHERE username = $1""",
        username,
        password_hash,
    )
    return done.endswith(" 1")


async def set_disabled(conn: Connection | Pool, username: str, disabled: bool) -> bool:
    done = await conn.execute(
        "UPDATE auth.accounts SET disabled = $2, updated_at = now() WHERE username = $1",
        username,
        disabled,
    )
    if disabled:
        await conn.execute("DELETE FROM auth.sessions WHERE username = $1", username)
    return done.endswith(" 1")


async def record_failed_login(
    conn: Connection | Pool, username: str, *, max_failures: int, lockout: timedelta
) -> None:
    """Count a failure; the `max_failures`-th in a row locks the account for `lockout`."""
    await conn.execute(
        """UPDATE auth.accounts SET
               failed_logins = failed_logins + 1,
               locked_until = CASE WHEN failed_logins + 1 >= $2 THEN now() + $3
                                   ELSE locked_until END
           WHERE username = $1""",
        username,
        max_failures,
        lockout,
    )


async def record_login(conn: Connection | Pool, username: str) -> None:
    await conn.execute(
        "UPDATE auth.accounts SET failed_logins = 0, locked_until = NULL WHERE username = $1",
        username,
    )


# --- API keys -----------------------------------------------------------------------------


async def create_api_key(
    conn: Connection | Pool,
    *,
    name: str,
    scopes: Sequence[str],
    created_by: str,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its token: the token is shown once and never stored."""
    new = tokens.new_api_key()
    row = await conn.fetchrow(
        """INSERT INTO auth.api_keys (id, name, secret_sha256, scopes, created_by, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
        new.id,
        name,
        tokens.digest(new.secret),
        list(scopes),
        created_by,
        expires_at,
    )
    assert row is not None
    return _key(row), new.token


async def list_api_keys(conn: Connection | Pool) -> list[ApiKey]:
    rows = await conn.fetch("SELECT * FROM auth.api_keys ORDER BY created_at")
    return [_key(r) for r in rows]


async def revoke_api_key(conn: Connection | Pool, name: str, *, by: str) -> ApiKey | None:
    row = await conn.fetchrow(
        """UPDATE auth.api_keys SET revoked_at = COALESCE(revoked_at, now()),
               revoked_by = COALESCE(revoked_by, $2)
           WHERE name = $1 RETURNING *""",
        name,
        by,
    )
    return _key(row) if row else None


async def find_api_key(conn: Connection | Pool, key_id: str, secret: str) -> ApiKey | None:
    """The key whose id and secret match, and that is neither revoked nor expired."""
    row = await conn.fetchrow("SELECT * FROM auth.api_keys WHERE id = $1", key_id)
    if row is None or not tokens.same(row["secret_sha256"], tokens.digest(secret)):
        return None
    key = _key(row)
    if not key.usable(datetime.now(UTC)):
        return None
    # last use to the minute: one write a minute per key, not one per request
    await conn.execute(
        """UPDATE auth.api_keys SET last_used_at = now()
           WHERE id = $1
             AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')""",
        key_id,
    )
    return key


# --- sessions -----------------------------------------------------------------------------


async def create_session(
    conn: Connection | Pool, *, username: str, ttl: timedelta, source: str | None
) -> tuple[str, Session]:
    token = tokens.new_session_token()
    csrf = tokens.new_password(32)
    row = await conn.fetchrow(
        """INSERT INTO auth.sessions (token_sha256, username, csrf_token, source, expires_at)
           VALUES ($1, $2, $3, $4, now() + $5) RETURNING expires_at""",
        tokens.digest(token),
        username,
        csrf,
        source,
        ttl,
    )
    assert row is not None
    return token, Session(username=username, csrf_token=csrf, expires_at=row["expires_at"])


async def find_session(conn: Connection | Pool, token: str) -> tuple[Session, Account] | None:
    row = await conn.fetchrow(
        """SELECT s.csrf_token, s.expires_at, a.*
           FROM auth.sessions s JOIN auth.accounts a USING (username)
           WHERE s.token_sha256 = $1 AND s.expires_at > now()""",
        tokens.digest(token),
    )
    if row is None:
        return None
    account = _account(row)
    return Session(account.username, row["csrf_token"], row["expires_at"]), account


async def end_session(conn: Connection | Pool, token: str) -> None:
    await conn.execute("DELETE FROM auth.sessions WHERE token_sha256 = $1", tokens.digest(token))


async def purge_expired_sessions(conn: Connection | Pool) -> None:
    await conn.execute("DELETE FROM auth.sessions WHERE expires_at < now() - interval '1 day'")


def account_view(account: Account) -> dict[str, Any]:
    return {
        "username": account.username,
        "display_name": account.display_name,
        "email": account.email,
        "roles": list(account.roles),
        "team": list(account.team),
        "disabled": account.disabled,
        "locked_until": account.locked_until,
        "has_password": account.password_hash is not None,
    }
