"""Orders, revisions, idempotency keys and the event log in PostgreSQL (schema `intake`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias
from uuid import UUID

from orderflow.db import Connection, Pool

# reads run on the pool or inside a caller's transaction
Executor: TypeAlias = "Connection | Pool"

_ORDER_COLUMNS = """o.id, o.status, o.salesperson_id, o.external_ref, o.customer_name, o.channel,
    o.current_revision, o.submitted_revision, o.created_at, o.updated_at, o.change_request,
    o.approved_at, o.contract_id, o.contract_number, o.contract_signed_at, o.withdrawn_at"""


async def insert_order(
    conn: Connection,
    *,
    order_id: UUID,
    status: str,
    salesperson_id: str,
    external_ref: str | None,
    customer_name: str | None,
    channel: str,
) -> None:
    await conn.execute(
        """INSERT INTO orders (id, status, salesperson_id, external_ref, customer_name, channel,
                               current_revision)
           VALUES ($1, $2, $3, $4, $5, $6, 1)""",
        order_id,
        status,
        salesperson_id,
        external_ref,
        customer_name,
        channel,
    )


async def lock_order(conn: Connection, *, order_id: UUID) -> dict[str, Any] | None:
    """The order row, locked for this transaction, with whether its current revision is
    submitted."""
    row = await conn.fetchrow(
        f"""SELECT {_ORDER_COLUMNS}, r.submitted_at IS NOT NULL AS current_submitted
            FROM orders o
            JOIN revisions r ON r.order_id = o.id AND r.revision = o.current_revision
            WHERE o.id = $1
            FOR UPDATE OF o""",
        order_id,
    )
    return dict(row) if row is not None else None


async def update_header(
    conn: Connection,
    *,
    order_id: UUID,
    current_revision: int,
    salesperson_id: str,
    external_ref: str | None,
    customer_name: str | None,
) -> None:
    """After an edit: the list's columns follow the newest document."""
    await conn.execute(
        """UPDATE orders SET current_revision = $2, salesperson_id = $3, external_ref = $4,
                             customer_name = $5, updated_at = now()
           WHERE id = $1""",
        order_id,
        current_revision,
        salesperson_id,
        external_ref,
        customer_name,
    )


async def mark_submitted(
    conn: Connection, *, order_id: UUID, revision: int, submitted_at: datetime
) -> None:
    await conn.execute(
        "UPDATE revisions SET submitted_at = $3, updated_at = $3 "
        "WHERE order_id = $1 AND revision = $2 AND submitted_at IS NULL",
        order_id,
        revision,
        submitted_at,
    )
    await conn.execute(
        """UPDATE orders SET status = 'submitted', submitted_revision = $2, updated_at = $3
           WHERE id = $1""",
        order_id,
        revision,
        submitted_at,
    )


async def insert_revision(
    conn: Connection,
    *,
    order_id: UUID,
    revision: int,
    document: dict[str, Any],
    totals: dict[str, Any],
    channel: str,
) -> None:
    await conn.execute(
        """INSERT INTO revisions (order_id, revision, document, totals, channel)
           VALUES ($1, $2, $3, $4, $5)""",
        order_id,
        revision,
        document,
        totals,
        channel,
    )


async def replace_revision(
    conn: Connection,
    *,
    order_id: UUID,
    revision: int,
    document: dict[str, Any],
    totals: dict[str, Any],
    channel: str,
) -> None:
    """Overwrite a revision that was never submitted (the trigger refuses any other)."""
    await conn.execute(
        """UPDATE revisions SET document = $3, totals = $4, channel = $5, updated_at = now()
           WHERE order_id = $1 AND revision = $2""",
        order_id,
        revision,
        document,
        totals,
        channel,
    )


async def get_order(db: Executor, *, order_id: UUID) -> dict[str, Any] | None:
    """The order with its current revision's document and totals."""
    row = await db.fetchrow(
        f"""SELECT {_ORDER_COLUMNS}, r.document, r.totals, r.submitted_at
            FROM orders o
            JOIN revisions r ON r.order_id = o.id AND r.revision = o.current_revision
            WHERE o.id = $1""",
        order_id,
    )
    return dict(row) if row is not None else None


