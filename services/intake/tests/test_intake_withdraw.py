"""Withdrawal against the real broker and database, with the review-router running beside
intake: the departments still reviewing a withdrawn order are told to stop."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from orderflow import topology
from orderflow.messages import (
    OrderApproved,
    OrderDocument,
    OrderWithdrawn,
    ReviewCancelled,
    Totals,
)
from orderflow.testing import Infra, eventually, get_messages, publish, queue_depth, running
from review_router.main import create_app as create_router
from review_router.settings import Settings as RouterSettings

PROBLEM_JSON = "application/problem+json"


async def wait_status(client: httpx.AsyncClient, order_id: str, status: str) -> Any:
    async def reached() -> Any:
        order = (await client.get(f"/api/v1/orders/{order_id}")).json()
        return order if order["status"] == status else None

    return await eventually(reached, timeout=30)


async def test_withdrawn_order_reviews_are_cancelled(
    infra: Infra,
    app: tuple[FastAPI, httpx.AsyncClient],
    api: Any,
    amqp: Any,
    product_order: dict[str, Any],
) -> None:
    _, client = app
    probe = f"probe.{uuid.uuid4().hex[:8]}"
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(probe, durable=True)
        await queue.bind(topology.EVENTS, routing_key="order.withdrawn")

    router = create_router(
        RouterSettings(database_url=infra.database_url, amqp_url=infra.url_as("review-router"))
    )
    async with running(router):
        order = await api.create(product_order, submit="true")
        order_id = order["id"]
        # the router asks the business supervisor first
        [requested] = await get_messages(amqp, "review.supervisor", 1, timeout=30)
        assert requested.type == "review.requested"
        await wait_status(client, order_id, "in_review")

        withdrawn = await client.post(
            f"/api/v1/orders/{order_id}/withdraw", json={"reason": "客户取消采购"}
        )
        assert withdrawn.status_code == 200, withdrawn.text
        body = withdrawn.json()
        assert body["status"] == "withdrawn"
        assert body["withdrawn_at"] is not None
        assert withdrawn.headers["etag"] == body["etag"]

        # the supervisor's queue is told to stop reviewing
        [cancelled] = await get_messages(amqp, "review.supervisor", 1, timeout=30)
        assert cancelled.type == "review.cancelled"
        cancellation = ReviewCancelled.model_validate_json(cancelled.body)
        assert str(cancellation.order_id) == order_id
        assert cancellation.revision == 1 and cancellation.department == "supervisor"
        assert "客户取消采购" in cancellation.reason
        # nobody else had been asked yet, and nobody is now
        for department in ("production", "finance", "technical", "service_delivery"):
            assert await queue_depth(amqp, f"review.{department}") == 0

    [event] = await get_messages(amqp, probe, 1)
    announced = OrderWithdrawn.model_validate_json(event.body)
    assert str(announced.order_id) == order_id and announced.revision == 1
    assert announced.reason == "客户取消采购"
    assert event.correlation_id == order_id

    # withdrawn for good: not again, not edited, not submitted
    again = await client.post(f"/api/v1/orders/{order_id}/withdraw")
    assert again.status_code == 409
    assert again.json()["detail"] == "the order is withdrawn already"
    edit = await api.put(order_id, product_order)
    assert edit.status_code == 409 and edit.json()["current_status"] == "withdrawn"

    async def on_timeline() -> bool:
        items = (await client.get(f"/api/v1/orders/{order_id}/timeline")).json()["items"]
        return items[-1]["summary"] == "Order withdrawn: 客户取消采购"

    await eventually(on_timeline)


async def test_no_withdrawal_after_approval(
    app: tuple[FastAPI, httpx.AsyncClient], api: Any, amqp: Any, product_order: dict[str, Any]
) -> None:
    _, client = app
    draft = await api.create(product_order)
    # a draft may be withdrawn too, without a reason
    assert (await client.post(f"/api/v1/orders/{draft['id']}/withdraw")).status_code == 200

    order = await api.create(product_order, submit="true")
    document = OrderDocument.model_validate(product_order)
    approved = OrderApproved(
        order_id=order["id"],
        revision=1,
        order=document,
        totals=Totals.of(document),
        approvals=[],
        approved_at=datetime.now(UTC),
    )
    await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key=approved.message_type,
        body=approved.model_dump_json().encode(),
        message_type=approved.message_type,
    )
    await wait_status(client, order["id"], "approved")
    refused = await client.post(
        f"/api/v1/orders/{order['id']}/withdraw", json={"reason": "too late"}
    )
    assert refused.status_code == 409
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert refused.json()["current_status"] == "approved"
    assert "only before it is approved" in refused.json()["detail"]
    assert (await client.get(f"/api/v1/orders/{order['id']}")).json()["status"] == "approved"
    missing = await client.post(f"/api/v1/orders/{uuid.uuid4()}/withdraw")
    assert missing.status_code == 404
    too_long = await client.post(
        f"/api/v1/orders/{order['id']}/withdraw", json={"reason": "x" * 1001}
    )
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["pointer"] == "/reason"
