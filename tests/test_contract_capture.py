"""What really travels matches the committed AsyncAPI documents (docs/api/*.asyncapi.json).

The four services run as processes, as in production; an order goes over the bus from an
order-submitting system through the departments' review to a drafted contract. A queue of
the test's own, bound to every exchange, sees every message on the way (and the submitter's
reply queue the reply); each one must be in a document, and its payload, its headers and
its AMQP properties must validate against that document's schemas.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import jsonschema_rs
import pytest

from orderflow import busaccess, topology
from orderflow_testkit.testing import (
    Infra,
    answer_review,
    eventually,
    example_order,
    publish,
    service_processes,
    take_review,
)

API_DIR = Path(__file__).resolve().parents[1] / "docs" / "api"

#: What the run below must have seen, so the test cannot pass on an empty capture.
EXPECTED = {
    "order.submit",
    "order.submitted",
    "review.round_opened",
    "review.sent",
    "review.requested",
    "review.annotation",
    "review.annotation_recorded",
    "review.verdict",
    "review.verdict_recorded",
    "order.approved",
    "contract.drafted",
}


@dataclass(frozen=True)
class Documented:
    """One message of one document: where it is, and its three schemas."""

    where: str
    payload: jsonschema_rs.Validator
    headers: jsonschema_rs.Validator
    properties: jsonschema_rs.Validator


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _validator(schema: dict[str, Any], document: dict[str, Any]) -> jsonschema_rs.Validator:
    # the document's components beside the schema, so its `#/components/...` refs resolve
    whole = {**schema, "components": document["components"]}
    return jsonschema_rs.Draft7Validator(whole, validate_formats=True)


def _keys(channel: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """The (exchange, routing key) pairs a channel's messages travel with."""
    amqp = channel.get("bindings", {}).get("amqp")
    if amqp is None:  # a reply: the default exchange, the queue of `reply_to`
        yield "", None
    elif amqp["is"] == "routingKey":
        yield amqp["exchange"]["name"], channel["address"]
    for bound in channel.get("x-amqp-bindings", []):
        yield bound["exchange"], bound["routingKey"]


