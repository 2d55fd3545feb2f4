"""Orders, revisions, attachments, idempotency keys, the event log and intake's own actions
in PostgreSQL (schema `intake`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias
from uuid import UUID

from orderflow.db import Connection, Pool

# reads run on the pool or inside a caller's transaction
Executor: TypeAlias = "Connection | Pool"

_ORDER_COLUMNS = """o.id, o.status, o.salesperson_id, o.external_ref, o.customer_name, o.channel,
    o.current_revision, o.submitted_revision, o.created_at, o.updated_at, o.change_request,
    o.approved_at, o.contract_id, o.contract_number, o.contract_signed_at, o.withdrawn_at,
    o.version, o.duplicate_key, o.possible_duplicate_of, o.created_by, o.withdrawn_by,
    o.withdrawal, o.held_status"""


@dataclass(frozen=True)
class OrderRow:
    """An order's row (`_ORDER_COLUMNS`)."""

    id: UUID
    status: str
    salesperson_id: str
    external_ref: str | None
    customer_name: str | None
    channel: str
    current_revision: int
    submitted_revision: int | None
    created_at: datetime
    updated_at: datetime
    change_request: dict[str, Any] | None
    approved_at: datetime | None
    contract_id: UUID | None
    contract_number: str | None
    contract_signed_at: datetime | None
    withdrawn_at: datetime | None
    #: intake's edit counter, in the ETag
    version: int
    duplicate_key: str | None
    possible_duplicate_of: list[UUID]
    created_by: dict[str, Any] | None
    withdrawn_by: dict[str, Any] | None
    withdrawal: dict[str, Any] | None
    held_status: str | None


@dataclass(frozen=True)
class LockedOrder(OrderRow):
    """The order under its lock in the caller's transaction, and whether its current
    revision is submitted."""

    current_submitted: bool


@dataclass(frozen=True)
class StoredOrder(OrderRow):
    """The order with its current revision's document and totals."""

    document: dict[str, Any]
    totals: dict[str, Any]
    submitted_at: datetime | None


async def insert_order(
    conn: Connection,
    *,
    order_id: UUID,
    status: str,
    salesperson_id: str,
    external_ref: str | None,
    customer_name: str | None,
    channel: str,
    duplicate_key: str | None,
    possible_duplicate_of: list[UUID],
    created_by: dict[str, Any],
) -> None:
    await conn.execute(
        """INSERT INTO orders (id, status, salesperson_id, external_ref, customer_name, channel,
                               current_revision, duplicate_key, possible_duplicate_of,
                               created_by)
           VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9)""",
        order_id,
        status,
        salesperson_id,
        external_ref,
        customer_name,
        channel,
        duplicate_key,
        possible_duplicate_of,
        created_by,
    )


async def insert_draft(
    conn: Connection,
    *,
    order_id: UUID,
    salesperson_id: str,
    external_ref: str | None,
    customer_name: str | None,
    channel: str,
    duplicate_key: str | None,
    possible_duplicate_of: list[UUID],
    created_by: dict[str, Any],
    document: dict[str, Any],
    totals: dict[str, Any],
    activity: dict[str, Any],
    occurred_at: datetime,
) -> None:
    """A new order's row (a draft at revision 1), its revision 1 and its `order.created`
    activity, in one statement: one round trip instead of three (the foreign keys are
    checked at the statement's end, when all three rows exist)."""
    await conn.execute(
        """WITH o AS (
               INSERT INTO orders (id, status, salesperson_id, external_ref, customer_name,
                                   channel, current_revision, duplicate_key,
                                   possible_duplicate_of, created_by)
               VALUES ($1, 'draft', $2, $3, $4, $5, 1, $6, $7, $8)
           ), r AS (
               INSERT INTO revisions (order_id, revision, document, totals, channel)
               VALUES ($1, 1, $9, $10, $5)
           )
           INSERT INTO order_activity (order_id, type, revision, payload, occurred_at, actor)
           VALUES ($1, 'order.created', 1, $11, $12, $8)""",
        order_id,
        salesperson_id,
        external_ref,
        customer_name,
        channel,
        duplicate_key,
        possible_duplicate_of,
        created_by,
        document,
        totals,
        activity,
        occurred_at,
    )


