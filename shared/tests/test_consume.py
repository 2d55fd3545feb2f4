"""The consume path on the real broker and database: the inbox keyed by the queue's name
(and the rows of the names before it), per-subscriber refusal replies, several types on one
queue."""

from __future__ import annotations

import hashlib
import json
import uuid
from importlib import resources
from typing import Any

import asyncpg
import pytest

from orderflow import refusals, topology
from orderflow.consumer import Delivery
from orderflow.db import Connection
from orderflow.messages import Message, OrderWithdrawn, SubmitOrderReply
from orderflow.service import ServiceRuntime
from orderflow.settings import ServiceSettings
from orderflow_testkit.testing import Infra, eventually, get_messages, publish

SCHEMA = "probe"
PLAIN = topology.QueueSpec("probe.plain", topology.EVENTS, ("order.withdrawn",))
REPLYING = topology.QueueSpec("probe.replying", topology.EVENTS, ("order.withdrawn",))
MIXED = topology.QueueSpec("probe.mixed", topology.EVENTS, ("order.withdrawn", "other.thing"))


def probe_runtime(infra: Infra | None, queues: list[topology.QueueSpec]) -> ServiceRuntime:
    # without a test's servers: a runtime that is never started
    settings = ServiceSettings(
        database_url=infra.database_url if infra else "postgresql://nobody@127.0.0.1/none",
        amqp_url=infra.amqp_url if infra else "amqp://127.0.0.1/none",
        orderflow_allow_guest=True,
    )
    return ServiceRuntime(
        service="probe",
        schema=SCHEMA,
        package="orderflow",
        settings=settings,
        queues=queues,
        declares_dead_letter_queues=True,
    )


