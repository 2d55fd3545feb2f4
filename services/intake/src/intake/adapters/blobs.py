"""Where attachment bytes live: an adapter, so another store (a shared filesystem, an
object store) can take PostgreSQL's place at the composition root.

PostgreSQL is the default (why: see migration 0002): content-addressed by SHA-256, written
in the attachment's own transaction, 256 KiB per row so neither side ever holds a file
whole."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import asyncpg

from orderflow.db import Connection, Pool, transaction

CHUNK_BYTES = 256 * 1024


class BlobStore(Protocol):
    async def put(
        self, conn: Connection, *, sha256: str, size: int, chunks: Iterable[bytes]
    ) -> bool:
        """Store the bytes in the caller's transaction; False when they were stored already."""
        ...

    def read(self, pool: Pool, *, sha256: str) -> AsyncIterator[bytes]:
        """The bytes, a chunk at a time."""
        ...

    async def discard_if_unused(self, pool: Pool, *, sha256: str) -> bool:
        """Remove bytes no attachment refers to any more; True when removed."""
        ...


class PostgresBlobStore:
    async def put(
        self, conn: Connection, *, sha256: str, size: int, chunks: Iterable[bytes]
    ) -> bool:
        # a concurrent upload of the same bytes waits here for the first to commit, then
        # finds them stored; if the first rolls back, this one stores them
        created = await conn.fetchval(
            "INSERT INTO blobs (sha256, size) VALUES ($1, $2) "
            "ON CONFLICT (sha256) DO NOTHING RETURNING true",
            sha256,
            size,
        )
        if not created:
            return False
        await conn.copy_records_to_table(
            "blob_chunks",
            records=((sha256, seq, data) for seq, data in enumerate(chunks)),
            columns=("sha256", "seq", "data"),
        )
        return True

    async def read(self, pool: Pool, *, sha256: str) -> AsyncIterator[bytes]:
        # one short query per chunk: a slow download holds no connection in between
        seq = 0
        while True:
            data = await pool.fetchval(
                "SELECT data FROM blob_chunks WHERE sha256 = $1 AND seq = $2", sha256, seq
            )
            if data is None:
                return
            yield bytes(data)
            seq += 1

    async def discard_if_unused(self, pool: Pool, *, sha256: str) -> bool:
        try:
            async with transaction(pool) as conn:
                removed = await conn.fetchval(
                    """DELETE FROM blobs b WHERE b.sha256 = $1
                         AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.sha256 = $1)
                       RETURNING true""",
                    sha256,
                )
        except asyncpg.ForeignKeyViolationError:
            # the same bytes were attached again meanwhile: they stay
            return False
        return bool(removed)
