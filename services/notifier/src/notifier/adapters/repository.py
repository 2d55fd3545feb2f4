"""Notifications and their deliveries in PostgreSQL (schema `notifier`), as typed records."""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

import asyncpg

from orderflow import outbox
from orderflow.db import Connection, Pool
from orderflow.messages.base import Message

from ..domain import INBOX, Notice
from ..records import DELIVERED, FAILED, PENDING, SENDING, STATUSES, Delivery, InboxItem

__all__ = ["DELIVERED", "FAILED", "PENDING", "SENDING", "STATUSES", "PostgresStore"]

_DELIVERY_COLUMNS = """id, event_id, event_type, recipient, recipient_name, channel, address,
    order_id, title, subject, body, html, markdown, link, language, data, status, attempts,
    next_attempt_at, last_error, created_at, updated_at, delivered_at, failed_at, read_at"""


def _delivery(row: asyncpg.Record | None) -> Delivery | None:
    return Delivery.of(row) if row is not None else None


class PostgresStore:
    """The handlers' store (`handlers.Store`): notifications in the `notifier` schema, the
    events about them in its outbox, both in the caller's transaction."""

    async def add(
        self, conn: Connection, *, event_id: str, notice: Notice, recipient_name: str | None
    ) -> Delivery | None:
        return await add(conn, event_id=event_id, notice=notice, recipient_name=recipient_name)

    async def publish(
        self, conn: Connection, event: Message, *, correlation_id: UUID | None
    ) -> None:
        await outbox.publish_event(conn, event, correlation_id=correlation_id)


async def add(
    conn: Connection, *, event_id: str, notice: Notice, recipient_name: str | None
) -> Delivery | None:
    """Store a notification; None when this (event, recipient, channel) already has one.

    The in-app inbox is delivered as it is written; every other channel waits for the
    delivery worker, from `notice.not_before` on.
    """
    inbox = notice.channel == INBOX
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""INSERT INTO notifications (id, event_id, event_type, recipient, recipient_name,
                                      channel, address, order_id, title, subject, body, html,
                                      markdown, link, language, data, status, next_attempt_at,
                                      delivered_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                   coalesce($18, now()), CASE WHEN $17 = 'delivered' THEN now() END)
           ON CONFLICT (event_id, recipient, channel) DO NOTHING
           RETURNING {_DELIVERY_COLUMNS}""",
        uuid.uuid4(),
        event_id,
        notice.event_type,
        notice.recipient,
        recipient_name,
        notice.channel,
        notice.address,
        notice.order_id,
        notice.title,
        notice.subject,
        notice.body,
        notice.html,
        notice.markdown,
        notice.link,
        notice.language,
        notice.data,
        DELIVERED if inbox else PENDING,
        notice.not_before,
    )
    return _delivery(row)


# --- the in-app inbox ----------------------------------------------------------------------


async def inbox(
    pool: Pool, *, recipient: str, unread_only: bool, limit: int, offset: int
) -> tuple[list[InboxItem], int, int]:
    """A page of the recipient's in-app notifications, newest first; with total and unread."""
    rows = await pool.fetch(
        """SELECT id, event_type, order_id, title, subject, body, link, language, data,
                  created_at, read_at
           FROM notifications
           WHERE recipient = $1 AND channel = 'inbox' AND ($2::bool IS FALSE OR read_at IS NULL)
           ORDER BY created_at DESC, id
           LIMIT $3 OFFSET $4""",
        recipient,
        unread_only,
        limit,
        offset,
    )
    total, unread = await counts(pool, recipient=recipient)
    return [InboxItem.of(r) for r in rows], total, unread


async def counts(pool: Pool, *, recipient: str) -> tuple[int, int]:
    row = await pool.fetchrow(
        """SELECT count(*) AS total, count(*) FILTER (WHERE read_at IS NULL) AS unread
           FROM notifications WHERE recipient = $1 AND channel = 'inbox'""",
        recipient,
    )
    assert row is not None
    return int(row["total"]), int(row["unread"])