async def as_before_the_upgrade(database_url: str, *, old_rows: dict[str, str]) -> None:
    """The schema as a version before 0002 and 0003 left it: migration 0001 applied, and inbox rows
    under the consumers' old names (consumer -> message id)."""
    name = "0001_outbox_inbox.sql"
    sql = resources.files("orderflow").joinpath("migrations", name).read_text(encoding="utf-8")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{SCHEMA}"; SET search_path TO "{SCHEMA}"')
        await conn.execute(sql)
        await conn.execute(
            """CREATE TABLE schema_migrations (name text PRIMARY KEY, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        await conn.execute(
            "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
            f"orderflow/{name}",
            hashlib.sha256(sql.encode()).hexdigest(),
        )
        for consumer, message_id in old_rows.items():
            await conn.execute(
                "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2)", consumer, message_id
            )
    finally:
        await conn.close()


async def test_a_message_applied_under_an_old_consumer_name_stays_a_duplicate(
    infra: Infra, amqp: Any
) -> None:
    spec = topology.NOTIFIER_APPROVED  # was "notifier.approved" in the inbox
    before = str(uuid.uuid4())
    await as_before_the_upgrade(
        infra.database_url, old_rows={"notifier.approved": before, "someone.else": before}
    )
    runtime = probe_runtime(infra, [spec])
    seen: list[str] = []

    async def approved(conn: Connection, body: dict[str, Any], delivery: Delivery) -> None:
        seen.append(delivery.message_id)

    runtime.consume(spec, approved, check_producer=False)
    async with runtime.lifespan():
        marker = str(uuid.uuid4())
        for mid in (before, marker):  # the redelivery first, then one that must be applied
            await publish(
                amqp,
                exchange=topology.EVENTS,
                routing_key="order.approved",
                body=b"{}",
                message_id=mid,
                message_type="order.approved",
            )
        await eventually(lambda: seen == [marker])
        rows = await runtime.pool.fetch("SELECT consumer, message_id FROM inbox ORDER BY 1, 2")
    assert sorted((r["consumer"], r["message_id"]) for r in rows) == sorted(
        [(spec.name, before), (spec.name, marker), ("someone.else", before)]
    )


def _withdrawn_reply(refused: refusals.Refused, _: refusals.RefusedMessage) -> Message:
    return SubmitOrderReply(accepted=False, code=refused.code, reason=refused.reason)


async def test_each_subscriber_answers_a_refusal_with_its_own_reply(
    infra: Infra, amqp: Any
) -> None:
    runtime = probe_runtime(infra, [PLAIN, REPLYING])

    async def nothing(conn: Connection, event: OrderWithdrawn, _: Delivery) -> None:
        raise AssertionError("an invalid body reached the handler")

    runtime.consume(PLAIN, nothing, check_producer=False)
    runtime.consume(REPLYING, nothing, reply=_withdrawn_reply, check_producer=False)
    async with runtime.lifespan(), amqp.channel() as channel:
        replies = await channel.declare_queue(f"probe.replies.{uuid.uuid4().hex}")
        await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key="order.withdrawn",
            body=json.dumps({"order_id": "nope"}).encode(),
            message_type="order.withdrawn",
            reply_to=replies.name,
        )
        got = await get_messages(amqp, replies.name, 2)
    by_type = {m.type: json.loads(m.body) for m in got}
    assert set(by_type) == {"message.refused", SubmitOrderReply.message_type}
    for body in by_type.values():
        assert body["code"] == refusals.INVALID_MESSAGE
    # the default reply names every field at fault, pointing into the body
    pointers = {p["pointer"] for p in by_type["message.refused"]["problems"]}
    assert "/order_id" in pointers


async def test_one_queue_of_several_types_refuses_or_ignores_the_others(
    infra: Infra, amqp: Any
) -> None:
    ignoring = topology.QueueSpec("probe.mixed-ignoring", topology.EVENTS, MIXED.routing_keys)
    runtime = probe_runtime(infra, [MIXED, ignoring])
    seen: list[tuple[str, str]] = []

    async def withdrawn(conn: Connection, event: OrderWithdrawn, d: Delivery) -> None:
        seen.append((d.queue, d.message_id))

    runtime.consume_each(MIXED, {OrderWithdrawn: withdrawn}, check_producer=False)
    runtime.consume_each(
        ignoring, {OrderWithdrawn: withdrawn}, ignore_unknown=True, check_producer=False
    )
    async with runtime.lifespan():
        other = await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key="other.thing",
            body=b"{}",
            message_type="other.thing",
        )
        event = OrderWithdrawn.model_validate(
            {"order_id": str(uuid.uuid4()), "revision": 1, "withdrawn_at": "2026-01-05T10:00:00Z"}
        )
        good = await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key="order.withdrawn",
            body=event.model_dump_json().encode(),
            message_type="order.withdrawn",
        )
        [dead] = await get_messages(amqp, MIXED.dlq, 1)
        await eventually(
            lambda: sorted(seen) == sorted([(MIXED.name, good), (ignoring.name, good)])
        )
        ignored = await runtime.pool.fetchval(
            "SELECT count(*) FROM inbox WHERE message_id = $1", other
        )
    assert dead.message_id == other
    assert dead.headers["x-orderflow-reason-code"] == refusals.UNEXPECTED_TYPE
    assert "expected one of order.withdrawn" in str(dead.headers["x-orderflow-reason"])
    assert ignored == 0  # acknowledged, not claimed: a later version may handle it
    async with amqp.channel() as channel:
        dlq = await channel.declare_queue(ignoring.dlq, passive=True)
        assert dlq.declaration_result.message_count == 0


def test_a_queue_has_one_subscriber() -> None:
    runtime = probe_runtime(None, [PLAIN])

    async def handle(conn: Connection, event: OrderWithdrawn, _: Delivery) -> None:
        pass

    runtime.consume(PLAIN, handle)
    with pytest.raises(ValueError, match=PLAIN.name):
        runtime.consume(PLAIN, handle)


def test_a_handler_without_a_model_is_refused_at_registration() -> None:
    runtime = probe_runtime(None, [PLAIN])

    async def untyped(conn, event, delivery):  # type: ignore[no-untyped-def]
        pass

    with pytest.raises(TypeError, match="annotated"):
        runtime.consume(PLAIN, untyped)
