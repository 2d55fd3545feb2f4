"""The self-check as callers meet it, on the real broker and database: every problem of a
document at once (type errors and rule errors together, each with its JSON pointer) over
HTTP, on the bus (in the reply and in the dead letter's reason) and in a bulk import; and
one rule set, whether an order is submitted in one step or from a draft."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import httpx
import pytest
from fastapi import FastAPI

from orderflow import topology
from orderflow.consumer import REASON_PROBLEMS
from orderflow.http import PROBLEM_JSON
from orderflow.messages import SubmitOrderReply
from orderflow_testkit.testing import get_messages, publish

COMMAND = "order.submit"

Document = dict[str, Any]
Problems = list[tuple[str, str]]


def combined(document: Document) -> Document:
    """A type error (a quantity that is no number) and three rule errors: no contact
    person, a line whose amount does not add up, a delivery date in the past."""
    document["lines"][0]["quantity"] = "two hundred"
    del document["customer"]["contact_name"]
    document["lines"][1]["amount"] = "1.00"
    document["delivery"]["date"] = "2026-11-01"
    return document


COMBINED = ["/lines/0/quantity", "/customer/contact_name", "/lines/1/amount", "/delivery/date"]


@asynccontextmanager
async def reply_queue(amqp: Any) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    async with amqp.channel() as channel:
        yield await channel.declare_queue(exclusive=True)


async def command(amqp: Any, body: Document) -> tuple[str, SubmitOrderReply]:
    """Send `order.submit` as a CRM does; its message id and intake's reply."""
    async with reply_queue(amqp) as replies:
        mid = await publish(
            amqp,
            exchange=topology.COMMANDS,
            routing_key=COMMAND,
            body=json.dumps(body, ensure_ascii=False).encode(),
            message_type=COMMAND,
            reply_to=replies.name,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while loop.time() < deadline:
            msg = await replies.get(fail=False, no_ack=True)
            if msg is not None:
                return mid, SubmitOrderReply.model_validate_json(msg.body)
            await asyncio.sleep(0.05)
    raise AssertionError("no reply")


def listed(errors: list[dict[str, Any]]) -> Problems:
    return [(e["pointer"], e["detail"]) for e in errors]


# ---------------------------------------------------------------------------------------
# every problem at once


async def test_a_combined_document_gets_every_problem_over_http(
    client: httpx.AsyncClient, product_order: Document
) -> None:
    document = combined(product_order)
    response = await client.post("/api/v1/orders", params={"submit": "true"}, json=document)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["type"] == "urn:orderflow:problem:invalid-request"
    assert [e["pointer"] for e in problem["errors"]] == COMBINED
    details = dict(listed(problem["errors"]))
    assert "decimal" in details["/lines/0/quantity"]
    assert "contact person" in details["/customer/contact_name"]
    assert "1280.00" in details["/lines/1/amount"]
    assert "past" in details["/delivery/date"]
    assert "4 problem(s)" in problem["detail"]
    assert (await client.get("/api/v1/orders")).json()["total"] == 0

    # a draft need not be complete: saving it is refused for its type error alone
    draft = await client.post("/api/v1/orders", json=document)
    assert draft.status_code == 422
    assert [e["pointer"] for e in draft.json()["errors"]] == ["/lines/0/quantity"]

    # nor is a body that is no JSON taken for an order
    garbled = await client.post(
        "/api/v1/orders",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert garbled.status_code == 422
    assert garbled.json()["errors"][0]["pointer"] == "/"


async def test_a_combined_document_gets_every_problem_on_the_bus_and_in_the_dead_letter(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, product_order: Document
) -> None:
    _, client = app
    document = combined(product_order)
    mid, reply = await command(amqp, document)
    assert not reply.accepted and reply.order_id is None
    assert [p.pointer for p in reply.problems] == COMBINED

    [dead] = await get_messages(amqp, topology.INTAKE_COMMANDS.dlq, 1)
    assert dead.message_id == mid
    reason = str(dead.headers["x-orderflow-reason"])
    assert reason == reply.reason
    assert "4 problem(s)" in reason
    # the dead letter alone says what to fix, field by field
    for p in reply.problems:
        assert f"{p.pointer}: {p.detail}" in reason
    assert (await client.get("/api/v1/orders")).json()["total"] == 0

    # many problems: the reason stays bounded, the reply has them all
    many = copy.deepcopy(product_order)
    many["lines"] = [{"item": f"零件 {n}", "unit": "件"} for n in range(60)]
    _, reply = await command(amqp, many)
    assert len(reply.problems) > REASON_PROBLEMS
    [dead] = await get_messages(amqp, topology.INTAKE_COMMANDS.dlq, 1)
    reason = str(dead.headers["x-orderflow-reason"])
    assert len(reason) <= 4000
    assert f"and {len(reply.problems) - REASON_PROBLEMS} more" in reason


async def test_a_combined_row_of_an_import_gets_every_problem(
    client: httpx.AsyncClient, product_order: Document
) -> None:
    document = combined(product_order)
    response = await client.post(
        "/api/v1/orders/import",
        content=(json.dumps(document, ensure_ascii=False) + "\n").encode(),
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    [refused] = response.json()["rejections"]
    assert [p["pointer"] for p in refused["problems"]] == COMBINED
    assert response.json()["accepted"] == 0


# ---------------------------------------------------------------------------------------
# one rule set: in one step, from a draft, over HTTP or the bus


def technical(document: Document) -> Document:
    document["technical_requirements"] = "法兰密封面按客户图纸加工，粗糙度 Ra1.6"
    return document


def rule_errors(document: Document) -> Document:
    del document["customer"]["contact_name"]
    document["lines"][1]["amount"] = "1.00"
    document["delivery"]["date"] = "2026-11-01"
    return document


def custom_confirmed_in_writing(document: Document) -> Document:
    document["order_type"] = "custom"
    document["customer_confirmation"]["method"] = "signed_reply"
    return technical(document)


def large_confirmed_by_email(document: Document) -> Document:
    document["lines"] = document["lines"][:1]
    document["lines"][0]["quantity"] = "2000"
    document["tax_rate"] = "0"
    return document


def service_period_over(document: Document) -> Document:
    document["order_type"] = "service"
    document["lines"] = document["lines"][:1]
    document["lines"][0]["service"] = {
        "content": "年度巡检",
        "standard": "4 小时响应",
        "period_start": "2026-01-01",
        "period_end": "2026-06-30",
    }
    return document


BAD_DOCUMENTS: list[tuple[str, Callable[[Document], Document], list[str]]] = [
    ("technical requirements without the specification", technical, ["/attachments"]),
    (
        "missing contact, an amount that does not add up, a past delivery date",
        rule_errors,
        ["/customer/contact_name", "/lines/1/amount", "/delivery/date"],
    ),
    (
        "a custom order confirmed in writing but with no file",
        custom_confirmed_in_writing,
        ["/customer_confirmation/attachment_id", "/attachments", "/attachments"],
    ),
    (
        "a large order whose written confirmation is not on file",
        large_confirmed_by_email,
        ["/customer_confirmation/attachment_id"],
    ),
    ("a service period that is over", service_period_over, ["/lines/0/service/period_end"]),
]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [pytest.param(m, e, id=name) for name, m, e in BAD_DOCUMENTS],
)
async def test_one_step_and_two_step_submission_refuse_the_same_documents(
    app: tuple[FastAPI, httpx.AsyncClient],
    amqp: Any,
    product_order: Document,
    mutate: Callable[[Document], Document],
    expected: list[str],
) -> None:
    _, client = app
    document = mutate(product_order)

    one_step = await client.post("/api/v1/orders", params={"submit": "true"}, json=document)
    assert one_step.status_code == 422, one_step.text
    assert one_step.json()["type"] == "urn:orderflow:problem:self-check-failed"
    problems = listed(one_step.json()["errors"])
    assert [pointer for pointer, _ in problems] == expected

    draft = await client.post("/api/v1/orders", json=document)
    assert draft.status_code == 201, draft.text
    order_id = draft.json()["id"]
    two_step = await client.post(f"/api/v1/orders/{order_id}/submit")
    assert two_step.status_code == 422, two_step.text
    assert listed(two_step.json()["errors"]) == problems

    _, on_the_bus = await command(amqp, document)
    assert not on_the_bus.accepted
    assert [(p.pointer, p.detail) for p in on_the_bus.problems] == problems

    _, revision = await command(amqp, {**document, "order_id": order_id})
    assert not revision.accepted
    assert [(p.pointer, p.detail) for p in revision.problems] == problems

    # nothing of it was submitted: only the draft is there, still a draft
    orders = (await client.get("/api/v1/orders")).json()
    assert [o["status"] for o in orders["items"]] == ["draft"]


async def test_the_same_document_with_its_files_passes_from_a_draft(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, api: Any, technical_order: Document
) -> None:
    """What the refusals point to: save the draft, upload the file, submit; and a bus
    revision of that draft keeps its files."""
    _, client = app
    submitted = await api.submit_with_spec(technical_order)
    assert submitted["status"] == "submitted"

    draft = await api.create(technical_order)
    await api.attached(draft["id"])
    _, reply = await command(amqp, {**technical_order, "order_id": draft["id"]})
    assert reply.accepted, reply.problems
    order = (await client.get(f"/api/v1/orders/{draft['id']}")).json()
    assert order["submitted_revision"] == 1


async def test_a_combined_csv_order_gets_every_problem_with_its_row_and_column(
    client: httpx.AsyncClient,
) -> None:
    header = (
        "order_ref,order_type,salesperson_id,customer_name,customer_phone,customer_address,"
        "tax_rate,delivery_date,delivery_method,payment_method,payment_terms,"
        "confirmation_method,confirmation_at,confirmation_by,"
        "line_item,line_specification,line_quantity,line_unit,line_unit_price,line_amount"
    )
    rows = [
        "A1,product,zhang.wei,上海精密机械有限公司,+86 21 5555 0101,上海市浦东新区张江路 88 号,"
        "0.13,2026-11-01,物流配送,bank_transfer,30% 预付,email,2026-11-20T10:00:00+08:00,李娜,"
        "不锈钢法兰,DN50 PN16,two hundred,件,85.50,",
        ",,,,,,,,,,,,,,密封垫片,DN50,400,片,3.20,1.00",
    ]
    rows[1] = "A1" + rows[1]
    body = "\n".join([header, *rows]) + "\n"
    response = await client.post(
        "/api/v1/orders/import", content=body.encode(), headers={"content-type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    [refused] = response.json()["rejections"]
    assert refused["rows"] == [2, 3]
    assert [(p["row"], p["column"], p["pointer"]) for p in refused["problems"]] == [
        (2, "line_quantity", "/lines/0/quantity"),
        (2, "customer_contact_name", "/customer/contact_name"),
        (3, "line_amount", "/lines/1/amount"),
        (2, "delivery_date", "/delivery/date"),
    ]