async def mark_read(pool: Pool, *, recipient: str, notification_id: UUID) -> bool:
    status = await pool.execute(
        """UPDATE notifications SET read_at = coalesce(read_at, now())
           WHERE id = $1 AND recipient = $2 AND channel = 'inbox'""",
        notification_id,
        recipient,
    )
    return status != "UPDATE 0"


async def mark_all_read(pool: Pool, *, recipient: str) -> int:
    status = await pool.execute(
        """UPDATE notifications SET read_at = now()
           WHERE recipient = $1 AND channel = 'inbox' AND read_at IS NULL""",
        recipient,
    )
    return int(status.split()[-1])


# --- deliveries, for operators -------------------------------------------------------------


async def deliveries(
    pool: Pool,
    *,
    status: str | None,
    channel: str | None,
    recipient: str | None,
    order_id: UUID | None,
    limit: int,
    offset: int,
) -> tuple[list[Delivery], int]:
    where = """($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR channel = $2)
               AND ($3::text IS NULL OR recipient = $3) AND ($4::uuid IS NULL OR order_id = $4)"""
    args = (status, channel, recipient, order_id)
    rows = await pool.fetch(
        f"""SELECT {_DELIVERY_COLUMNS} FROM notifications WHERE {where}
            ORDER BY created_at DESC, id LIMIT $5 OFFSET $6""",
        *args,
        limit,
        offset,
    )
    total = await pool.fetchval(f"SELECT count(*) FROM notifications WHERE {where}", *args)
    return [Delivery.of(r) for r in rows], int(total)


async def delivery(pool: Pool | Connection, *, delivery_id: UUID) -> Delivery | None:
    row = await pool.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS} FROM notifications WHERE id = $1", delivery_id
    )
    return _delivery(row)


async def retry(conn: Connection, *, delivery_id: UUID) -> Delivery | None:
    """A failed delivery back to pending, due now, with its attempts counted anew."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""UPDATE notifications
            SET status = 'pending', attempts = 0, next_attempt_at = now(), failed_at = NULL,
                updated_at = now()
            WHERE id = $1 AND status = 'failed'
            RETURNING {_DELIVERY_COLUMNS}""",
        delivery_id,
    )
    return _delivery(row)


# --- the delivery worker -------------------------------------------------------------------


async def next_due(conn: Connection, *, channel: str) -> Delivery | None:
    """The channel's next due delivery, locked; replicas skip each other's rows.

    A row still `sending` whose lease has run out belongs to a worker that died mid-send.
    """
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT {_DELIVERY_COLUMNS} FROM notifications
            WHERE channel = $1 AND status IN ('pending', 'sending') AND next_attempt_at <= now()
            ORDER BY next_attempt_at, created_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED""",
        channel,
    )
    return _delivery(row)


async def start_sending(conn: Connection, *, delivery_id: UUID, lease: float) -> int:
    """Count the attempt and lease the row to this worker; returns the attempt number."""
    attempts: int = await conn.fetchval(
        """UPDATE notifications
           SET status = 'sending', attempts = attempts + 1, updated_at = now(),
               next_attempt_at = clock_timestamp() + make_interval(secs => $2)
           WHERE id = $1
           RETURNING attempts""",
        delivery_id,
        lease,
    )
    return attempts


async def postpone(conn: Connection, *, delivery_id: UUID, until: datetime) -> None:
    await conn.execute(
        """UPDATE notifications SET status = 'pending', next_attempt_at = $2, updated_at = now()
           WHERE id = $1""",
        delivery_id,
        until,
    )


async def mark_delivered(conn: Connection, *, delivery_id: UUID, attempt: int) -> Delivery | None:
    """None when the row is no longer this attempt's (its lease ran out and it moved on)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""UPDATE notifications
            SET status = 'delivered', delivered_at = now(), updated_at = now(), last_error = NULL
            WHERE id = $1 AND status = 'sending' AND attempts = $2
            RETURNING {_DELIVERY_COLUMNS}""",
        delivery_id,
        attempt,
    )
    return _delivery(row)


async def schedule_retry(
    conn: Connection, *, delivery_id: UUID, attempt: int, delay: float, error: str
) -> bool:
    status = await conn.execute(
        """UPDATE notifications
           SET status = 'pending', last_error = $3, updated_at = now(),
               next_attempt_at = clock_timestamp() + make_interval(secs => $4)
           WHERE id = $1 AND status = 'sending' AND attempts = $2""",
        delivery_id,
        attempt,
        error[:2000],
        delay,
    )
    return status != "UPDATE 0"


async def mark_failed(
    conn: Connection, *, delivery_id: UUID, attempt: int | None, error: str
) -> Delivery | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""UPDATE notifications
            SET status = 'failed', failed_at = now(), updated_at = now(), last_error = $3
            WHERE id = $1 AND status IN ('pending', 'sending')
                  AND ($2::int IS NULL OR attempts = $2)
            RETURNING {_DELIVERY_COLUMNS}""",
        delivery_id,
        attempt,
        error[:2000],
    )
    return _delivery(row)


