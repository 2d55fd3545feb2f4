"""The reliability recipe on the real broker and database: outbox, inbox, dead letters."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aio_pika
import httpx

from orderflow import outbox, refusals, times, topology
from orderflow.consumer import Delivery, PermanentError, RetryPolicy
from orderflow.db import Connection
from orderflow.messages import OrderWithdrawn
from orderflow.service import ServiceRuntime
from orderflow.settings import ServiceSettings
from orderflow_testkit.testing import (
    Infra,
    Servers,
    eventually,
    get_messages,
    nothing_more,
    publish,
    queue_depth,
)

PROBE = topology.QueueSpec("probe.withdrawn", topology.EVENTS, ("order.withdrawn",))
SINK = topology.QueueSpec("probe.sink", topology.EVENTS, ("#",))


def make_runtime(infra: Infra, seen: list[Any]) -> ServiceRuntime:
    settings = ServiceSettings(
        database_url=infra.database_url,
        amqp_url=infra.amqp_url,
        # a probe, not one of the services: it runs as the test administrator
        orderflow_allow_guest=True,
    )
    runtime = ServiceRuntime(
        service="probe",
        schema="probe",
        package="orderflow",
        settings=settings,
        queues=[PROBE, SINK],
        declares_dead_letter_queues=True,
        retry_policy=RetryPolicy(transient_for=2, unexpected_attempts=2, base=0.01, cap=0.05),
    )

    async def on_withdrawn(conn: Connection, event: OrderWithdrawn, _: Delivery) -> None:
        if event.reason == "poison":
            raise PermanentError("unknown order", code=refusals.UNKNOWN_ORDER)
        seen.append(event.order_id)
        await conn.execute("SELECT 1")

    # a probe's queue is of no contract: no producer to check
    runtime.consume(PROBE, on_withdrawn, check_producer=False)
    return runtime


def withdrawn(reason: str | None = None) -> OrderWithdrawn:
    return OrderWithdrawn(
        order_id=uuid.uuid4(), revision=1, reason=reason, withdrawn_at=datetime.now(UTC)
    )


async def test_outbox_publishes_after_commit_with_envelope(infra: Infra, amqp: Any) -> None:
    runtime = make_runtime(infra, [])
    async with runtime.lifespan():
        event = withdrawn("customer cancelled")
        async with runtime.pool.acquire() as conn, conn.transaction():
            mid = await outbox.enqueue(
                conn, event, exchange=topology.EVENTS, correlation_id=event.order_id
            )
        [msg] = await get_messages(amqp, SINK.name, 1)
        assert msg.message_id == str(mid)
        assert msg.correlation_id == str(event.order_id)
        assert msg.type == "order.withdrawn"
        assert msg.app_id == "probe"
        assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert msg.content_type == "application/json"
        assert msg.headers["x-schema"] == "orderflow.order.withdrawn"
        # a string: a small int would travel as AMQP `b` (8-bit), a Java Byte
        assert msg.headers["x-schema-version"] == "1"
        assert str(msg.headers["traceparent"]).startswith("00-")
        assert OrderWithdrawn.model_validate_json(msg.body) == event
        await eventually(
            lambda: runtime.pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE sent_at IS NULL")
        )


async def test_rolled_back_transaction_publishes_nothing(infra: Infra, amqp: Any) -> None:
    runtime = make_runtime(infra, [])
    async with runtime.lifespan():
        try:
            async with runtime.pool.acquire() as conn, conn.transaction():
                await outbox.enqueue(conn, withdrawn(), exchange=topology.EVENTS)
                raise RuntimeError("business rule failed")
        except RuntimeError:
            pass
        await nothing_more(amqp, SINK.name, outboxes=[runtime.pool])
        assert await queue_depth(amqp, SINK.name) == 0
        assert await runtime.pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_unroutable_message_stays_in_outbox(infra: Infra) -> None:
    runtime = make_runtime(infra, [])
    async with runtime.lifespan():
        async with runtime.pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(
                conn, withdrawn(), exchange=topology.REVIEWS, routing_key="nobody-listens"
            )

        async def failed_once() -> bool:
            row = await runtime.pool.fetchrow("SELECT sent_at, attempts, last_error FROM outbox")
            return row is not None and row["attempts"] >= 1 and row["sent_at"] is None

        await eventually(failed_once)
        error = await runtime.pool.fetchval("SELECT last_error FROM outbox")
        assert "nobody-listens" in error


async def test_duplicate_delivery_has_one_effect(infra: Infra, amqp: Any) -> None:
    seen: list[Any] = []
    runtime = make_runtime(infra, seen)
    async with runtime.lifespan():
        event = withdrawn()
        body = event.model_dump_json().encode()
        mid = str(uuid.uuid4())
        for _ in range(3):
            await publish(
                amqp,
                exchange=topology.EVENTS,
                routing_key="order.withdrawn",
                body=body,
                message_id=mid,
                message_type="order.withdrawn",
            )
        await eventually(lambda: len(seen) >= 1)
        await nothing_more(amqp, PROBE.dlq, through=PROBE.name)
        assert await queue_depth(amqp, PROBE.name) == 0
        rows = await runtime.pool.fetchval(
            "SELECT count(*) FROM inbox WHERE consumer = 'probe.withdrawn' AND message_id = $1", mid
        )
        assert rows == 1
        # the effect's transaction ran for the first delivery only
        assert seen == [event.order_id]


async def test_poison_goes_to_dlq_with_reason_and_consumer_goes_on(infra: Infra, amqp: Any) -> None:
    seen: list[Any] = []
    runtime = make_runtime(infra, seen)
    async with runtime.lifespan():
        await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key="order.withdrawn",
            body=b"{not json",
            message_type="order.withdrawn",
        )
        await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key="order.withdrawn",
            body=json.dumps({"order_id": "nope"}).encode(),
            message_type="order.withdrawn",
        )
        await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key="order.withdrawn",
            body=withdrawn("poison").model_dump_json().encode(),
            message_type="order.withdrawn",
        )
        good = withdrawn()
        await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key="order.withdrawn",
            body=good.model_dump_json().encode(),
            message_type="order.withdrawn",
        )
        dead = await get_messages(amqp, PROBE.dlq, 3)
        reasons = [m.headers["x-orderflow-reason"] for m in dead]
        assert "not JSON" in reasons[0] or "invalid message" in reasons[0]
        assert "order_id" in reasons[1]
        assert reasons[2] == "unknown order"  # the sentence alone, no class name
        codes = [m.headers["x-orderflow-reason-code"] for m in dead]
        assert codes[0] == (
            refusals.NOT_JSON if "not JSON" in reasons[0] else refusals.INVALID_MESSAGE
        )
        assert codes[1:] == [refusals.INVALID_MESSAGE, refusals.UNKNOWN_ORDER]
        assert not any("x-orderflow-error" in (m.headers or {}) for m in dead)
        stamp = str(dead[0].headers["x-orderflow-dead-lettered-at"])
        assert re.fullmatch(times.PATTERN, stamp), stamp
        assert all(m.headers["x-orderflow-queue"] == PROBE.name for m in dead)
        await eventually(lambda: seen == [good.order_id])
        assert await queue_depth(amqp, PROBE.name) == 0


async def test_message_without_id_is_dead_lettered(
    infra: Infra, amqp: Any, servers: Servers
) -> None:
    # aio-pika always fills in a message_id, so publish as another client would: through the
    # management API, which sends the properties exactly as given
    assert servers.management_api, "the management API is needed for this test"
    parts = urlsplit(servers.management_api)
    base = f"{parts.scheme}://{parts.hostname}:{parts.port}"
    runtime = make_runtime(infra, [])
    async with runtime.lifespan():
        async with httpx.AsyncClient(
            base_url=base, auth=(parts.username or "guest", parts.password or "guest")
        ) as client:
            response = await client.post(
                f"/api/exchanges/{quote(infra.vhost, safe='')}/{topology.EVENTS}/publish",
                json={
                    "properties": {"type": "order.withdrawn"},
                    "routing_key": "order.withdrawn",
                    "payload": withdrawn().model_dump_json(),
                    "payload_encoding": "string",
                },
            )
            assert response.json() == {"routed": True}
        [dead] = await get_messages(amqp, PROBE.dlq, 1)
        assert "message_id" in dead.headers["x-orderflow-reason"]
        assert dead.headers["x-orderflow-reason-code"] == refusals.MISSING_MESSAGE_ID


def make_flaky_runtime(
    infra: Infra, *, failures: int, delay: float, effects: list[Any], started: asyncio.Event
) -> ServiceRuntime:
    """A consumer whose first `failures` attempts hit a transient fault, then take `delay`."""
    settings = ServiceSettings(
        database_url=infra.database_url,
        amqp_url=infra.amqp_url,
        # a probe, not one of the services: it runs as the test administrator
        orderflow_allow_guest=True,
    )
    runtime = ServiceRuntime(
        service="probe",
        schema="probe",
        package="orderflow",
        settings=settings,
        queues=[PROBE],
        declares_dead_letter_queues=True,
        retry_policy=RetryPolicy(transient_for=30, base=0.01, cap=0.05),
    )
    attempts = {"n": 0}

    async def on_withdrawn(conn: Connection, event: OrderWithdrawn, _: Delivery) -> None:
        attempts["n"] += 1
        if attempts["n"] <= failures:
            raise ConnectionResetError("database connection lost")
        started.set()
        await asyncio.sleep(delay)
        await conn.execute("SELECT 1")
        effects.append(event.order_id)

    runtime.consume(PROBE, on_withdrawn, check_producer=False)
    return runtime


async def test_transient_fault_is_retried_and_applied_once(infra: Infra, amqp: Any) -> None:
    effects: list[Any] = []
    runtime = make_flaky_runtime(
        infra, failures=3, delay=0, effects=effects, started=asyncio.Event()
    )
    async with runtime.lifespan():
        event = withdrawn()
        await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key="order.withdrawn",
            body=event.model_dump_json().encode(),
            message_type="order.withdrawn",
        )
        await eventually(lambda: effects == [event.order_id])
        await nothing_more(amqp, PROBE.dlq, through=PROBE.name)
        assert await queue_depth(amqp, PROBE.name) == 0
        assert await queue_depth(amqp, PROBE.dlq) == 0
        # the failed attempts rolled back their inbox claim with their effect
        assert await runtime.pool.fetchval("SELECT count(*) FROM inbox") == 1


async def test_shutdown_finishes_the_message_in_flight(infra: Infra, amqp: Any) -> None:
    effects: list[Any] = []
    started = asyncio.Event()
    runtime = make_flaky_runtime(infra, failures=0, delay=1.5, effects=effects, started=started)
    await runtime.start()
    try:
        event = withdrawn()
        await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key="order.withdrawn",
            body=event.model_dump_json().encode(),
            message_type="order.withdrawn",
        )
        await asyncio.wait_for(started.wait(), 15)
    finally:
        await runtime.stop()  # as on SIGTERM: consumers stop, the in-flight message finishes
    assert effects == [event.order_id]
    # acknowledged before the connection closed: nothing comes back
    assert await queue_depth(amqp, PROBE.name) == 0
