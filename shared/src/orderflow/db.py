"""PostgreSQL access: a pool per service, its own schema, SQL migrations applied on start."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, TypeAlias

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger(__name__)

# Every connection comes from a pool, so repositories take the pool's proxy type.
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    # jsonb in and out as Python objects, so repositories never json.dumps by hand
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, schema: str, min_size: int = 1, max_size: int = 10) -> Pool:
    """A pool whose connections see the service's schema first on the search path."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        server_settings={"search_path": f"{schema},public", "application_name": schema},
        command_timeout=60,
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Nothing to undo when a connection goes back to the pool: asyncpg has already rolled
    back an open transaction and dropped its listeners; the services set nothing on the
    session (`SET LOCAL`, transaction-scoped advisory locks, listeners removed by their
    owners; the migration lock is released explicitly). asyncpg's default reset (advisory
    unlock, CLOSE ALL, UNLISTEN *, RESET ALL) is one more round trip on every release."""


@asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[Connection]:
    async with pool.acquire() as conn, conn.transaction():
        yield conn


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True)


async def migrate(pool: Pool, *, schema: str, package: str, shared: bool = True) -> list[str]:
    """Apply `<package>/migrations/*.sql` not yet applied, in name order, each in its own
    transaction. An advisory lock makes replicas starting together apply them once.

    The shared outbox and inbox tables come first (`orderflow.migrations`), so every
    service gets them in its schema; `shared=False` leaves them out (the `auth` schema).
    """
    applied: list[str] = []
    async with pool.acquire() as conn:
        # the lock comes first: two replicas running CREATE SCHEMA IF NOT EXISTS at the same
        # moment can both miss the schema and one fails on the catalogue's unique index
        await conn.execute("SELECT pg_advisory_lock($1)", _lock_key(schema))
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations (
                        name text PRIMARY KEY,
                        checksum text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                r["name"]: r["checksum"]
                for r in await conn.fetch(
                    f'SELECT name, checksum FROM "{schema}".schema_migrations'
                )
            }
            sources = ("orderflow", package) if shared else (package,)
            for source in dict.fromkeys(sources):
                files = resources.files(source).joinpath("migrations")
                for entry in sorted(files.iterdir(), key=lambda e: e.name):
                    if not entry.name.endswith(".sql"):
                        continue
                    name = f"{source}/{entry.name}"
                    sql = entry.read_text(encoding="utf-8")
                    checksum = hashlib.sha256(sql.encode()).hexdigest()
                    if name in done:
                        if done[name] != checksum:
                            raise RuntimeError(
                                f"migration {name} was changed after it was applied; "
                                "add a new migration instead"
                            )
                        continue
                    async with conn.transaction():
                        await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
                        await conn.execute(sql)
                        await conn.execute(
                            f'INSERT INTO "{schema}".schema_migrations (name, checksum) '
                            "VALUES ($1, $2)",
                            name,
                            checksum,
                        )
                    applied.append(name)
                    log.info("migration applied", schema=schema, migration=name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _lock_key(schema))
    return applied


def record(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None
