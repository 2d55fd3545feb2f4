"""Contracts and their numbers in PostgreSQL (schema `contracts`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from orderflow.db import Connection, Pool

from ..domain import (
    SUPERSEDABLE,
    ContractContent,
    ContractStatus,
    DocumentKind,
    PendingRender,
    stored,
)

#: Notified when a contract waits to be typeset.
RENDER_CHANNEL = "contracts_render"

_COLUMNS = """id, number, order_id, revision, status, content, content_version, language,
              salesperson_id, currency, total, drafted_at, status_changed_at, superseded_by,
              document_sha256, sent_at, sent_by, signed_at, signed_copy_sha256, voided_at,
              void_reason, voided_by"""


async def lock_order(conn: Connection, *, order_id: UUID) -> None:
    """Serialise drafting for one order until the transaction ends, so two approvals of it
    (two revisions, or one delivered twice) are decided one after the other."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", str(order_id))


async def revisions(conn: Connection, *, order_id: UUID) -> list[int]:
    """The revisions of the order that already have a contract, typeset or not."""
    rows = await conn.fetch(
        """SELECT revision FROM contracts WHERE order_id = $1
           UNION ALL SELECT revision FROM contract_renders WHERE order_id = $1""",
        order_id,
    )
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


async def take_number(conn: Connection, *, key: int) -> int:
    """The lowest number handed back to the counter, else the counter's next one; either
    way inside the caller's (short) transaction, so a rollback gives the number back."""
    released: int | None = await conn.fetchval(
        """DELETE FROM contract_numbers_released
           WHERE (year, seq) = (SELECT year, seq FROM contract_numbers_released
                                WHERE year = $1 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING seq""",
        key,
    )
    return released if released is not None else await next_number(conn, key=key)


async def release_number(conn: Connection, *, key: int, seq: int) -> None:
    await conn.execute(
        "INSERT INTO contract_numbers_released (year, seq) VALUES ($1, $2)", key, seq
    )


async def add_pending(
    conn: Connection,
    *,
    contract_id: UUID,
    content: ContractContent,
    key: int,
    seq: int,
    delivery: dict[str, Any] | None,
) -> None:
    """A numbered contract whose document is still to be typeset."""
    await conn.execute(
        """INSERT INTO contract_renders (id, number, order_id, revision, content, number_key,
                                         number_seq, delivery)
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
    await conn.execute("SELECT pg_notify($1, '')", RENDER_CHANNEL)


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


async def take_pending(conn: Connection, *, contract_id: UUID) -> bool:
    """Remove a contract from those waiting for their document, in the transaction that
    stores it or gives it up; False when it is not waiting any more (another replica, whose
    lease had run out, stored it first)."""
    taken = await conn.fetchval(
        "DELETE FROM contract_renders WHERE id = $1 RETURNING true", contract_id
    )
    return bool(taken)


async def render_failed(conn: Connection, *, contract_id: UUID, retry_in: float) -> int:
    """Count a failed typesetting and let the contract be tried again after `retry_in` s."""
    attempts: int = await conn.fetchval(
        """UPDATE contract_renders SET attempts = attempts + 1,
                                       claimed_until = now() + make_interval(secs => $2)
           WHERE id = $1 RETURNING attempts""",
        contract_id,
        retry_in,
    )
    return attempts


async def forget_delivery(conn: Connection, *, consumer: str, message_id: str) -> None:
    """Take the approval out of the inbox, so that its dead letter, once replayed, drafts."""
    await conn.execute(
        "DELETE FROM inbox WHERE consumer = $1 AND message_id = $2", consumer, message_id
    )


async def newest_of_order(conn: Connection, *, order_id: UUID) -> tuple[UUID, int]:
    """The id and revision of the order's latest drafted contract."""
    row = await conn.fetchrow(
        "SELECT id, revision FROM contracts WHERE order_id = $1 ORDER BY revision DESC LIMIT 1",
        order_id,
    )
    assert row is not None, "called for an order with a contract"
    return row["id"], int(row["revision"])


async def add(
    conn: Connection, *, contract_id: UUID, content: ContractContent, document_sha256: str
) -> None:
    await conn.execute(
        """INSERT INTO contracts (id, number, order_id, revision, status, content,
                                  content_version, language, salesperson_id, currency, total,
                                  drafted_at, status_changed_at, document_sha256)
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


async def add_document(
    conn: Connection,
    *,
    document_id: UUID,
    contract_id: UUID,
    kind: DocumentKind,
    media_type: str,
    file_name: str | None,
    data: bytes,
    sha256: str,
    at: datetime,
) -> None:
    """Store a document; the table refuses to change or delete it afterwards."""
    await conn.execute(
        """INSERT INTO contract_documents (id, contract_id, kind, media_type, file_name, size,
                                           sha256, content, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        document_id,
        contract_id,
        kind.value,
        media_type,
        file_name,
        len(data),
        sha256,
        data,
        at,
    )


async def lock(conn: Connection, *, contract_id: UUID) -> dict[str, Any] | None:
    """The contract, locked until the transaction ends, so two people acting on it at once
    are decided one after the other."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM contracts WHERE id = $1 FOR UPDATE", contract_id
    )
    return dict(row) if row is not None else None


async def mark_sent(conn: Connection, *, contract_id: UUID, at: datetime, by: str | None) -> None:
    await conn.execute(
        """UPDATE contracts SET status = $2, status_changed_at = $3, sent_at = $3, sent_by = $4
           WHERE id = $1""",
        contract_id,
        ContractStatus.SENT.value,
        at,
        by,
    )


async def mark_signed(
    conn: Connection, *, contract_id: UUID, at: datetime, signed_copy_sha256: str
) -> None:
    await conn.execute(
        """UPDATE contracts SET status = $2, status_changed_at = $3, signed_at = $3,
                                signed_copy_sha256 = $4
           WHERE id = $1""",
        contract_id,
        ContractStatus.SIGNED.value,
        at,
        signed_copy_sha256,
    )


async def mark_voided(
    conn: Connection, *, contract_id: UUID, at: datetime, reason: str, by: str | None
) -> None:
    await conn.execute(
        """UPDATE contracts SET status = $2, status_changed_at = $3, voided_at = $3,
                                void_reason = $4, voided_by = $5
           WHERE id = $1""",
        contract_id,
        ContractStatus.VOIDED.value,
        at,
        reason,
        by,
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


async def document(pool: Pool, *, contract_id: UUID, kind: DocumentKind) -> dict[str, Any] | None:
    """A stored document with its contract's number and the hash the contract recorded for
    it; None when the contract has no such document."""
    row = await pool.fetchrow(
        """SELECT d.id, d.kind, d.media_type, d.file_name, d.size, d.sha256, d.content,
                  d.created_at, c.number,
                  CASE d.kind WHEN 'drafted' THEN c.document_sha256
                              ELSE c.signed_copy_sha256 END AS recorded_sha256
           FROM contract_documents d JOIN contracts c ON c.id = d.contract_id
           WHERE d.contract_id = $1 AND d.kind = $2""",
        contract_id,
        kind.value,
    )
    return dict(row) if row is not None else None