def documented() -> dict[tuple[str, str | None, str], Documented]:
    """(exchange, routing key, AMQP type) -> the committed documents' description of it."""
    found: dict[tuple[str, str | None, str], Documented] = {}
    for path in sorted(API_DIR.glob("*.asyncapi.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        for channel_id, channel in document["channels"].items():
            for ref in channel["messages"].values():
                message = _resolve(document, ref["$ref"])
                entry = Documented(
                    where=f"{path.name} channel {channel_id} message {message['title']}",
                    payload=_validator(_resolve(document, message["payload"]["$ref"]), document),
                    headers=_validator(message.get("headers", {"type": "object"}), document),
                    properties=_validator(message["x-amqp-properties"], document),
                )
                for exchange, key in _keys(channel):
                    found.setdefault((exchange, key, message["name"]), entry)
    return found


def _header(value: Any) -> Any:
    if isinstance(value, bytes):  # an AMQP byte array (`x`), where a long string is due
        return {"bytes": value.hex()}
    if isinstance(value, datetime):
        return {"timestamp": value.isoformat()}
    if isinstance(value, dict):
        return {k: _header(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_header(v) for v in value]
    return value


def properties_of(msg: aio_pika.abc.AbstractIncomingMessage) -> dict[str, Any]:
    """The AMQP basic properties as the documents name them; `timestamp` in seconds."""
    found: dict[str, Any] = {
        "content_type": msg.content_type,
        "delivery_mode": int(msg.delivery_mode) if msg.delivery_mode is not None else None,
        "message_id": msg.message_id,
        "type": msg.type,
        "user_id": msg.user_id,
        "correlation_id": msg.correlation_id,
        "app_id": msg.app_id,
        "reply_to": msg.reply_to,
        "timestamp": int(msg.timestamp.timestamp()) if msg.timestamp is not None else None,
    }
    return {k: v for k, v in found.items() if v is not None}


def _errors(validator: jsonschema_rs.Validator, instance: Any) -> list[str]:
    return [
        f"/{'/'.join(map(str, e.instance_path))}: {e.message[:300]}"
        for e in validator.iter_errors(instance)
    ]


def check(
    msg: aio_pika.abc.AbstractIncomingMessage,
    *,
    exchange: str,
    routing_key: str | None,
    index: dict[tuple[str, str | None, str], Documented],
    expected_user: str | None,
    payload: bool = True,
) -> list[str]:
    """What is wrong with one captured message, each naming the message and the field."""
    kind = msg.type or "(no type)"
    name = f"{kind} (message_id {msg.message_id}) on {exchange or '(default)'}/{routing_key}"
    entry = index.get((exchange, routing_key, kind))
    if entry is None:
        return [f"{name}: in no AsyncAPI document of docs/api"]
    problems: list[str] = []
    try:
        body = json.loads(msg.body)
    except ValueError as exc:
        return [f"{name}: body is not JSON ({exc})"]
    if payload:
        problems += [f"{name}: payload {e}" for e in _errors(entry.payload, body)]
    headers = _header(dict(msg.headers or {}))
    problems += [f"{name}: header {e}" for e in _errors(entry.headers, headers)]
    properties = properties_of(msg)
    problems += [f"{name}: AMQP property {e}" for e in _errors(entry.properties, properties)]
    if expected_user is not None and msg.user_id != expected_user:
        problems.append(f"{name}: AMQP property user_id is {msg.user_id!r}, not {expected_user!r}")
    if msg.timestamp is not None:
        # seconds since the epoch: milliseconds would put it thousands of years ahead
        now = datetime.now(UTC)
        if abs(msg.timestamp.astimezone(UTC) - now) > timedelta(hours=1):
            problems.append(f"{name}: AMQP property timestamp {msg.timestamp} is not now")
    return [f"{p} ({entry.where})" for p in problems]


def producer(infra: Infra, msg: aio_pika.abc.AbstractIncomingMessage) -> str | None:
    """The run's user the contract names as the producer of this message."""
    kind = msg.type or ""
    if kind in busaccess.EVENT_PRODUCERS:
        return infra.user(busaccess.EVENT_PRODUCERS[kind])
    if kind in ("review.requested", "review.cancelled"):
        return infra.user("review-router")
    if kind == busaccess.SUBMIT_TYPE:
        return infra.user("submitter")
    if kind.startswith("order.submit."):
        return infra.user("intake")
    if kind in busaccess.DEPARTMENT_TYPES:
        return infra.user(f"dept-{msg.routing_key}")
    return None


async def capture_queue(
    channel: aio_pika.abc.AbstractChannel,
) -> aio_pika.abc.AbstractQueue:
    """A queue of the test's own that every message of every exchange also goes to: `#` on
    the topic exchange, every routing key of the topology on the direct ones."""
    queue = await channel.declare_queue(f"capture-{uuid.uuid4().hex[:8]}", exclusive=True)
    await queue.bind(topology.EVENTS, routing_key="#")
    keys = {
        (spec.exchange, key)
        for spec in topology.SERVICE_QUEUES
        if topology.EXCHANGE_TYPES[spec.exchange].value == "direct"
        for key in spec.routing_keys
    }
    for exchange, key in sorted(keys):
        await queue.bind(exchange, routing_key=key)
    return queue


@pytest.mark.timeout(180)
async def test_every_message_of_a_run_validates_against_the_asyncapi_documents(
    infra: Infra, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    index = documented()
    captured: list[aio_pika.abc.AbstractIncomingMessage] = []
    channel = await amqp.channel()
    queue = await capture_queue(channel)

    async def keep(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        captured.append(msg)

    await queue.consume(keep, no_ack=True)

    async with service_processes(infra, tmp_path) as services:
        try:
            # an order-submitting system: its own user, its own reply queue
            crm = await aio_pika.connect(infra.url_as("submitter"))
            async with crm, crm.channel() as own:
                replies = await own.declare_queue(
                    f"{infra.user('submitter')}.replies", exclusive=True
                )
                await publish(
                    crm,
                    exchange=topology.COMMANDS,
                    routing_key="order.submit",
                    body=json.dumps(example_order("order-service"), ensure_ascii=False).encode(),
                    message_type="order.submit",
                    reply_to=replies.name,
                    user_id=infra.user("submitter"),
                )
                reply = await eventually(lambda: replies.get(fail=False, no_ack=True), timeout=30)
                # a command refused for its document is answered too, in the contract's terms
                refused_id = await publish(
                    crm,
                    exchange=topology.COMMANDS,
                    routing_key="order.submit",
                    body=b'{"order_type": "product"}',
                    message_type="order.submit",
                    reply_to=replies.name,
                    user_id=infra.user("submitter"),
                )
                refusal = await eventually(lambda: replies.get(fail=False, no_ack=True), timeout=30)
                assert refusal.correlation_id == refused_id

            # the departments: a remark while reviewing, then every verdict an approval
            supervisor = await take_review(amqp, "supervisor")
            await answer_review(amqp, supervisor)
            delivery = await take_review(amqp, "service_delivery")
            finance = await take_review(amqp, "finance")
            annotation = {
                "review_id": str(finance.review_id),
                "order_id": str(finance.order_id),
                "revision": finance.revision,
                "department": "finance",
                "reviewer": {"id": "finance.reviewer", "name": "Reviewer"},
                "annotations": [{"field": "/payment/terms", "message": "请确认账期"}],
            }
            await publish(
                amqp,
                exchange=topology.VERDICTS,
                routing_key="finance",
                body=json.dumps(annotation, ensure_ascii=False).encode(),
                message_type="review.annotation",
                correlation_id=str(finance.order_id),
            )
            # a department message refused (it names no review) is answered on its reply_to
            dept = await aio_pika.connect(infra.url_as("dept-finance"))
            async with dept, dept.channel() as own:
                dept_replies = await own.declare_queue(
                    f"{infra.user('dept-finance')}.replies", exclusive=True
                )
                stray_id = await publish(
                    dept,
                    exchange=topology.VERDICTS,
                    routing_key="finance",
                    body=json.dumps({**annotation, "review_id": str(uuid.uuid4())}).encode(),
                    message_type="review.annotation",
                    correlation_id=str(finance.order_id),
                    reply_to=dept_replies.name,
                    user_id=infra.user("dept-finance"),
                )
                stray = await eventually(
                    lambda: dept_replies.get(fail=False, no_ack=True), timeout=30
                )
                assert stray.type == "message.refused"
                assert json.loads(stray.body)["refused_message_id"] == stray_id
            await answer_review(amqp, delivery)
            await answer_review(amqp, finance)

            def seen() -> bool:
                missing = EXPECTED - {m.type for m in captured}
                assert not missing, f"not seen yet: {sorted(missing)}"
                return True

            await eventually(seen, timeout=60)
        except BaseException:
            for s in services.values():
                print(f"----- {s.name} -----\n{s.log_tail(60)}")
            raise
    await channel.close()

    problems: list[str] = []
    for answer in (reply, refusal):
        problems += check(
            answer, exchange="", routing_key=None, index=index, expected_user=infra.user("intake")
        )
    problems += check(
        stray, exchange="", routing_key=None, index=index, expected_user=infra.user("review-router")
    )
    for msg in captured:
        problems += check(
            msg,
            exchange=msg.exchange or "",
            routing_key=msg.routing_key,
            index=index,
            expected_user=producer(infra, msg),
            # sent invalid on purpose: its payload is what is refused, the rest must hold
            payload=msg.message_id != refused_id,
        )
    print(f"{len(captured) + 3} messages of types {sorted({m.type for m in captured})} checked")
    assert not problems, "\n".join(problems)