async def unroutable(
    conn: Connection, *, channels: list[str], overdue_for: float
) -> list[Delivery]:
    """Deliveries on channels this service does not have (a robot removed from the contacts
    file, email switched off), due for `overdue_for` seconds already, locked."""
    rows = await conn.fetch(
        f"""SELECT {_DELIVERY_COLUMNS} FROM notifications
                WHERE status IN ('pending', 'sending')
                      AND next_attempt_at <= now() - make_interval(secs => $2)
                      AND channel <> 'inbox' AND NOT (channel = ANY($1::text[]))
                ORDER BY next_attempt_at
                LIMIT 100
                FOR UPDATE SKIP LOCKED""",
        channels,
        overdue_for,
    )
    return [Delivery.of(r) for r in rows]


# --- rate limits of chat robots ------------------------------------------------------------


async def lock_target(conn: Connection, *, target: str) -> None:
    """Serialise the rate check of one robot across workers and replicas (transaction-long)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"rate:{target}")


async def rate_free_at(
    conn: Connection, *, target: str, limit: int, window: float, lease: float
) -> datetime | None:
    """None when one more message fits the robot's window now; else when to look again.

    A message counts from its claim until `window` after its call returned, so the robot
    never sees more than `limit` arrive within any `window`, whatever the network's delay.
    """
    await conn.execute(
        """DELETE FROM rate_slots WHERE target = $1
           AND claimed_at < clock_timestamp() - make_interval(secs => $2)""",
        target,
        window + lease,
    )
    row = await conn.fetchrow(
        """SELECT count(*) AS used,
                  min(finished_at) + make_interval(secs => $2) AS free_at
           FROM rate_slots
           WHERE target = $1
             AND (finished_at > clock_timestamp() - make_interval(secs => $2)
                  OR (finished_at IS NULL
                      AND claimed_at > clock_timestamp() - make_interval(secs => $3)))""",
        target,
        window,
        lease,
    )
    assert row is not None
    if int(row["used"]) < limit:
        return None
    free_at: datetime | None = row["free_at"]
    if free_at is None:  # every counted message is still in flight
        free_at = await conn.fetchval(
            "SELECT clock_timestamp() + make_interval(secs => $1)", min(window, 1.0)
        )
    return free_at


async def take_slot(conn: Connection, *, target: str, delivery_id: UUID) -> None:
    await conn.execute(
        "INSERT INTO rate_slots (target, delivery_id) VALUES ($1, $2)", target, delivery_id
    )


async def finish_slot(conn: Connection, *, delivery_id: UUID) -> None:
    await conn.execute(
        """UPDATE rate_slots SET finished_at = clock_timestamp()
           WHERE delivery_id = $1 AND finished_at IS NULL""",
        delivery_id,
    )
