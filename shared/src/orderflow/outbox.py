"""Transactional outbox: messages are written with the state change that causes them and
published by a relay after commit, so a crash can delay a message but never lose it.

Replicas share the table with `FOR UPDATE SKIP LOCKED`; LISTEN/NOTIFY wakes the relay as
soon as a transaction commits, and polling backs it up when a notification is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from .db import Connection, Pool
from .messages.base import Message
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


class OutboxRelay:
    """Publishes pending outbox rows with confirms and marks them sent."""

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
        self._pool = pool
        self._publisher = publisher
        self._schema = schema
        self._batch = batch
        self._poll = poll_interval
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Connection | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._schema}")

    async def stop(self) -> None:
        """Publish what is already due, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self._unlisten()

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            listener = await self._pool.acquire()
            self._listener = listener
            await listener.add_listener(channel_name(self._schema), self._on_notify)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("outbox listen failed, polling only", error=repr(exc))
            await self._unlisten()

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.remove_listener(channel_name(self._schema), self._on_notify)
        with contextlib.suppress(Exception):
            await self._pool.release(conn)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
                published = await self.drain_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: back off and try again
                log.warning("outbox relay error", error=repr(exc))
                await self._unlisten()
                published = 0
                if self._stopping:
                    return
                await asyncio.sleep(self._poll)
            if self._stopping and published == 0:
                return
            if published < self._batch:
                self._wake.clear()
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)

    async def drain_once(self) -> int:
        """Publish one batch; returns how many messages were confirmed."""
        if not self._publisher.is_connected:
            # the robust connection is coming back by itself; attempts are not counted
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, message_id, exchange, routing_key, message_type, correlation_id,
                          reply_to, mandatory, headers, body, created_at, attempts
                   FROM outbox
                   WHERE sent_at IS NULL AND next_attempt_at <= now()
                   ORDER BY id
                   LIMIT $1
                   FOR UPDATE SKIP LOCKED""",
                self._batch,
            )
            if not rows:
                OUTBOX_PENDING.set(
                    await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
                )
                return 0
            # issued in id order on one channel, so the broker receives them in that order;
            # the confirms are awaited together
            results = await asyncio.gather(
                *(self._publish(row) for row in rows), return_exceptions=True
            )
            sent = [row["id"] for row, res in zip(rows, results, strict=True) if res is None]
            if sent:
                await conn.execute(
                    "UPDATE outbox SET sent_at = now(), attempts = attempts + 1 "
                    "WHERE id = ANY($1::bigint[])",
                    sent,
                )
            for row, res in zip(rows, results, strict=True):
                if res is None:
                    OUTBOX_PUBLISHED.labels(row["message_type"]).inc()
                    continue
                OUTBOX_FAILED.inc()
                backoff = min(self._max_backoff, 0.5 * 2 ** min(row["attempts"], 10))
                log.warning(
                    "outbox publish failed",
                    message_id=str(row["message_id"]),
                    message_type=row["message_type"],
                    attempts=row["attempts"] + 1,
                    retry_in=backoff,
                    error=str(res),
                )
                await conn.execute(
                    """UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                              next_attempt_at = now() + make_interval(secs => $3)
                       WHERE id = $1""",
                    row["id"],
                    str(res)[:2000],
                    backoff,
                )
            return len(sent)

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


async def purge_sent(pool: Pool, *, older_than_days: int = 7) -> int:
    """Delete rows confirmed long ago; the inbox of each consumer keeps de-duplication."""
    result = await pool.execute(
        "DELETE FROM outbox WHERE sent_at < now() - make_interval(days => $1)", older_than_days
    )
    return int(result.split()[-1])
