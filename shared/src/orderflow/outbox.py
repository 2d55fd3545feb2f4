"""Transactional outbox: messages are written with the state change that causes them and
published by a relay after commit, so a crash can delay a message but never lose it.

Replicas share the table with `FOR UPDATE SKIP LOCKED`; LISTEN/NOTIFY wakes the relay as
soon as a transaction commits, and polling backs it up when a notification is missed.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from .db import Connection, Pool
from .messages.base import Message
from .notified import Listener, NotifiedLoop
from .publisher import Publisher, PublishError
from .topology import EVENTS
from .tracing import new_traceparent

log = structlog.get_logger(__name__)

OUTBOX_PUBLISHED = Counter(
    "orderflow_outbox_published_total", "Messages published from the outbox", ["message_type"]
)
OUTBOX_FAILED = Counter(
    "orderflow_outbox_publish_failures_total", "Failed publish attempts from the outbox"
)
OUTBOX_PENDING = Gauge("orderflow_outbox_pending", "Outbox messages not yet confirmed")


def channel_name(schema: str) -> str:
    return f"{schema}_outbox"


def envelope_headers(message: type[Message] | Message) -> dict[str, Any]:
    """The headers every message of the product carries. Every value is a string: AMQP
    encodes a small integer as an 8- or 16-bit type (`b`, `s`), which Java and .NET read as
    `Byte`/`sbyte`; a string reads the same in every client."""
    return {
        "x-schema": message.schema_name(),
        "x-schema-version": str(message.schema_version),
        "traceparent": new_traceparent(),
    }


async def enqueue(
    conn: Connection,
    message: Message,
    *,
    exchange: str,
    routing_key: str | None = None,
    correlation_id: str | uuid.UUID | None = None,
    reply_to: str | None = None,
    mandatory: bool = True,
    message_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Write a message to the outbox inside the caller's transaction.

    The routing key defaults to the message type, which is what `orderflow.events` and
    `orderflow.commands` route on.
    """
    mid = message_id or uuid.uuid4()
    await conn.execute(
        """INSERT INTO outbox (message_id, exchange, routing_key, message_type, correlation_id,
                               reply_to, mandatory, headers, body)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        mid,
        exchange,
        routing_key if routing_key is not None else message.message_type,
        message.message_type,
        str(correlation_id) if correlation_id is not None else None,
        reply_to,
        mandatory,
        envelope_headers(message),
        message.model_dump_json().encode(),
    )
    # a trigger on the table notifies the relay; listeners hear it only on commit
    return mid


async def publish_event(
    conn: Connection, event: Message, *, correlation_id: str | uuid.UUID | None = None
) -> uuid.UUID:
    """Write an event for `orderflow.events` to the outbox in the caller's transaction,
    routed on its type; the correlation id is the order's id, so one order's messages can
    be followed across the services."""
    return await enqueue(conn, event, exchange=EVENTS, correlation_id=correlation_id)


class OutboxRelay(NotifiedLoop):
    """Publishes pending outbox rows with confirms and marks them sent.

    A batch is published at once: every publish is issued in id order on the publisher's
    one channel (so the broker receives one batch's messages, and so each order's, in the
    order they were written) and their confirms are awaited together; the confirmed rows
    are marked sent in one statement and the others retried later, each on its own."""

    def __init__(
        self,
        pool: Pool,
        publisher: Publisher,
        *,
        schema: str,
        batch: int = 100,
        poll_interval: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        super().__init__(
            name=f"outbox-relay-{schema}",
            poll_interval=poll_interval,
            listener=Listener(
                lambda: pool, channel_name(schema), lambda _: self.wake(), on_lost=self.wake
            ),
            drain_on_stop=True,  # stop() publishes what is already due first
            stop_timeout=10.0,
        )
        self._pool = pool
        self._publisher = publisher
        self._schema = schema
        self._batch = batch
        self._max_backoff = max_backoff

    async def step(self) -> bool:
        taken, _ = await self._drain()
        return taken == self._batch  # a full batch: more may be due

    async def drain_once(self) -> int:
        """Publish one batch; returns how many messages were confirmed."""
        _, confirmed = await self._drain()
        return confirmed

    async def _drain(self) -> tuple[int, int]:
        """Publish one batch; how many rows it took and how many of them were confirmed."""
        if not self._publisher.is_connected:
            # the robust connection is coming back by itself; attempts are not counted
            return 0, 0
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, self._batch)
            if not rows:
                OUTBOX_PENDING.set(await conn.fetchval(_PENDING))
                return 0, 0
            results = await asyncio.gather(
                *(self._publish(row) for row in rows), return_exceptions=True
            )
            sent = [row for row, res in zip(rows, results, strict=True) if res is None]
            if sent:
                await conn.execute(_MARK_SENT, [row["id"] for row in sent])
                for row in sent:
                    OUTBOX_PUBLISHED.labels(row["message_type"]).inc()
            failed = [(row, res) for row, res in zip(rows, results, strict=True) if res is not None]
            if failed:
                await self._retry_later(conn, failed)
            return len(rows), len(sent)

    async def _retry_later(
        self, conn: Connection, failed: list[tuple[asyncpg.Record, BaseException]]
    ) -> None:
        """Each failed row is tried again after its own back-off (one statement for all)."""
        backoffs = []
        for row, error in failed:
            OUTBOX_FAILED.inc()
            backoff = min(self._max_backoff, 0.5 * 2 ** min(row["attempts"], 10))
            backoffs.append(backoff)
            log.warning(
                "outbox publish failed",
                message_id=str(row["message_id"]),
                message_type=row["message_type"],
                attempts=row["attempts"] + 1,
                retry_in=backoff,
                error=str(error),
            )
        await conn.execute(
            _RETRY_LATER,
            [row["id"] for row, _ in failed],
            [str(error)[:2000] for _, error in failed],
            backoffs,
        )

    async def _publish(self, row: asyncpg.Record) -> None:
        if not self._publisher.is_connected:
            raise PublishError("broker connection is down")
        created: datetime = row["created_at"]
        await self._publisher.publish(
            exchange=row["exchange"],
            routing_key=row["routing_key"],
            body=bytes(row["body"]),
            message_id=str(row["message_id"]),
            message_type=row["message_type"],
            correlation_id=row["correlation_id"],
            reply_to=row["reply_to"],
            headers=row["headers"],
            timestamp=created.astimezone(UTC),
            mandatory=row["mandatory"],
        )


# The due rows in id order; `outbox_due` (id WHERE sent_at IS NULL) walks them in that order,
# so the plan reads only pending rows however many sent ones the table keeps.
_CLAIM = """SELECT id, message_id, exchange, routing_key, message_type, correlation_id,
                   reply_to, mandatory, headers, body, created_at, attempts
            FROM outbox
            WHERE sent_at IS NULL AND next_attempt_at <= now()
            ORDER BY id
            LIMIT $1
            FOR UPDATE SKIP LOCKED"""
_PENDING = "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
_MARK_SENT = (
    "UPDATE outbox SET sent_at = now(), attempts = attempts + 1 WHERE id = ANY($1::bigint[])"
)
_RETRY_LATER = """UPDATE outbox SET attempts = attempts + 1, last_error = f.error,
                         next_attempt_at = now() + make_interval(secs => f.backoff)
                  FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS f(id, error, backoff)
                  WHERE outbox.id = f.id"""


async def purge_sent(pool: Pool, *, older_than_days: int = 7) -> int:
    """Delete rows confirmed long ago; the inbox of each consumer keeps de-duplication."""
    result = await pool.execute(
        "DELETE FROM outbox WHERE sent_at < now() - make_interval(days => $1)", older_than_days
    )
    return int(result.split()[-1])
