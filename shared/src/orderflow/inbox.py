"""Inbox: a consumer records each message id in the same transaction as its effect, so a
redelivered message is acknowledged and does nothing."""

from __future__ import annotations

from .db import Connection


async def claim(
    conn: Connection, *, consumer: str, message_id: str, message_type: str | None = None
) -> bool:
    """True when this consumer has not applied the message before (inside the caller's
    transaction: if the effect rolls back, so does the claim)."""
    row = await conn.fetchval(
        """INSERT INTO inbox (consumer, message_id, message_type) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING 1""",
        consumer,
        message_id,
        message_type,
    )
    return row is not None