async def get_revision(db: Executor, *, order_id: UUID, revision: int) -> dict[str, Any] | None:
    row = await db.fetchrow(
        """SELECT order_id, revision, document, totals, channel, created_at, updated_at,
                  submitted_at
           FROM revisions WHERE order_id = $1 AND revision = $2""",
        order_id,
        revision,
    )
    return dict(row) if row is not None else None


async def list_orders(
    db: Executor,
    *,
    status: str | None,
    salesperson_id: str | None,
    external_ref: str | None,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:
    """A page of orders, newest first, with the total number matching the filters."""
    where = """($1::text IS NULL OR o.status = $1)
               AND ($2::text IS NULL OR o.salesperson_id = $2)
               AND ($3::text IS NULL OR o.external_ref = $3)"""
    rows = await db.fetch(
        f"""SELECT o.id, o.status, o.salesperson_id, o.external_ref, o.customer_name, o.channel,
                   o.current_revision, o.submitted_revision, o.created_at, o.updated_at,
                   r.totals
            FROM orders o
            JOIN revisions r ON r.order_id = o.id AND r.revision = o.current_revision
            WHERE {where}
            ORDER BY o.created_at DESC, o.id
            LIMIT $4 OFFSET $5""",
        status,
        salesperson_id,
        external_ref,
        limit,
        offset,
    )
    total = await db.fetchval(
        f"SELECT count(*) FROM orders o WHERE {where}", status, salesperson_id, external_ref
    )
    return [dict(r) for r in rows], int(total or 0)


async def claim_idempotency_key(
    conn: Connection, *, key: str, fingerprint: str, order_id: UUID
) -> bool:
    """True when the key is new. A concurrent request with the same key waits here until
    the first one commits or rolls back."""
    row = await conn.fetchval(
        """INSERT INTO idempotency_keys (key, fingerprint, order_id) VALUES ($1, $2, $3)
           ON CONFLICT (key) DO NOTHING RETURNING 1""",
        key,
        fingerprint,
        order_id,
    )
    return row is not None


async def find_idempotency_key(conn: Connection, *, key: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT key, fingerprint, order_id, created_at FROM idempotency_keys WHERE key = $1", key
    )
    return dict(row) if row is not None else None


async def set_status(
    conn: Connection,
    *,
    order_id: UUID,
    status: str,
    change_request: dict[str, Any] | None = None,
    approved_at: datetime | None = None,
    contract_id: UUID | None = None,
    contract_number: str | None = None,
    contract_signed_at: datetime | None = None,
    withdrawn_at: datetime | None = None,
) -> None:
    """Move the read model to `status`; details not given keep their value."""
    await conn.execute(
        """UPDATE orders SET status = $2, updated_at = now(),
                  change_request = coalesce($3, change_request),
                  approved_at = coalesce($4, approved_at),
                  contract_id = coalesce($5, contract_id),
                  contract_number = coalesce($6, contract_number),
                  contract_signed_at = coalesce($7, contract_signed_at),
                  withdrawn_at = coalesce($8, withdrawn_at)
           WHERE id = $1""",
        order_id,
        status,
        change_request,
        approved_at,
        contract_id,
        contract_number,
        contract_signed_at,
        withdrawn_at,
    )


async def append_event(
    conn: Connection,
    *,
    order_id: UUID,
    message_id: str,
    message_type: str,
    revision: int | None,
    payload: dict[str, Any],
    occurred_at: datetime,
    outcome: str,
) -> bool:
    """Add an event to the order's timeline; False when it is there already."""
    row = await conn.fetchval(
        """INSERT INTO order_events (order_id, message_id, type, revision, payload, occurred_at,
                                     outcome)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (message_id) DO NOTHING RETURNING 1""",
        order_id,
        message_id,
        message_type,
        revision,
        payload,
        occurred_at,
        outcome,
    )
    return row is not None


async def events(db: Executor, *, order_id: UUID) -> list[dict[str, Any]]:
    """The order's timeline, oldest first."""
    rows = await db.fetch(
        """SELECT message_id, type, revision, payload, occurred_at, recorded_at, outcome
           FROM order_events WHERE order_id = $1 ORDER BY occurred_at, id""",
        order_id,
    )
    return [dict(r) for r in rows]