async def lock_for_creation(conn: Connection, *, order_id: UUID, duplicate_key: str | None) -> None:
    """`lock_duplicate_key` (when the order has a key) then `lock_order_id`, in that order,
    in one round trip; both held until the transaction ends."""
    await conn.execute(
        """SELECT CASE WHEN $2::text IS NULL THEN NULL
                       ELSE pg_advisory_xact_lock(hashtextextended($2::text, 7))::text END,
                  pg_advisory_xact_lock(hashtextextended($1::uuid::text, 11))""",
        order_id,
        duplicate_key,
    )


async def lock_order(conn: Connection, *, order_id: UUID) -> LockedOrder | None:
    """The order row, locked for this transaction, with whether its current revision is
    submitted.

    The orders row is locked by itself and the revision read after, in a second statement:
    a transaction that waited for the lock sees the row as the one before it left it (a
    join to the revision it named then would find nothing once `current_revision` moved)."""
    row = await conn.fetchrow(
        f"SELECT {_ORDER_COLUMNS} FROM orders o WHERE o.id = $1 FOR UPDATE", order_id
    )
    if row is None:
        return None
    # a new statement, so a new snapshot: it sees the revision the other transaction made
    submitted = await conn.fetchval(
        """SELECT submitted_at IS NOT NULL FROM revisions
           WHERE order_id = $1 AND revision = $2""",
        order_id,
        row["current_revision"],
    )
    return LockedOrder(**dict(row), current_submitted=bool(submitted))


