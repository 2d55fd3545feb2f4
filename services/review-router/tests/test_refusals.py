"""No silent refusal, on the real broker: a department message the router refuses is
answered on its `reply_to` with a `message.refused` carrying a stable code, and lands in
the dead-letter queue with the same code; the reply queue is the department user's own."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aio_pika
import aiormq
import httpx
import pytest

from orderflow import refusals, topology
from orderflow.messages import MessageRefused, ReviewAnnotated
from orderflow_testkit.testing import Infra, get_messages

from .test_router import VERDICTS_DLQ, Events, product_order, submit, take
from .test_router import events as events  # the fixtures
from .test_router import router as router
from .test_verdict_users import verdict_for


async def _send(
    channel: aio_pika.abc.AbstractChannel,
    body: bytes,
    *,
    message_type: str,
    routing_key: str,
    user_id: str | None,
    reply_to: str,
    correlation_id: str | None = None,
) -> str:
    exchange = await channel.get_exchange(topology.VERDICTS, ensure=False)
    mid = str(uuid.uuid4())
    await exchange.publish(
        aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=mid,
            type=message_type,
            correlation_id=correlation_id,
            reply_to=reply_to,
            user_id=user_id,
        ),
        routing_key=routing_key,
        mandatory=True,
    )
    return mid


async def _replies(queue: aio_pika.abc.AbstractQueue, count: int) -> list[Any]:
    got: list[Any] = []
    async with queue.iterator(timeout=20) as messages:
        async for message in messages:
            got.append(message)
            if len(got) == count:
                break
    return got


async def test_a_refused_department_message_is_answered_with_its_code(
    infra: Infra, amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    oid = (await submit(amqp, product_order(technical=False))).order_id
    [review] = await take(amqp, "supervisor")
    user = infra.user("dept-supervisor")
    connection = await aio_pika.connect(infra.url_as("dept-supervisor"))
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        # the department's own reply queue, `<user>.*`: its permissions allow it
        replies = await channel.declare_queue(f"{user}.replies", exclusive=True)
        verdict = verdict_for(review)
        # 1. without user_id: nobody vouches for the sender
        unvouched = await _send(
            channel,
            verdict.model_dump_json().encode(),
            message_type=verdict.message_type,
            routing_key="supervisor",
            user_id=None,
            reply_to=replies.name,
            correlation_id=str(oid),
        )
        # 2. a body that breaks the schema, without a correlation_id
        broken = await _send(
            channel,
            json.dumps({"review_id": str(review.review_id), "decision": "maybe"}).encode(),
            message_type=verdict.message_type,
            routing_key="supervisor",
            user_id=user,
            reply_to=replies.name,
        )
        # 3. an annotation for another department than the user speaks for
        other = ReviewAnnotated.model_validate(
            {
                "review_id": str(review.review_id),
                "order_id": str(oid),
                "revision": review.revision,
                "department": "finance",
                "reviewer": {"id": "li.ming"},
                "annotations": [{"field": "/payment/terms", "message": "too long"}],
            }
        )
        foreign = await _send(
            channel,
            other.model_dump_json().encode(),
            message_type=other.message_type,
            routing_key="finance",
            user_id=user,
            reply_to=replies.name,
            correlation_id=str(oid),
        )
        answers = await _replies(replies, 3)
    finally:
        await connection.close()

    by_id = {}
    for answer in answers:
        assert answer.type == MessageRefused.message_type
        assert answer.headers["x-schema"] == "orderflow.message.refused"
        # a string header (AMQP `S`), not a small int sent as 8-bit `b`
        version = answer.headers["x-schema-version"]
        assert isinstance(version, str) and version == "1", repr(version)
        refused = MessageRefused.model_validate_json(answer.body)
        by_id[refused.refused_message_id] = (answer, refused)
    assert set(by_id) == {unvouched, broken, foreign}

    answer, refused = by_id[unvouched]
    assert answer.correlation_id == str(oid)
    assert refused.code == refusals.MISSING_USER_ID
    assert refused.refused_type == "review.verdict"
    assert "without user_id" in refused.reason

    answer, refused = by_id[broken]
    assert answer.correlation_id == broken  # no correlation_id: its message_id
    assert refused.code == refusals.INVALID_MESSAGE
    assert "/decision" in [p.pointer for p in refused.problems]

    answer, refused = by_id[foreign]
    assert refused.code == refusals.WRONG_DEPARTMENT
    assert refused.refused_type == "review.annotation"

    dead = await get_messages(amqp, VERDICTS_DLQ, 3)
    codes = {m.message_id: m.headers["x-orderflow-reason-code"] for m in dead}
    assert codes == {
        unvouched: refusals.MISSING_USER_ID,
        broken: refusals.INVALID_MESSAGE,
        foreign: refusals.WRONG_DEPARTMENT,
    }
    for message in dead:
        reason = str(message.headers["x-orderflow-reason"])
        assert reason == by_id[message.message_id][1].reason
        assert "Error" not in reason and "ReviewAnnotated" not in reason, reason
        assert "x-orderflow-error" not in message.headers


async def test_a_department_declares_only_its_own_reply_queues(infra: Infra) -> None:
    connection = await aio_pika.connect(infra.url_as("dept-finance"))
    try:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await channel.declare_queue(f"{infra.user('dept-production')}.replies", exclusive=True)
    finally:
        await connection.close()
