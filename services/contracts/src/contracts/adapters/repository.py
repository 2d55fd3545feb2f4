"""Contracts and their numbers in PostgreSQL (schema `contracts`): the handlers' `Store` of
one transaction, and the renderer's claims on the contracts waiting to be typeset."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from orderflow import outbox
from orderflow.db import Connection, Pool, transaction
from orderflow.messages import Message

from ..domain import (
    SUPERSEDABLE,
    ContractContent,
    ContractStatus,
    DocumentKind,
    PendingRender,
    stored,
)
from ..store import Begin, Contract, Document, NewDocument, Newest, Store

#: Notified when a contract waits to be typeset.
RENDER_CHANNEL = "contracts_render"

_COLUMNS = """id, number, order_id, revision, status, content, content_version, language,
              salesperson_id, currency, total, drafted_at, status_changed_at, superseded_by,
              document_sha256, sent_at, sent_by, signed_at, signed_copy_sha256, voided_at,
              void_reason, voided_by"""

#: Per status a contract moves to: the column of its time and the others it sets.
_MARKED: dict[ContractStatus, tuple[str, tuple[str, ...]]] = {
    ContractStatus.SENT: ("sent_at", ("sent_by",)),
    ContractStatus.SIGNED: ("signed_at", ("signed_copy_sha256",)),
    ContractStatus.VOIDED: ("voided_at", ("void_reason", "voided_by")),
}


def _contract(row: asyncpg.Record) -> Contract:
    values = dict(row)
    values["status"] = ContractStatus(values["status"])
    values["content"] = ContractContent.model_validate(values["content"])
    return Contract(**values)


def store_of(conn: Connection | Store) -> Store:
    """The store of the caller's transaction (a handler is given a connection by the runtime,
    a store by a unit test)."""
    if isinstance(conn, PoolConnectionProxy | asyncpg.Connection):
        return PostgresStore(conn)
    return conn


def reader(pool: Pool | Store) -> Store:
    """A store for reads outside a transaction (the HTTP routes), or the unit test's own."""
    return PostgresStore(pool) if isinstance(pool, asyncpg.Pool) else pool


def transactions(pool: Pool) -> Begin:
    """New transactions on the pool, each with its store."""

    @asynccontextmanager
    async def begin() -> AsyncIterator[Store]:
        async with transaction(pool) as conn:
            yield PostgresStore(conn)

    return begin