async def lock_order_id(conn: Connection, *, order_id: UUID) -> None:
    """Serialise the creation of an order with the events about it until the transaction
    ends: an event that finds no order is kept before the order commits, or it waits and
    finds the order (an order row cannot be locked before it exists)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 11))", order_id
    )


async def order_state(db: Executor, *, order_id: UUID) -> dict[str, Any] | None:
    """Status, current revision and version, unlocked: for waiting on a change."""
    row = await db.fetchrow(
        "SELECT status, current_revision, version FROM orders WHERE id = $1", order_id
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
                             customer_name = $5, updated_at = now(), version = version + 1
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
    """Freeze the revision and make it the order's submitted one, in one statement."""
    await conn.execute(
        """WITH frozen AS (
               UPDATE revisions SET submitted_at = $3, updated_at = $3
               WHERE order_id = $1 AND revision = $2 AND submitted_at IS NULL
           )
           UPDATE orders SET status = 'submitted', submitted_revision = $2, updated_at = $3,
                             version = version + 1
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


async def get_order(db: Executor, *, order_id: UUID) -> StoredOrder | None:
    """The order with its current revision's document and totals."""
    row = await db.fetchrow(
        f"""SELECT {_ORDER_COLUMNS}, r.document, r.totals, r.submitted_at
            FROM orders o
            JOIN revisions r ON r.order_id = o.id AND r.revision = o.current_revision
            WHERE o.id = $1""",
        order_id,
    )
    return StoredOrder(**dict(row)) if row is not None else None


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
    duplicate: bool | None,
    limit: int,
    offset: int,
    among: Collection[str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """A page of orders, newest first, with the total number matching the filters; only
    the orders of the salespeople `among` when given."""
    where = """($1::text IS NULL OR o.status = $1)
               AND ($2::text IS NULL OR o.salesperson_id = $2)
               AND ($3::text IS NULL OR o.external_ref = $3)
               AND ($4::boolean IS NULL OR (cardinality(o.possible_duplicate_of) > 0) = $4)
               AND ($5::text[] IS NULL OR o.salesperson_id = ANY($5))"""
    scope = sorted(among) if among is not None else None
    rows = await db.fetch(
        f"""SELECT o.id, o.status, o.salesperson_id, o.external_ref, o.customer_name, o.channel,
                   o.current_revision, o.submitted_revision, o.created_at, o.updated_at,
                   o.possible_duplicate_of, r.totals
            FROM orders o
            JOIN revisions r ON r.order_id = o.id AND r.revision = o.current_revision
            WHERE {where}
            ORDER BY o.created_at DESC, o.id
            LIMIT $6 OFFSET $7""",
        status,
        salesperson_id,
        external_ref,
        duplicate,
        scope,
        limit,
        offset,
    )
    total = await db.fetchval(
        f"SELECT count(*) FROM orders o WHERE {where}",
        status,
        salesperson_id,
        external_ref,
        duplicate,
        scope,
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
    held_status: str | None = None,
) -> None:
    """Move the read model to `status`; details not given keep their value."""
    await conn.execute(
        """UPDATE orders SET status = $2, updated_at = now(),
                  change_request = coalesce($3, change_request),
                  approved_at = coalesce($4, approved_at),
                  contract_id = coalesce($5, contract_id),
                  contract_number = coalesce($6, contract_number),
                  contract_signed_at = coalesce($7, contract_signed_at),
                  withdrawn_at = coalesce($8, withdrawn_at),
                  held_status = coalesce($9, held_status)
           WHERE id = $1""",
        order_id,
        status,
        change_request,
        approved_at,
        contract_id,
        contract_number,
        contract_signed_at,
        withdrawn_at,
        held_status,
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
    """Add an event to the order's timeline, with who caused it when intake published it
    because of a request; False when it is there already."""
    row = await conn.fetchval(
        """INSERT INTO order_events (order_id, message_id, type, revision, payload, occurred_at,
                                     outcome, actor)
           VALUES ($1, $2, $3, $4, $5, $6, $7,
                   (SELECT actor FROM published_actors WHERE message_id = $2))
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
    """The events consumed for the order, oldest first."""
    rows = await db.fetch(
        """SELECT message_id, type, revision, payload, occurred_at, recorded_at, outcome, actor
           FROM order_events WHERE order_id = $1 ORDER BY occurred_at, id""",
        order_id,
    )
    return [dict(r) for r in rows]


async def timeline(db: Executor, *, order_id: UUID) -> list[dict[str, Any]]:
    """Intake's own actions and the consumed events of the order, in the order they
    happened; on the same instant intake's action first (it caused the event)."""
    rows = await db.fetch(
        """SELECT source, type, revision, payload, occurred_at, actor FROM (
               SELECT 'intake' AS source, 0 AS rank, id, type, revision, payload, occurred_at,
                      actor
               FROM order_activity WHERE order_id = $1
               UNION ALL
               SELECT 'bus', 1, id, type, revision, payload, occurred_at, actor
               FROM order_events WHERE order_id = $1
           ) t
           ORDER BY occurred_at, rank, id""",
        order_id,
    )
    return [dict(r) for r in rows]


async def add_activity(
    conn: Connection,
    *,
    order_id: UUID,
    activity: str,
    revision: int | None,
    payload: dict[str, Any],
    occurred_at: datetime,
    actor: dict[str, Any],
) -> None:
    await conn.execute(
        """INSERT INTO order_activity (order_id, type, revision, payload, occurred_at, actor)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        order_id,
        activity,
        revision,
        payload,
        occurred_at,
        actor,
    )


async def mark_submitted_by(
    conn: Connection,
    *,
    order_id: UUID,
    revision: int,
    submitted_at: datetime,
    message_id: UUID,
    actor: dict[str, Any],
) -> None:
    """`mark_submitted` and `record_publisher` of its `order.submitted`, in one statement."""
    await conn.execute(
        """WITH frozen AS (
               UPDATE revisions SET submitted_at = $3, updated_at = $3
               WHERE order_id = $1 AND revision = $2 AND submitted_at IS NULL
           ), publisher AS (
               INSERT INTO published_actors (message_id, actor) VALUES ($4, $5)
           )
           UPDATE orders SET status = 'submitted', submitted_revision = $2, updated_at = $3,
                             version = version + 1
           WHERE id = $1""",
        order_id,
        revision,
        submitted_at,
        str(message_id),
        actor,
    )


async def record_publisher(conn: Connection, *, message_id: UUID, actor: dict[str, Any]) -> None:
    """Who caused an event intake publishes; its timeline entry takes the actor from here."""
    await conn.execute(
        "INSERT INTO published_actors (message_id, actor) VALUES ($1, $2)", str(message_id), actor
    )


async def set_current_revision(conn: Connection, *, order_id: UUID, revision: int) -> None:
    await conn.execute(
        "UPDATE orders SET current_revision = $2, updated_at = now() WHERE id = $1",
        order_id,
        revision,
    )


async def bump_version(conn: Connection, *, order_id: UUID) -> None:
    await conn.execute(
        "UPDATE orders SET version = version + 1, updated_at = now() WHERE id = $1", order_id
    )


async def request_withdrawal(
    conn: Connection,
    *,
    order_id: UUID,
    held_status: str,
    withdrawal: dict[str, Any],
    at: datetime,
) -> None:
    """The order waits for the router's answer; the review's events meanwhile move
    `held_status`, not its status."""
    await conn.execute(
        """UPDATE orders SET status = 'withdrawal_requested', held_status = $2,
                             withdrawal = $3, updated_at = $4, version = version + 1
           WHERE id = $1""",
        order_id,
        held_status,
        withdrawal,
        at,
    )


async def answer_withdrawal(
    conn: Connection, *, order_id: UUID, status: str, answer: dict[str, Any]
) -> None:
    """The router's answer: withdrawn (by whoever asked) or refused; nothing is held now."""
    await conn.execute(
        """UPDATE orders SET withdrawal = coalesce(withdrawal, '{}'::jsonb) || $3::jsonb,
                             held_status = NULL,
                             withdrawn_by = CASE WHEN $2 = 'withdrawn'
                                                 THEN withdrawal -> 'requested_by'
                                                 ELSE withdrawn_by END
           WHERE id = $1""",
        order_id,
        status,
        answer,
    )


# --- duplicates ---------------------------------------------------------------------------


async def lock_duplicate_key(conn: Connection, *, key: str) -> None:
    """Serialise orders with the same reference until the transaction ends, so two that
    arrive together still see each other."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", key)


async def find_duplicates(
    conn: Connection, *, key: str, exclude: UUID, created_before: datetime | None = None
) -> list[UUID]:
    """Other orders with the key, oldest first; withdrawn ones do not count (entering an
    order again after withdrawing it is how it is replaced)."""
    rows = await conn.fetch(
        """SELECT id FROM orders
           WHERE duplicate_key = $1 AND id <> $2 AND status <> 'withdrawn'
             AND ($3::timestamptz IS NULL OR created_at < $3)
           ORDER BY created_at, id""",
        key,
        exclude,
        created_before,
    )
    return [r["id"] for r in rows]


async def set_duplicates(
    conn: Connection, *, order_id: UUID, key: str | None, possible_duplicate_of: list[UUID]
) -> None:
    await conn.execute(
        "UPDATE orders SET duplicate_key = $2, possible_duplicate_of = $3 WHERE id = $1",
        order_id,
        key,
        possible_duplicate_of,
    )


# --- revisions and their files ----------------------------------------------------------


async def list_revisions(db: Executor, *, order_id: UUID) -> list[dict[str, Any]]:
    rows = await db.fetch(
        """SELECT r.order_id, r.revision, r.totals, r.channel, r.created_at, r.updated_at,
                  r.submitted_at,
                  (SELECT count(*) FROM revision_attachments ra
                   WHERE ra.order_id = r.order_id AND ra.revision = r.revision) AS attachments
           FROM revisions r WHERE r.order_id = $1 ORDER BY r.revision""",
        order_id,
    )
    return [dict(r) for r in rows]


async def previous_submitted(conn: Connection, *, order_id: UUID, before: int) -> int | None:
    value = await conn.fetchval(
        """SELECT max(revision) FROM revisions
           WHERE order_id = $1 AND revision < $2 AND submitted_at IS NOT NULL""",
        order_id,
        before,
    )
    return int(value) if value is not None else None


async def copy_attachments(
    conn: Connection, *, order_id: UUID, from_revision: int, to_revision: int
) -> None:
    """A new revision starts with the files of the one it was made from."""
    await conn.execute(
        """INSERT INTO revision_attachments (order_id, revision, attachment_id)
           SELECT order_id, $3, attachment_id FROM revision_attachments
           WHERE order_id = $1 AND revision = $2""",
        order_id,
        from_revision,
        to_revision,
    )


_ATTACHMENT_COLUMNS = (
    "a.id, a.order_id, a.kind, a.name, a.content_type, a.size, a.sha256, a.created_at"
)


async def revision_attachments(
    db: Executor, *, order_id: UUID, revision: int
) -> list[dict[str, Any]]:
    """The files of a revision, in the order they were uploaded."""
    rows = await db.fetch(
        f"""SELECT {_ATTACHMENT_COLUMNS}
            FROM revision_attachments ra JOIN attachments a ON a.id = ra.attachment_id
            WHERE ra.order_id = $1 AND ra.revision = $2
            ORDER BY a.created_at, a.id""",
        order_id,
        revision,
    )
    return [dict(r) for r in rows]


async def get_attachment(
    db: Executor, *, order_id: UUID, attachment_id: UUID
) -> dict[str, Any] | None:
    row = await db.fetchrow(
        f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments a WHERE a.order_id = $1 AND a.id = $2",
        order_id,
        attachment_id,
    )
    return dict(row) if row is not None else None


async def attachment_ids_in_use(db: Executor, *, ids: Sequence[UUID]) -> set[UUID]:
    """Which of these ids an attachment of any order has already."""
    rows = await db.fetch("SELECT id FROM attachments WHERE id = ANY($1::uuid[])", list(ids))
    return {r["id"] for r in rows}


async def message_applied(db: Executor, *, consumer: str, message_id: str) -> bool:
    """Whether the consumer's inbox holds the message (its effect committed)."""
    found = await db.fetchval(
        "SELECT true FROM inbox WHERE consumer = $1 AND message_id = $2", consumer, message_id
    )
    return bool(found)


async def insert_attachment(
    conn: Connection,
    *,
    attachment_id: UUID,
    order_id: UUID,
    revision: int,
    kind: str,
    name: str,
    content_type: str,
    size: int,
    sha256: str,
) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"""WITH a AS (
                INSERT INTO attachments (id, order_id, kind, name, content_type, size, sha256)
                VALUES ($1, $2, $4, $5, $6, $7, $8)
                RETURNING *
            ), link AS (
                INSERT INTO revision_attachments (order_id, revision, attachment_id)
                SELECT order_id, $3, id FROM a
            )
            SELECT {_ATTACHMENT_COLUMNS} FROM a""",
        attachment_id,
        order_id,
        revision,
        kind,
        name,
        content_type,
        size,
        sha256,
    )
    assert row is not None
    return dict(row)


async def unlink_attachment(
    conn: Connection, *, order_id: UUID, revision: int, attachment_id: UUID
) -> bool:
    """Take a file off a revision (the trigger refuses a submitted one)."""
    removed = await conn.fetchval(
        """DELETE FROM revision_attachments
           WHERE order_id = $1 AND revision = $2 AND attachment_id = $3 RETURNING true""",
        order_id,
        revision,
        attachment_id,
    )
    return bool(removed)


async def delete_attachment_if_unused(conn: Connection, *, attachment_id: UUID) -> bool:
    """Forget a file no revision holds any more; True when it was deleted."""
    deleted = await conn.fetchval(
        """DELETE FROM attachments a WHERE a.id = $1
             AND NOT EXISTS (SELECT 1 FROM revision_attachments ra WHERE ra.attachment_id = $1)
           RETURNING true""",
        attachment_id,
    )
    return bool(deleted)


# --- events that came before their order or revision ------------------------------------


async def keep_pending_event(
    conn: Connection,
    *,
    order_id: UUID,
    message_id: str,
    message_type: str,
    revision: int | None,
    payload: dict[str, Any],
    occurred_at: datetime,
) -> bool:
    """Keep an event for later; False when it is kept already."""
    row = await conn.fetchval(
        """INSERT INTO pending_events (order_id, message_id, type, revision, payload,
                                       occurred_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (message_id) DO NOTHING RETURNING 1""",
        order_id,
        message_id,
        message_type,
        revision,
        payload,
        occurred_at,
    )
    return row is not None


async def take_pending_events(
    conn: Connection, *, order_id: UUID, up_to_revision: int
) -> list[dict[str, Any]]:
    """Remove and return the kept events of the order that can be applied now (no revision,
    or one up to the current), oldest first; the caller applies them in its transaction."""
    rows = await conn.fetch(
        """DELETE FROM pending_events
           WHERE order_id = $1 AND (revision IS NULL OR revision <= $2)
           RETURNING id, message_id, type, revision, payload, occurred_at""",
        order_id,
        up_to_revision,
    )
    return sorted((dict(r) for r in rows), key=lambda r: (r["occurred_at"], r["id"]))


async def discard_pending_events(
    conn: Connection, *, older_than: datetime, keep_at_most: int
) -> int:
    """Forget the kept events received before `older_than`, and the oldest beyond
    `keep_at_most`; how many went."""
    aged = await conn.fetchval(
        """WITH gone AS (DELETE FROM pending_events WHERE received_at < $1 RETURNING 1)
           SELECT count(*) FROM gone""",
        older_than,
    )
    over = await conn.fetchval(
        """WITH gone AS (
               DELETE FROM pending_events WHERE id IN (
                   SELECT id FROM pending_events ORDER BY received_at DESC, id DESC
                   OFFSET $1)
               RETURNING 1)
           SELECT count(*) FROM gone""",
        keep_at_most,
    )
    return int(aged or 0) + int(over or 0)


async def count_pending_events(db: Executor) -> int:
    return int(await db.fetchval("SELECT count(*) FROM pending_events") or 0)
