"""The outbox relay on the real broker and database: wake-ups, batches, order, failures."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest

from orderflow import outbox, topology
from orderflow.db import Pool, create_pool, migrate
from orderflow.messages import OrderWithdrawn
from orderflow.publisher import Publisher
from orderflow_testkit.testing import Infra, eventually, get_messages

SCHEMA = "relaytest"
QUEUE = "relaytest.withdrawn"
LONG_POLL = 30.0  # every wait below is far shorter: a pass never came from the poll


def withdrawn() -> OrderWithdrawn:
    return OrderWithdrawn(
        order_id=uuid.uuid4(), revision=1, reason="test", withdrawn_at=datetime.now(UTC)
    )


@pytest.fixture
async def pool(infra: Infra) -> AsyncIterator[Pool]:
    made = await create_pool(infra.database_url, schema=SCHEMA)
    await migrate(made, schema=SCHEMA, package="orderflow")
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def queue(amqp: Any) -> str:
    async with amqp.channel() as channel:
        q = await channel.declare_queue(QUEUE, durable=True)
        await q.bind(topology.EVENTS, "order.withdrawn")
    return QUEUE


class GatedPublisher(Publisher):
    """Holds its first publish until the test opens the gate, so a drain is in progress."""

    def __init__(self, url: str) -> None:
        super().__init__(url, app_id="relaytest")
        self.in_drain = asyncio.Event()
        self.gate = asyncio.Event()

    async def publish(self, **kwargs: Any) -> None:
        if not self.gate.is_set():
            self.in_drain.set()
            await self.gate.wait()
        await super().publish(**kwargs)


class HearingRelay(outbox.OutboxRelay):
    """The relay, telling the test when a notification reached it."""

    heard: asyncio.Event

    def wake(self) -> None:
        self.heard.set()
        super().wake()


async def enqueue(pool: Pool, *events: OrderWithdrawn, correlation: Any = None) -> list[uuid.UUID]:
    async with pool.acquire() as conn, conn.transaction():
        return [
            await outbox.publish_event(conn, e, correlation_id=correlation or e.order_id)
            for e in events
        ]


async def sent(pool: Pool, mid: uuid.UUID) -> bool:
    return bool(
        await pool.fetchval("SELECT sent_at IS NOT NULL FROM outbox WHERE message_id = $1", mid)
    )


async def test_a_row_committed_during_a_drain_is_published_without_waiting_for_the_poll(
    infra: Infra, pool: Pool, queue: str
) -> None:
    publisher = GatedPublisher(infra.amqp_url)
    await publisher.connect()
    relay = HearingRelay(pool, publisher, schema=SCHEMA, poll_interval=LONG_POLL)
    relay.heard = asyncio.Event()
    relay.start()
    try:
        [first] = await enqueue(pool, withdrawn())
        await asyncio.wait_for(publisher.in_drain.wait(), timeout=10)
        relay.heard.clear()
        [second] = await enqueue(pool, withdrawn())  # committed while the drain is held
        await asyncio.wait_for(relay.heard.wait(), timeout=10)  # its notification arrived
        publisher.gate.set()
        await eventually(lambda: sent(pool, first), timeout=10)
        await eventually(lambda: sent(pool, second), timeout=10)
    finally:
        publisher.gate.set()
        await relay.stop()
        await publisher.close()


async def test_a_batch_keeps_each_orders_messages_in_the_order_written(
    infra: Infra, amqp: Any, pool: Pool, queue: str
) -> None:
    orders = [uuid.uuid4() for _ in range(5)]
    written: dict[str, list[str]] = {str(o): [] for o in orders}
    for _ in range(50):  # 250 rows, interleaved, in three batches of up to 100
        for order in orders:
            [mid] = await enqueue(pool, withdrawn(), correlation=order)
            written[str(order)].append(str(mid))
    publisher = Publisher(infra.amqp_url, app_id="relaytest")
    await publisher.connect()
    relay = outbox.OutboxRelay(pool, publisher, schema=SCHEMA, batch=100, poll_interval=LONG_POLL)
    relay.start()
    try:
        messages = await get_messages(amqp, queue, 250)
    finally:
        await relay.stop()
        await publisher.close()
    received: dict[str, list[str]] = {str(o): [] for o in orders}
    for message in messages:
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        received[str(message.correlation_id)].append(str(message.message_id))
    assert received == written
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0


async def test_a_row_that_fails_in_a_batch_is_retried_later_and_the_others_are_sent(
    infra: Infra, pool: Pool, queue: str
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        good = [await outbox.publish_event(conn, withdrawn()) for _ in range(3)]
        bad = await outbox.enqueue(
            conn, withdrawn(), exchange=topology.REVIEWS, routing_key="nobody-listens"
        )
        good += [await outbox.publish_event(conn, withdrawn()) for _ in range(3)]
    publisher = Publisher(infra.amqp_url, app_id="relaytest")
    await publisher.connect()
    relay = outbox.OutboxRelay(pool, publisher, schema=SCHEMA, poll_interval=LONG_POLL)
    try:
        assert await relay.drain_once() == 6  # one batch: the confirmed ones
    finally:
        await publisher.close()
    for mid in good:
        assert await sent(pool, mid)
    row = await pool.fetchrow(
        "SELECT sent_at, attempts, last_error, next_attempt_at > now() AS later FROM outbox "
        "WHERE message_id = $1",
        bad,
    )
    assert row["sent_at"] is None and row["attempts"] == 1 and row["later"]
    assert "nobody-listens" in row["last_error"]


async def test_stop_publishes_what_is_already_due(infra: Infra, pool: Pool, queue: str) -> None:
    publisher = GatedPublisher(infra.amqp_url)
    await publisher.connect()
    relay = outbox.OutboxRelay(pool, publisher, schema=SCHEMA, batch=10, poll_interval=LONG_POLL)
    relay.start()
    try:
        mids = await enqueue(pool, *(withdrawn() for _ in range(25)))
        await asyncio.wait_for(publisher.in_drain.wait(), timeout=10)
        stopping = asyncio.create_task(relay.stop())
        publisher.gate.set()
        await asyncio.wait_for(stopping, timeout=15)
    finally:
        publisher.gate.set()
        await publisher.close()
    for mid in mids:
        assert await sent(pool, mid)