class PostgresStore:
    """The `Store` of one transaction (or, for reads, of the pool): the caller's connection,
    the outbox in the same transaction."""

    def __init__(self, conn: Connection | Pool) -> None:
        self._conn = conn

    async def lock_order(self, *, order_id: UUID) -> None:
        """Serialise drafting for one order until the transaction ends, so two approvals of
        it (two revisions, or one delivered twice) are decided one after the other."""
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", str(order_id)
        )

    async def revisions(self, *, order_id: UUID) -> list[int]:
        rows = await self._conn.fetch(
            """SELECT revision FROM contracts WHERE order_id = $1
               UNION ALL SELECT revision FROM contract_renders WHERE order_id = $1""",
            order_id,
        )
        return [int(r["revision"]) for r in rows]

    async def _next_number(self, *, key: int) -> int:
        """The counter's next number, inside the caller's transaction: the row stays locked
        until it ends (for a few milliseconds, decision 0026) and a rollback gives it back."""
        seq: int = await self._conn.fetchval(
            """INSERT INTO contract_number_sequences AS s (year, next_seq) VALUES ($1, 2)
               ON CONFLICT (year) DO UPDATE SET next_seq = s.next_seq + 1
               RETURNING next_seq - 1""",
            key,
        )
        return seq

    async def take_number(self, *, key: int) -> int:
        """Either way inside the caller's (short) transaction, so a rollback gives the number
        back."""
        released: int | None = await self._conn.fetchval(
            """DELETE FROM contract_numbers_released
               WHERE (year, seq) = (SELECT year, seq FROM contract_numbers_released
                                    WHERE year = $1 ORDER BY seq LIMIT 1
                                    FOR UPDATE SKIP LOCKED)
               RETURNING seq""",
            key,
        )
        return released if released is not None else await self._next_number(key=key)

    async def release_number(self, *, key: int, seq: int) -> None:
        await self._conn.execute(
            "INSERT INTO contract_numbers_released (year, seq) VALUES ($1, $2)", key, seq
        )

    async def add_pending(
        self,
        *,
        contract_id: UUID,
        content: ContractContent,
        key: int,
        seq: int,
        delivery: dict[str, Any] | None,
    ) -> None:
        await self._conn.execute(
            """INSERT INTO contract_renders (id, number, order_id, revision, content,
                                             number_key, number_seq, delivery)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            contract_id,
            content.number,
            content.order_id,
            content.revision,
            stored(content),
            key,
            seq,
            delivery,
        )
        # heard by every replica's renderer once this transaction commits
        await self._conn.execute("SELECT pg_notify($1, '')", RENDER_CHANNEL)

    async def take_pending(self, *, contract_id: UUID) -> bool:
        """In the transaction that stores the contract or gives it up; False when another
        replica, whose lease had run out, took it first."""
        taken = await self._conn.fetchval(
            "DELETE FROM contract_renders WHERE id = $1 RETURNING true", contract_id
        )
        return bool(taken)

    async def render_failed(self, *, contract_id: UUID, retry_in: float) -> int:
        """Count a failed typesetting and let the contract be tried again after `retry_in`."""
        attempts: int = await self._conn.fetchval(
            """UPDATE contract_renders SET attempts = attempts + 1,
                                           claimed_until = now() + make_interval(secs => $2)
               WHERE id = $1 RETURNING attempts""",
            contract_id,
            retry_in,
        )
        return attempts

    async def forget_delivery(self, *, consumer: str, message_id: str) -> None:
        await self._conn.execute(
            "DELETE FROM inbox WHERE consumer = $1 AND message_id = $2", consumer, message_id
        )

    async def newest_of_order(self, *, order_id: UUID) -> Newest:
        row = await self._conn.fetchrow(
            """SELECT id, revision FROM contracts WHERE order_id = $1
               ORDER BY revision DESC LIMIT 1""",
            order_id,
        )
        assert row is not None, "called for an order with a contract"
        return Newest(id=row["id"], revision=int(row["revision"]))

    async def add(
        self, *, contract_id: UUID, content: ContractContent, document_sha256: str
    ) -> None:
        await self._conn.execute(
            """INSERT INTO contracts (id, number, order_id, revision, status, content,
                                      content_version, language, salesperson_id, currency,
                                      total, drafted_at, status_changed_at, document_sha256)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13)""",
            contract_id,
            content.number,
            content.order_id,
            content.revision,
            ContractStatus.DRAFTED.value,
            stored(content),
            content.version,
            content.language.value,
            content.salesperson.id,
            content.currency,
            content.total,
            content.drafted_at,
            document_sha256,
        )

    async def add_document(self, document: NewDocument) -> None:
        """The table refuses to change or delete it afterwards."""
        await self._conn.execute(
            """INSERT INTO contract_documents (id, contract_id, kind, media_type, file_name,
                                               size, sha256, content, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            document.id,
            document.contract_id,
            document.kind.value,
            document.media_type,
            document.file_name,
            len(document.data),
            document.sha256,
            document.data,
            document.at,
        )

    async def lock(self, *, contract_id: UUID) -> Contract | None:
        """Locked until the transaction ends, so two people acting on it at once are decided
        one after the other."""
        row = await self._conn.fetchrow(
            f"SELECT {_COLUMNS} FROM contracts WHERE id = $1 FOR UPDATE", contract_id
        )
        return _contract(row) if row is not None else None

    async def mark(
        self, *, contract_id: UUID, status: ContractStatus, at: datetime, **columns: Any
    ) -> None:
        at_column, others = _MARKED[status]
        if set(columns) != set(others):
            raise ValueError(f"a {status.value} contract sets {others}, not {sorted(columns)}")
        # column names come from _MARKED, never from the caller's values
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(others, start=4))
        await self._conn.execute(
            f"""UPDATE contracts SET status = $2, status_changed_at = $3, {at_column} = $3,
                                     {sets}
                WHERE id = $1""",
            contract_id,
            status.value,
            at,
            *(columns[name] for name in others),
        )

    async def supersede(
        self, *, order_id: UUID, before_revision: int, by: UUID, at: datetime
    ) -> list[str]:
        rows = await self._conn.fetch(
            """UPDATE contracts
               SET status = $1, superseded_by = $2, status_changed_at = $3
               WHERE order_id = $4 AND revision < $5 AND status = ANY($6::text[])
               RETURNING number""",
            ContractStatus.SUPERSEDED.value,
            by,
            at,
            order_id,
            before_revision,
            [s.value for s in SUPERSEDABLE],
        )
        return [str(r["number"]) for r in rows]

    async def get(self, *, contract_id: UUID) -> Contract | None:
        row = await self._conn.fetchrow(
            f"SELECT {_COLUMNS} FROM contracts WHERE id = $1", contract_id
        )
        return _contract(row) if row is not None else None

    async def of_order(self, *, order_id: UUID) -> list[Contract]:
        """The order's contracts, newest revision first."""
        rows = await self._conn.fetch(
            f"SELECT {_COLUMNS} FROM contracts WHERE order_id = $1 ORDER BY revision DESC",
            order_id,
        )
        return [_contract(r) for r in rows]

    async def document(self, *, contract_id: UUID, kind: DocumentKind) -> Document | None:
        """None when the contract has no such document."""
        row = await self._conn.fetchrow(
            """SELECT d.id, d.kind, d.media_type, d.file_name, d.size, d.sha256, d.content,
                      d.created_at, c.number,
                      CASE d.kind WHEN 'drafted' THEN c.document_sha256
                                  ELSE c.signed_copy_sha256 END AS recorded_sha256
               FROM contract_documents d JOIN contracts c ON c.id = d.contract_id
               WHERE d.contract_id = $1 AND d.kind = $2""",
            contract_id,
            kind.value,
        )
        if row is None:
            return None
        values = dict(row)
        values.update(kind=DocumentKind(values["kind"]), content=bytes(values["content"]))
        return Document(**values)

    async def publish_event(self, event: Message, *, correlation_id: UUID) -> None:
        await outbox.publish_event(self._conn, event, correlation_id=correlation_id)  # type: ignore[arg-type]


