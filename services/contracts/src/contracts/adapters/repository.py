"""Contracts and their numbers in PostgreSQL (schema `contracts`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from orderflow.db import Connection, Pool

from ..domain import SUPERSEDABLE, ContractContent, ContractStatus, stored

_COLUMNS = """id, number, order_id, revision, status, content, content_version, language,
              salesperson_id, currency, total, drafted_at, status_changed_at, superseded_by"""


async def lock_order(conn: Connection, *, order_id: UUID) -> None:
    """Serialise drafting for one order until the transaction ends, so two approvals of it
    (two revisions, or one delivered twice) are decided one after the other."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", str(order_id))


async def revisions(conn: Connection, *, order_id: UUID) -> list[int]:
    """The revisions of the order that already have a contract."""
    rows = await conn.fetch("SELECT revision FROM contracts WHERE order_id = $1", order_id)
    return [int(r["revision"]) for r in rows]


async def next_number(conn: Connection, *, key: int) -> int:
    """Take the next sequence number of a counter, inside the caller's transaction.

    The row stays locked until that transaction ends: concurrent drafts wait their turn,
    and a rollback gives the number back, so numbers have no gaps.
    """
    seq: int = await conn.fetchval(
        """INSERT INTO contract_number_sequences AS s (year, next_seq) VALUES ($1, 2)
           ON CONFLICT (year) DO UPDATE SET next_seq = s.next_seq + 1
           RETURNING next_seq - 1""",
        key,
    )
    return seq


async def add(conn: Connection, *, contract_id: UUID, content: ContractContent) -> None:
    await conn.execute(
        """INSERT INTO contracts (id, number, order_id, revision, status, content,
                                  content_version, language, salesperson_id, currency, total,
                                  drafted_at, status_changed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)""",
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
    )


async def supersede(
    conn: Connection, *, order_id: UUID, before_revision: int, by: UUID, at: datetime
) -> list[str]:
    """Mark the order's earlier drafts superseded by a later contract; their numbers."""
    rows = await conn.fetch(
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


async def get(pool: Pool, *, contract_id: UUID) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM contracts WHERE id = $1", contract_id)
    return dict(row) if row is not None else None


async def of_order(pool: Pool, *, order_id: UUID) -> list[dict[str, Any]]:
    """The order's contracts, newest revision first."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM contracts WHERE order_id = $1 ORDER BY revision DESC",
        order_id,
    )
    return [dict(r) for r in rows]
