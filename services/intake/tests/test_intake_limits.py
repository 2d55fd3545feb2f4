"""Input limits at intake's edges, over HTTP and on the bus: whatever arrives, the answer is
a 4xx problem naming the field (or a refusal reply and a dead letter), never a crash, and
nothing is approved that a contract could not state."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from orderflow import limits, topology
from orderflow.messages import OrderDocument, SubmitOrderReply
from orderflow_testkit.testing import eventually, get_messages

from .test_intake_bus import next_reply, reply_queue, send_command

PROBLEM = "application/problem+json"


def with_line(document: dict[str, Any], **fields: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(document))
    changed["lines"][0].update(fields)
    return changed


def pointers(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    return [e["pointer"] for e in response.json()["errors"]]


async def test_a_quantity_with_a_huge_exponent_is_refused_small_and_fast(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    started = time.monotonic()
    response = await client.post(
        "/api/v1/orders", json=with_line(product_order, quantity="1E-200000000")
    )
    assert response.status_code == 422
    assert pointers(response) == ["/lines/0/quantity"]
    assert "digits after the decimal point" in response.json()["errors"][0]["detail"]
    assert len(response.content) < 2000
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1E+30", "1" * 60, "x"])
async def test_decimals_out_of_bounds_are_refused(
    client: httpx.AsyncClient, product_order: dict[str, Any], value: str
) -> None:
    response = await client.post("/api/v1/orders", json=with_line(product_order, unit_price=value))
    assert response.status_code == 422
    assert pointers(response) == ["/lines/0/unit_price"]


async def test_a_unit_price_of_ten_to_the_twenty_is_refused(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    # more digits than a contract prints: refused as read, a draft or not
    for price in (str(10**20), str(10**30)):
        response = await client.post(
            "/api/v1/orders", json=with_line(product_order, unit_price=price)
        )
        assert response.status_code == 422, response.text
        assert pointers(response) == ["/lines/0/unit_price"]


async def test_an_amount_no_contract_can_state_fails_the_self_check(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    # a price within bounds, times a quantity, past what capital numerals can write
    document = with_line(product_order, quantity="1000", unit_price=str(10**15), amount=None)
    response = await client.post("/api/v1/orders?submit=true", json=document)
    assert response.status_code == 422
    assert "/lines/0/amount" in pointers(response)
    assert "more than a contract can state" in response.text
    # the largest amount still passes as an amount (the self-check's other rules aside)
    largest = with_line(product_order, quantity="1", unit_price=str(limits.MAX_AMOUNT))
    largest["lines"] = largest["lines"][:1]
    largest["tax_rate"] = "0"
    assert OrderDocument.model_validate(largest).total() == limits.MAX_AMOUNT


async def test_many_lines_together_past_the_largest_total_fail_the_self_check(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    document = json.loads(json.dumps(product_order))
    line = {**document["lines"][0], "quantity": "1", "unit_price": "9000000000000000.00"}
    line.pop("amount", None)
    document["lines"] = [line, line]
    response = await client.post("/api/v1/orders?submit=true", json=document)
    assert response.status_code == 422
    assert "/lines" in pointers(response)


async def test_a_fifty_megabyte_attribute_is_refused_before_it_is_read(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    body = json.dumps(with_line(product_order, attributes={"colour": "x" * (50 << 20)}))
    started = time.monotonic()
    response = await client.post(
        "/api/v1/orders", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith(PROBLEM)
    assert time.monotonic() - started < 5

    # streamed without a length: counted as it arrives, refused at the limit
    async def chunks() -> Any:
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)].encode()

    response = await client.post(
        "/api/v1/orders", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_attribute_sizes_and_counts_are_bounded(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    long_value = with_line(product_order, attributes={"colour": "x" * (limits.ATTRIBUTE_VALUE + 1)})
    response = await client.post("/api/v1/orders", json=long_value)
    assert response.status_code == 422
    assert pointers(response) == ["/lines/0/attributes/colour"]

    many = {f"p{i}": "1" for i in range(limits.MAX_ATTRIBUTES + 1)}
    response = await client.post("/api/v1/orders", json=with_line(product_order, attributes=many))
    assert response.status_code == 422
    assert pointers(response) == ["/lines/0/attributes"]


async def test_too_many_lines_are_refused(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    document = json.loads(json.dumps(product_order))
    document["lines"] = [{"item": "bolt"}] * (limits.MAX_LINES + 1)
    response = await client.post("/api/v1/orders", json=document)
    assert response.status_code == 422
    assert pointers(response) == ["/lines"]


async def test_nul_bytes_are_refused_wherever_they_are(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    document = json.loads(json.dumps(product_order))
    document["notes"] = "deliver\x00 early"
    response = await client.post("/api/v1/orders", json=document)
    assert response.status_code == 422
    assert pointers(response) == ["/notes"]

    response = await client.post(
        "/api/v1/orders", json=with_line(product_order, attributes={"col\x00our": "red"})
    )
    assert response.status_code == 422

    response = await client.get("/api/v1/orders", params={"salesperson": "zh\x00ang"})
    assert response.status_code == 400
    assert pointers(response) == ["query:/"]

    response = await client.get("/api/v1/orders/%00")
    assert response.status_code == 400

    # line breaks and tabs belong in a note, not in a name
    document = json.loads(json.dumps(product_order))
    document["notes"] = "line one\nline two\tindented"
    document["customer"]["name"] = "Acme\nLtd"
    response = await client.post("/api/v1/orders", json=document)
    assert pointers(response) == ["/customer/name"]


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/orders/00000000-0000-0000-0000-000000000001/revisions/{2**31}",
        "/api/v1/orders/00000000-0000-0000-0000-000000000001/revisions/1/diff/99999999999999",
        f"/api/v1/orders?offset={2**31}",
        f"/api/v1/orders?offset={10**30}",
        "/api/v1/orders/00000000-0000-0000-0000-000000000001/attachments?revision=9999999999",
        "/api/v1/orders/not-a-uuid",
    ],
)
async def test_huge_numbers_and_malformed_ids_in_paths_and_queries(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        ("text/csv", b"order_ref,line_item\nA,bo\x00lt\n", "NUL"),
        ("text/csv", b'order_ref,line_item\nA,"bolt\n', "never closed"),
        ("application/x-ndjson", b'{"order_type": "product",\n', "not valid JSON"),
    ],
)
async def test_malformed_imports_are_answered_row_by_row(
    client: httpx.AsyncClient, content_type: str, body: bytes, detail: str
) -> None:
    response = await client.post(
        "/api/v1/orders/import", content=body, headers={"content-type": content_type}
    )
    assert response.status_code < 500, response.text
    assert detail in response.text


@pytest.mark.parametrize(
    "queue", ["review.supervisor", "intake.commands", "contracts.order-approved.dlq", "x.dlq"]
)
async def test_ops_routes_act_only_on_this_services_dead_letter_queues(
    client: httpx.AsyncClient, queue: str
) -> None:
    listed = await client.get("/ops/dead-letters", params={"queue": queue})
    assert listed.status_code == 404
    assert pointers(listed) == ["query:/queue"]
    replayed = await client.post(f"/ops/dead-letters/{queue}/replay", json={"all": True})
    assert replayed.status_code == 404
    discarded = await client.post(
        f"/ops/dead-letters/{queue}/discard",
        json={"message_ids": ["m-1"], "note": "test"},
    )
    assert discarded.status_code == 404


async def test_listing_a_dead_letter_queue_often_keeps_its_messages(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, product_order: dict[str, Any]
) -> None:
    _, client = app
    bad = with_line(product_order, quantity="NaN")
    await send_command(amqp, bad)
    dlq = topology.INTAKE_COMMANDS.dlq

    async def listed() -> list[dict[str, Any]]:
        response = await client.get("/ops/dead-letters", params={"queue": dlq})
        assert response.status_code == 200
        return list(response.json())

    await eventually(listed)  # the dead letter arrived
    for _ in range(3 * topology.DELIVERY_LIMIT):
        assert len(await listed()) == 1


async def test_out_of_bounds_commands_are_refused_with_the_field_and_dead_lettered(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, product_order: dict[str, Any]
) -> None:
    _, client = app
    cases = [
        (with_line(product_order, quantity="1E-200000000"), "/lines/0/quantity"),
        (with_line(product_order, unit_price=str(10**20)), "/lines/0/unit_price"),
        (with_line(product_order, unit_price=str(10**30)), "/lines/0/unit_price"),
        (with_line(product_order, attributes={"c": "x" * (2 * limits.MAX_COMMAND_BYTES)}), "/"),
        (with_line(product_order, item="bo\x00lt"), "/lines/0/item"),
    ]
    async with reply_queue(amqp) as replies:
        for body, _ in cases:
            await send_command(amqp, body, reply_to=replies.name)
        answers = [
            SubmitOrderReply.model_validate_json((await next_reply(replies)).body) for _ in cases
        ]
    for answer, (_, pointer) in zip(answers, cases, strict=True):
        assert not answer.accepted
        assert [p.pointer for p in answer.problems] == [pointer], answer
    dead = await get_messages(amqp, topology.INTAKE_COMMANDS.dlq, len(cases))
    assert len(dead) == len(cases)
    assert (await client.get("/api/v1/orders")).json()["total"] == 0