# --- the renderer's claims, outside any handler's transaction -----------------------------


async def claim_renders(pool: Pool, *, limit: int, lease_seconds: float) -> list[PendingRender]:
    """Up to `limit` contracts waiting for their document, leased to the caller; replicas
    skip each other's rows, and take a lease over once it has run out (a crashed renderer)."""
    rows = await pool.fetch(
        """UPDATE contract_renders SET claimed_until = now() + make_interval(secs => $2)
           WHERE id IN (SELECT id FROM contract_renders
                        WHERE claimed_until IS NULL OR claimed_until < now()
                        ORDER BY number LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING id, content, attempts, number_key, number_seq, delivery""",
        limit,
        lease_seconds,
    )
    return [
        PendingRender(
            contract_id=r["id"],
            content=ContractContent.model_validate(r["content"]),
            attempts=int(r["attempts"]),
            number_key=int(r["number_key"]),
            number_seq=int(r["number_seq"]),
            delivery=r["delivery"],
        )
        for r in rows
    ]


async def release_leases(pool: Pool, *, contract_ids: list[UUID]) -> None:
    """Give claimed renders back at once (a clean stop), rather than after their lease."""
    await pool.execute(
        "UPDATE contract_renders SET claimed_until = NULL WHERE id = ANY($1::uuid[])",
        contract_ids,
    )
