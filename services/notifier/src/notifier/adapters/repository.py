"""Notifications in PostgreSQL (schema `notifier`)."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from orderflow.db import Connection, Pool

from ..domain import Notice


async def add(conn: Connection, *, event_id: str, notice: Notice) -> UUID | None:
    """Store a notification; None when this (event, recipient, channel) already has one."""
    created: UUID | None = await conn.fetchval(
        """INSERT INTO notifications (id, event_id, event_type, recipient, channel, order_id,
                                      title, body, link, data)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (event_id, recipient, channel) DO NOTHING
           RETURNING id""",
        uuid.uuid4(),
        event_id,
        notice.event_type,
        notice.recipient,
        notice.channel,
        notice.order_id,
        notice.title,
        notice.body,
        notice.link,
        notice.data,
    )
    return created


async def inbox(
    pool: Pool, *, recipient: str, unread_only: bool, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int, int]:
    """A page of the recipient's in-app notifications, newest first; with total and unread."""
    rows = await pool.fetch(
        """SELECT id, event_type, order_id, title, body, link, data, created_at, read_at
           FROM notifications
           WHERE recipient = $1 AND channel = 'inbox' AND ($2::bool IS FALSE OR read_at IS NULL)
           ORDER BY created_at DESC, id
           LIMIT $3 OFFSET $4""",
        recipient,
        unread_only,
        limit,
        offset,
    )
    counts = await pool.fetchrow(
        """SELECT count(*) AS total, count(*) FILTER (WHERE read_at IS NULL) AS unread
           FROM notifications WHERE recipient = $1 AND channel = 'inbox'""",
        recipient,
    )
    assert counts is not None
    return [dict(r) for r in rows], int(counts["total"]), int(counts["unread"])


async def mark_read(pool: Pool, *, recipient: str, notification_id: UUID) -> bool:
    status = await pool.execute(
        """UPDATE notifications SET read_at = coalesce(read_at, now())
           WHERE id = $1 AND recipient = $2 AND channel = 'inbox'""",
        notification_id,
        recipient,
    )
    return status != "UPDATE 0"
