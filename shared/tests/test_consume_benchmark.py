"""Per-message cost of the consume path, on the real broker and database (slow: run it
with `-m slow`): N events wait in one queue, one subscriber drains them, each in its own
inbox transaction with an empty effect, so what is measured is the framework's cost per
message (faststream, the reliability middleware, parsing, the inbox claim).

It prints the wall time and the consuming process's CPU time per message. The assertion
only checks that every message was applied once; the figures are for the decision record
(docs/decisions/0027), compared across versions of the code.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import pytest

from orderflow import busaccess, topology
from orderflow.consumer import Delivery
from orderflow.db import Connection
from orderflow.messages import OrderWithdrawn
from orderflow.service import ServiceRuntime
from orderflow.settings import ServiceSettings
from orderflow_testkit.testing import Infra, eventually

pytestmark = pytest.mark.slow

BENCH = topology.QueueSpec("probe.bench", topology.EVENTS, ("order.withdrawn",))
N = int(os.environ.get("ORDERFLOW_BENCH_MESSAGES", "3000"))


def bench_runtime(infra: Infra) -> ServiceRuntime:
    settings = ServiceSettings(
        database_url=infra.database_url,
        amqp_url=infra.amqp_url,
        orderflow_allow_guest=True,
        # the producer check runs as in a service: the events come from the router's user
        orderflow_bus_users={s: infra.user(s) for s in busaccess.SERVICES},
    )
    runtime = ServiceRuntime(
        service="probe",
        schema="probe",
        package="orderflow",
        settings=settings,
        queues=[BENCH],
        declares_dead_letter_queues=True,
    )

    async def applied(conn: Connection, event: OrderWithdrawn, delivery: Delivery) -> None:
        """Nothing but the inbox claim the runtime makes."""

    runtime.consume(BENCH, applied)
    return runtime


async def fill(infra: Infra, n: int) -> None:
    body = OrderWithdrawn(
        order_id=uuid.uuid4(), revision=1, withdrawn_at=datetime.now(UTC)
    ).model_dump_json()
    user = infra.user("review-router")
    async with await aio_pika.connect(infra.url_as("review-router")) as conn:
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.EVENTS)
        for _ in range(n):
            await exchange.publish(
                aio_pika.Message(
                    body.encode(),
                    content_type="application/json",
                    message_id=str(uuid.uuid4()),
                    type="order.withdrawn",
                    user_id=user,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="order.withdrawn",
            )


async def test_per_message_cost_of_one_subscriber(infra: Infra, amqp: Any) -> None:
    async with amqp.channel() as channel:
        await topology.declare_queue(channel, BENCH)
    await fill(infra, N)
    runtime = bench_runtime(infra)
    marks: dict[str, float] = {}
    start_consumers = runtime.broker.start

    async def timed_start() -> None:
        # the clock starts when the consumers do: pool, migrations and relay are left out
        marks["wall"], marks["cpu"] = time.perf_counter(), time.process_time()
        await start_consumers()

    runtime.broker.start = timed_start  # type: ignore[method-assign]
    probe = await asyncpg.connect(infra.database_url)
    try:
        async with runtime.lifespan():

            async def drained() -> bool:
                return bool(await probe.fetchval("SELECT count(*) FROM probe.inbox") == N)

            await eventually(drained, timeout=600, interval=0.05)
            wall = time.perf_counter() - marks["wall"]
            cpu = time.process_time() - marks["cpu"]
    finally:
        await probe.close()
    print(
        f"\nconsume benchmark: {N} messages, {N / wall:.0f} msg/s, "
        f"{wall / N * 1e3:.3f} ms wall and {cpu / N * 1e3:.3f} ms CPU per message"
    )
