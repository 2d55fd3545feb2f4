"""Dead-letter tooling: list, show, replay or discard what landed in a `<queue>.dlq`.

Listing is non-destructive: messages are taken without acknowledgement and given back
(`nack` with requeue) once all are read. Replaying sends a message straight to the queue it
failed in (through the default exchange), not to its original exchange, so the consumers
that handled it fine do not see it again; their inboxes would ignore it anyway.
Discarding acknowledges it after a copy, with the operator's note, went to `ops.discarded`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from . import busaccess, refusals, times, topology

DISCARDED = "ops.discarded"
REASON = "x-orderflow-reason"
REASON_CODE = "x-orderflow-reason-code"  # consumer.REASON_CODE


@dataclass
class DeadLetter:
    queue: str  # the queue it failed in
    message_id: str | None
    message_type: str | None
    correlation_id: str | None
    code: str  # a code of `orderflow.refusals`
    reason: str
    dead_lettered_at: str | None
    service: str | None
    headers: dict[str, Any] = field(default_factory=dict)
    body: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def known_dead_letter_queues(departments: Iterable[str] = ()) -> list[str]:
    specs = [*topology.SERVICE_QUEUES, *(topology.department_queue(d) for d in departments)]
    return sorted({spec.dlq for spec in specs})


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, datetime):
        return times.format_time(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _time(value: Any) -> str | None:
    """A time header as Orderflow writes times (`...T14:05:09.120Z`); None when it is not
    one (the header itself is still in `headers`)."""
    value = _plain(value)
    try:
        return times.format_time(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


def _reason(headers: dict[str, Any]) -> str:
    if REASON in headers:
        return str(_plain(headers[REASON]))
    # dead-lettered by RabbitMQ itself (delivery limit, a reject): its x-death says why
    deaths = headers.get("x-death") or []
    if deaths:
        first = _plain(deaths[0])
        return f"rabbitmq: {first.get('reason')} (count {first.get('count')})"
    return "unknown"


def _replays(headers: dict[str, Any]) -> int:
    """How often the message was replayed before (an int from older versions)."""
    value = _plain(headers.get("x-orderflow-replays"))
    try:
        return max(0, int(value)) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def _code(headers: dict[str, Any]) -> str:
    if REASON_CODE in headers:
        return str(_plain(headers[REASON_CODE]))
    deaths = headers.get("x-death") or []
    # dead-lettered by RabbitMQ itself: the delivery limit is the one our queues have
    if REASON not in headers and deaths and _plain(deaths[0]).get("reason") == "delivery_limit":
        return refusals.DELIVERY_LIMIT
    return refusals.UNKNOWN


def _origin(dlq: str, headers: dict[str, Any]) -> str:
    queue = headers.get("x-orderflow-queue")
    if queue:
        return str(_plain(queue))
    return dlq.removesuffix(".dlq")


def _dead_letter_header(name: str) -> bool:
    if name == busaccess.ORIGINAL_USER:
        return False  # the consumer judges the replay by the producer recorded here
    return name.startswith(("x-orderflow-", "x-death", "x-first-death", "x-last-death"))


def _connection_user(connection: AbstractConnection) -> str | None:
    url = getattr(connection, "url", None)
    user = getattr(url, "user", None)
    return str(user) if user else None


def _describe(dlq: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})
    return DeadLetter(
        queue=_origin(dlq, headers),
        message_id=message.message_id,
        message_type=message.type,
        correlation_id=message.correlation_id,
        code=_code(headers),
        reason=_reason(headers),
        dead_lettered_at=_time(headers.get("x-orderflow-dead-lettered-at")),
        service=_plain(headers.get("x-orderflow-service")),
        headers=_plain(headers),
        body=message.body.decode(errors="replace"),
    )


async def _take_all(
    channel: AbstractChannel, dlq: str, limit: int
) -> list[AbstractIncomingMessage]:
    queue = await channel.declare_queue(dlq, passive=True)
    taken: list[AbstractIncomingMessage] = []
    while len(taken) < limit:
        message = await queue.get(no_ack=False, fail=False, timeout=10)
        if message is None:
            break
        taken.append(message)
    return taken


async def list_dead_letters(
    connection: AbstractConnection, dlq: str, *, limit: int = 1000
) -> list[DeadLetter]:
    async with connection.channel() as channel:
        taken = await _take_all(channel, dlq, limit)
        try:
            return [_describe(dlq, m) for m in taken]
        finally:
            for message in taken:
                await message.nack(requeue=True)


async def replay(
    connection: AbstractConnection,
    dlq: str,
    *,
    message_ids: set[str] | None = None,
    limit: int = 1000,
) -> list[str]:
    """Send dead letters back to the queue they failed in (all, or those named); the ids.

    A replay carries the `user_id` of this connection (RabbitMQ allows no other): connect
    as the consuming service's own user, which its consumer accepts for a replay whose
    recorded original producer (`x-orderflow-original-user-id`) is the right one."""
    replayed: list[str] = []
    user = _connection_user(connection)
    async with connection.channel(publisher_confirms=True, on_return_raises=True) as channel:
        taken = await _take_all(channel, dlq, limit)
        try:
            for message in taken:
                if message_ids is not None and message.message_id not in message_ids:
                    continue
                original = dict(message.headers or {})
                # the envelope (schema, traceparent) stays; what dead-lettering added goes
                headers = {k: v for k, v in original.items() if not _dead_letter_header(k)}
                # a string, like every header the product writes (an int would travel as
                # an 8-bit AMQP `b`)
                headers["x-orderflow-replays"] = str(_replays(original) + 1)
                headers["x-orderflow-replayed-at"] = times.format_time(times.now())
                # dead-lettered by RabbitMQ itself (delivery limit): the producer's user_id
                # is still the message's own
                headers.setdefault(busaccess.ORIGINAL_USER, message.user_id or "")
                target = _origin(dlq, dict(message.headers or {}))
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        message.body,
                        headers=headers,
                        content_type=message.content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=message.message_id,
                        correlation_id=message.correlation_id,
                        reply_to=message.reply_to,
                        type=message.type,
                        app_id=message.app_id,
                        timestamp=message.timestamp,
                        user_id=user,
                    ),
                    routing_key=target,
                    mandatory=True,
                    timeout=10,
                )
                # only once the broker confirmed the replay does the dead letter go
                await message.ack()
                replayed.append(message.message_id or "")
        finally:
            for message in taken:
                if not message.processed:
                    await message.nack(requeue=True)
    return replayed


async def discard(
    connection: AbstractConnection,
    dlq: str,
    *,
    message_ids: set[str],
    note: str,
    by: str,
) -> list[str]:
    """Drop dead letters for good, keeping a copy with the note in `ops.discarded`."""
    if not note.strip():
        raise ValueError("a note is required to discard a dead letter")
    discarded: list[str] = []
    async with connection.channel(publisher_confirms=True, on_return_raises=True) as channel:
        archive = await channel.declare_queue(
            DISCARDED, durable=True, arguments={"x-queue-type": "quorum"}
        )
        taken = await _take_all(channel, dlq, 100_000)
        try:
            for message in taken:
                if message.message_id not in message_ids:
                    continue
                record = _describe(dlq, message).as_dict()
                record.update(
                    {
                        "note": note,
                        "discarded_by": by,
                        "discarded_at": times.format_time(times.now()),
                    }
                )
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        json.dumps(record, ensure_ascii=False).encode(),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=message.message_id,
                        type="ops.discarded",
                    ),
                    routing_key=archive.name,
                    mandatory=True,
                    timeout=10,
                )
                await message.ack()
                discarded.append(message.message_id or "")
        finally:
            for message in taken:
                if not message.processed:
                    await message.nack(requeue=True)
    return discarded
