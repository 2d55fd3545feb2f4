"""Intake's formats as a system in another language meets them, against the real broker and
database: money only as decimal strings, over HTTP and on the bus, refused as a JSON number
with the field named; every time in a response written one way."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import httpx
from fastapi import FastAPI

from orderflow import topology
from orderflow.http import PROBLEM_JSON
from orderflow.messages import SubmitOrderReply
from orderflow_testkit.testing import badly_written_times, get_messages, publish, times_in

NUMBER_REFUSED = 'must be a decimal number written as a string, e.g. "85.50"'


@asynccontextmanager
async def reply_queue(amqp: Any) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    async with amqp.channel() as channel:
        yield await channel.declare_queue(exclusive=True)


async def next_reply(queue: aio_pika.abc.AbstractQueue, timeout: float = 15) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        msg = await queue.get(fail=False, no_ack=True)
        if msg is not None:
            return msg
        await asyncio.sleep(0.05)
    raise AssertionError("no reply")


async def send_command(amqp: Any, body: bytes, *, reply_to: str, correlation_id: str) -> str:
    return await publish(
        amqp,
        exchange=topology.COMMANDS,
        routing_key="order.submit",
        body=body,
        message_type="order.submit",
        reply_to=reply_to,
        correlation_id=correlation_id,
    )


async def test_a_json_number_for_money_is_refused_over_http_naming_the_field(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    # 0.1 + 0.2, as a float-minded client computes it, must not become 0.30000000000000004
    product_order["lines"][0]["unit_price"] = 0.1 + 0.2
    product_order["lines"][0]["quantity"] = 200
    refused = await client.post("/api/v1/orders", json=product_order)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert {(e["pointer"], e["detail"]) for e in refused.json()["errors"]} == {
        ("/lines/0/unit_price", NUMBER_REFUSED),
        ("/lines/0/quantity", NUMBER_REFUSED),
    }
    assert (await client.get("/api/v1/orders")).json()["total"] == 0

    # submitted at once, the same: the type is wrong whatever the self-check says
    product_order["lines"][0]["quantity"] = "200"
    refused = await client.post("/api/v1/orders?submit=true", json=product_order)
    assert refused.status_code == 422, refused.text
    assert [e["pointer"] for e in refused.json()["errors"]] == ["/lines/0/unit_price"]

    # the same order with the price as a string is taken, and the price kept to the cent
    product_order["lines"][0]["unit_price"] = "0.30"
    created = await client.post("/api/v1/orders", json=product_order)
    assert created.status_code == 201, created.text
    assert created.json()["document"]["lines"][0]["unit_price"] == "0.30"


async def test_a_json_number_for_money_is_refused_on_the_bus_naming_the_field(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, product_order: dict[str, Any]
) -> None:
    _, client = app
    product_order["lines"][0]["unit_price"] = 85.5
    body = json.dumps(product_order).encode()
    async with reply_queue(amqp) as replies:
        mid = await send_command(amqp, body, reply_to=replies.name, correlation_id="po-7")
        answer = await next_reply(replies)
    assert answer.correlation_id == "po-7"
    reply = SubmitOrderReply.model_validate_json(answer.body)
    assert not reply.accepted and reply.order_id is None and not reply.retryable
    assert [(p.pointer, p.detail) for p in reply.problems] == [
        ("/lines/0/unit_price", NUMBER_REFUSED)
    ]

    # refused, not taken: dead-lettered as it came, and no order made
    [dead] = await get_messages(amqp, topology.INTAKE_COMMANDS.dlq, 1)
    assert dead.message_id == mid
    assert dead.body == body
    assert "/lines/0/unit_price" in str(dead.headers["x-orderflow-reason"])
    assert (await client.get("/api/v1/orders")).json()["total"] == 0


async def test_every_time_in_intakes_responses_is_written_one_way(
    app: tuple[FastAPI, httpx.AsyncClient], product_order: dict[str, Any]
) -> None:
    _, client = app
    # any RFC 3339 time with its offset is read; it is written back in UTC
    product_order["customer_confirmation"]["confirmed_at"] = "2026-11-20T10:00:00.5+08:00"
    created = await client.post("/api/v1/orders?submit=true", json=product_order)
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    withdrawn = await client.post(
        f"/api/v1/orders/{order_id}/withdraw",
        json={"reason": "the customer changed their mind"},
        headers={"If-Match": created.headers["etag"]},
    )
    assert withdrawn.status_code == 202, withdrawn.text

    seen: list[tuple[str, str]] = []
    for path in (
        f"/api/v1/orders/{order_id}",
        "/api/v1/orders",
        f"/api/v1/orders/{order_id}/revisions",
        f"/api/v1/orders/{order_id}/revisions/1",
        f"/api/v1/orders/{order_id}/timeline",
    ):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
        body = response.json()
        assert badly_written_times(body) == [], path
        seen += [(path + p, v) for p, v in times_in(body)]

    pointers = {p.removeprefix(f"/api/v1/orders/{order_id}") for p, _ in seen}
    # the times a client reads most, and the customer's confirmation in UTC
    assert {"/created_at", "/submitted_at", "/withdrawal/requested_at"} <= pointers
    confirmed = dict(seen)[f"/api/v1/orders/{order_id}/document/customer_confirmation/confirmed_at"]
    assert confirmed == "2026-11-20T02:00:00.500Z"


async def test_an_unknown_field_in_a_withdrawal_is_refused_naming_it(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    created = await client.post("/api/v1/orders?submit=true", json=product_order)
    assert created.status_code == 201, created.text
    url = f"/api/v1/orders/{created.json()['id']}"
    # `reson`: a typo that, ignored, would withdraw the order without the reason given
    refused = await client.post(
        f"{url}/withdraw",
        json={"reson": "the customer changed their mind"},
        headers={"If-Match": created.headers["etag"]},
    )
    assert refused.status_code == 422, refused.text
    assert [e["pointer"] for e in refused.json()["errors"]] == ["/reson"]
    assert (await client.get(url)).json()["withdrawal"] is None
