"""Intake's HTTP API against the real broker and database."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from fastapi import FastAPI

from orderflow import topology
from orderflow.messages import OrderSubmitted
from orderflow_testkit.testing import get_messages, nothing_more, queue_depth

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"
PROBLEM_JSON = "application/problem+json"


async def create(client: httpx.AsyncClient, document: dict[str, Any], **params: Any) -> Any:
    response = await client.post("/api/v1/orders", json=document, params=params)
    assert response.status_code == 201, response.text
    return response.json()


async def bind_probe(amqp: Any, routing_key: str) -> str:
    """A queue of the test's own, bound to the events exchange."""
    name = f"probe.{uuid.uuid4().hex[:8]}"
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(topology.EVENTS, routing_key=routing_key)
    return name


async def test_both_examples_are_accepted_as_they_are(client: httpx.AsyncClient, api: Any) -> None:
    expected = {
        "order-product": ("18380.00", "2389.40", "20769.40"),
        "order-service": ("48000.00", "2880.00", "50880.00"),
    }
    for name, (subtotal, tax, total) in expected.items():
        raw = (EXAMPLES / f"{name}.json").read_bytes()
        response = await client.post(
            "/api/v1/orders", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 201, response.text
        order = response.json()
        assert response.headers["location"] == f"/api/v1/orders/{order['id']}"
        assert order["status"] == "draft"
        assert order["current_revision"] == 1 and order["submitted_revision"] is None
        assert order["channel"] == "api"
        assert order["totals"] == {
            "currency": "CNY",
            "subtotal": subtotal,
            "tax": tax,
            "total": total,
        }
        sent = json.loads(raw)
        assert order["document"]["customer"] == {**sent["customer"]}
        assert order["document"]["external_ref"] == sent["external_ref"]
        if name == "order-product":
            # it has technical requirements: the customer's specification must be attached
            refused = await client.post(f"/api/v1/orders/{order['id']}/submit")
            assert refused.status_code == 422
            assert [e["pointer"] for e in refused.json()["errors"]] == ["/attachments"]
            await api.attached(order["id"])
        # with its files, the example passes the self-check as it is
        submitted = await client.post(f"/api/v1/orders/{order['id']}/submit")
        assert submitted.status_code == 200, submitted.text
        assert submitted.json()["status"] == "submitted"
        assert submitted.json()["submitted_revision"] == 1
        fetched = (await client.get(response.headers["location"])).json()
        assert fetched["status"] == "submitted"
        assert fetched["submitted_at"] is not None


async def test_invalid_order_gets_every_problem_with_its_pointer(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    del product_order["customer"]["name"]
    product_order["lines"][1]["quantity"] = "0"
    product_order["delivery"]["date"] = "2026-01-01"
    del product_order["payment"]["terms"]
    response = await client.post("/api/v1/orders", params={"submit": "true"}, json=product_order)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["status"] == 422
    assert problem["type"] == "urn:orderflow:problem:self-check-failed"
    assert "4 problem(s)" in problem["detail"]
    assert [e["pointer"] for e in problem["errors"]] == [
        "/customer/name",
        "/lines/1/quantity",
        "/delivery/date",
        "/payment/terms",
    ]
    assert all(e["detail"] for e in problem["errors"])
    # create-and-submit is all or nothing
    assert (await client.get("/api/v1/orders")).json()["total"] == 0

    # saved as a draft, the same order is refused at submission with the same list
    draft = await create(client, product_order)
    refused = await client.post(f"/api/v1/orders/{draft['id']}/submit")
    assert refused.status_code == 422
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert refused.json()["errors"] == problem["errors"]
    assert (await client.get(f"/api/v1/orders/{draft['id']}")).json()["status"] == "draft"


async def test_structural_errors_name_the_field(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    product_order["customer"]["nickname"] = "小李"
    product_order["colour"] = "red"
    product_order["lines"][0]["quantity"] = "two hundred"
    response = await client.post("/api/v1/orders", json=product_order)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    pointers = {e["pointer"] for e in response.json()["errors"]}
    assert pointers == {"/customer/nickname", "/colour", "/lines/0/quantity"}

    del product_order["customer"]["nickname"], product_order["colour"]
    product_order["lines"][0]["quantity"] = "200"
    del product_order["salesperson"]
    response = await client.post("/api/v1/orders", json=product_order)
    assert response.status_code == 422
    assert [e["pointer"] for e in response.json()["errors"]] == ["/salesperson"]


async def test_idempotency_key(client: httpx.AsyncClient, product_order: dict[str, Any]) -> None:
    headers = {"Idempotency-Key": "crm-req-0042"}
    first = await client.post("/api/v1/orders", json=product_order, headers=headers)
    assert first.status_code == 201
    # the same request again, formatted differently: the same order
    again = await client.post(
        "/api/v1/orders",
        content=json.dumps(product_order, indent=2, ensure_ascii=True),
        headers={**headers, "content-type": "application/json"},
    )
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"

    # the same key with another body is refused and changes nothing
    product_order["lines"][0]["quantity"] = "300"
    clash = await client.post("/api/v1/orders", json=product_order, headers=headers)
    assert clash.status_code == 409
    assert clash.headers["content-type"] == PROBLEM_JSON
    assert "crm-req-0042" in clash.json()["detail"]
    assert "different request" in clash.json()["detail"]
    # submitting at once is another request too
    clash = await client.post(
        "/api/v1/orders", json=product_order, headers=headers, params={"submit": "true"}
    )
    assert clash.status_code == 409

    # concurrent retries of a new key make one order
    product_order["lines"][0]["quantity"] = "250"
    key = {"Idempotency-Key": "crm-req-0043"}
    responses = await asyncio.gather(
        *(client.post("/api/v1/orders", json=product_order, headers=key) for _ in range(5))
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert (await client.get("/api/v1/orders")).json()["total"] == 2

    empty = await client.post("/api/v1/orders", json=product_order, headers={"Idempotency-Key": ""})
    assert empty.status_code == 422
    assert empty.json()["errors"][0]["pointer"].startswith("header:")


async def test_put_only_in_draft_and_changes_requested(
    client: httpx.AsyncClient, api: Any, product_order: dict[str, Any]
) -> None:
    order = await create(client, product_order)
    url = f"/api/v1/orders/{order['id']}"
    await api.attached(order["id"])

    # a draft is edited in place
    product_order["lines"][0]["quantity"] = "300"
    edited = await api.put(order["id"], product_order)
    assert edited.status_code == 200, edited.text
    assert edited.json()["current_revision"] == 1
    assert edited.json()["totals"]["subtotal"] == "26930.00"
    revision = (await client.get(f"{url}/revisions/1")).json()
    assert revision["document"]["lines"][0]["quantity"] == "300"
    assert revision["submitted_at"] is None

    assert (await client.post(f"{url}/submit")).status_code == 200
    product_order["lines"][0]["quantity"] = "400"
    # under review, a revision waits for the decision (here: not at all) and is a conflict
    refused = await client.put(
        url,
        json=product_order,
        headers={"If-Match": await api.etag(order["id"]), "Prefer": "wait=0"},
    )
    assert refused.status_code == 409
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert refused.json()["current_status"] == "submitted"
    assert refused.json()["type"] == "urn:orderflow:problem:decision-pending"
    assert refused.json()["retryable"] is True
    assert "submitted" in refused.json()["detail"]
    # the submitted revision is untouched
    revision = (await client.get(f"{url}/revisions/1")).json()
    assert revision["document"]["lines"][0]["quantity"] == "300"
    assert revision["submitted_at"] is not None

    # submitting again without changes
    twice = await client.post(f"{url}/submit")
    assert twice.status_code == 409
    assert twice.json()["current_status"] == "submitted"

    missing = await client.put(
        f"/api/v1/orders/{uuid.uuid4()}", json=product_order, headers={"If-Match": '"r1.1"'}
    )
    assert missing.status_code == 404
    assert (await client.post(f"/api/v1/orders/{uuid.uuid4()}/submit")).status_code == 404


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    unknown = await client.get(f"/api/v1/orders/{uuid.uuid4()}")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == PROBLEM_JSON
    assert unknown.json()["title"] == "Order not found"

    malformed = await client.get("/api/v1/orders/not-a-uuid")
    assert malformed.status_code == 422
    assert malformed.headers["content-type"] == PROBLEM_JSON
    assert malformed.json()["errors"][0]["pointer"] == "path:/order_id"

    revision = await client.get(f"/api/v1/orders/{uuid.uuid4()}/revisions/0")
    assert revision.status_code == 422


async def test_submit_publishes_one_order_submitted(
    app: tuple[FastAPI, httpx.AsyncClient], api: Any, amqp: Any, product_order: dict[str, Any]
) -> None:
    _, client = app
    probe = await bind_probe(amqp, "order.submitted")
    order = await create(client, product_order)
    spec = await api.attached(order["id"])
    assert (await client.post(f"/api/v1/orders/{order['id']}/submit")).status_code == 200

    [msg] = await get_messages(amqp, probe, 1)
    assert msg.type == "order.submitted"
    assert msg.routing_key == "order.submitted"
    assert msg.exchange == topology.EVENTS
    assert msg.correlation_id == order["id"]
    assert msg.app_id == "intake"
    assert msg.content_type == "application/json"
    assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert uuid.UUID(str(msg.message_id))
    assert msg.headers["x-schema"] == "orderflow.order.submitted"
    assert msg.headers["x-schema-version"] == "1"
    assert str(msg.headers["traceparent"]).startswith("00-")
    event = OrderSubmitted.model_validate_json(msg.body)
    assert str(event.order_id) == order["id"]
    assert event.revision == 1
    assert event.channel == "api"
    assert event.totals.total == Decimal("20769.40")
    assert event.order.external_ref == "PO-SJPM-2026-0042"
    # the files as references, never their bytes; a first submission has nothing to compare
    assert [a.model_dump(mode="json") for a in event.attachments] == [spec]
    assert event.previous_revision is None and event.changes == []

    # a second submit is refused and publishes nothing
    assert (await client.post(f"/api/v1/orders/{order['id']}/submit")).status_code == 409
    await nothing_more(amqp, probe, outboxes=[app[0].state.runtime.pool])
    assert await queue_depth(amqp, probe) == 0

    # created and submitted at once: one more event, on the router's queue too
    at_once = await create(client, product_order, submit="true")
    assert at_once["status"] == "submitted"
    [msg] = await get_messages(amqp, probe, 1)
    assert msg.correlation_id == at_once["id"]
    routed = await get_messages(amqp, topology.ROUTER_SUBMITTED.name, 2)
    assert {m.correlation_id for m in routed} == {order["id"], at_once["id"]}


async def test_list_orders(
    client: httpx.AsyncClient, product_order: dict[str, Any], service_order: dict[str, Any]
) -> None:
    first = await create(client, product_order)
    second = await create(client, product_order, submit="true")
    third = await create(client, service_order)

    page = (await client.get("/api/v1/orders")).json()
    assert page["total"] == 3
    assert [o["id"] for o in page["items"]] == [third["id"], second["id"], first["id"]]
    assert page["items"][0]["customer_name"] == "Hangzhou Riverside Logistics Co., Ltd."
    assert page["items"][0]["totals"]["total"] == "50880.00"

    page = (await client.get("/api/v1/orders", params={"salesperson": "zhang.wei"})).json()
    assert page["total"] == 2
    assert {o["id"] for o in page["items"]} == {first["id"], second["id"]}

    page = (await client.get("/api/v1/orders", params={"status": "submitted"})).json()
    assert [o["id"] for o in page["items"]] == [second["id"]]

    page = (await client.get("/api/v1/orders", params={"external_ref": "CRM-88231"})).json()
    assert [o["id"] for o in page["items"]] == [third["id"]]

    page = (await client.get("/api/v1/orders", params={"limit": 1, "offset": 1})).json()
    assert page["total"] == 3 and page["limit"] == 1 and page["offset"] == 1
    assert [o["id"] for o in page["items"]] == [second["id"]]

    bad = await client.get("/api/v1/orders", params={"status": "lost", "limit": 0})
    assert bad.status_code == 422
    assert {e["pointer"] for e in bad.json()["errors"]} == {"query:/status", "query:/limit"}
