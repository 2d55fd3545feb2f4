"""Withdrawal across intake and the review-router, both running in this process on the real
broker and database: the router cancels the reviews it asked for and decides the withdrawal,
and intake shows the order withdrawn for good."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from intake.main import create_app as create_intake
from intake.settings import Settings as IntakeSettings
from orderflow import topology
from orderflow.messages import OrderWithdrawalRequested, OrderWithdrawn, ReviewCancelled
from orderflow_testkit.testing import (
    Infra,
    eventually,
    get_messages,
    queue_depth,
    running,
    wait_status,
)
from review_router.main import create_app as create_router
from review_router.settings import Settings as RouterSettings

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"

#: Before the example's delivery date and after its customer's confirmation.
TODAY = date(2026, 12, 1)


@pytest.fixture
def product_order() -> dict[str, Any]:
    """The product example without its technical requirements: it passes the self-check
    with no file, so it can be submitted in one step."""
    document: dict[str, Any] = json.loads((EXAMPLES / "order-product.json").read_text("utf-8"))
    document.pop("technical_requirements", None)
    return document


@pytest.fixture
async def client(infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    app = create_intake(
        IntakeSettings(database_url=infra.database_url, amqp_url=infra.url_as("intake"))
    )
    app.state.today = lambda: TODAY
    async with running(app) as signed_in:
        yield signed_in


async def create(client: httpx.AsyncClient, document: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/v1/orders", json=document, params={"submit": "true"})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def put(client: httpx.AsyncClient, order_id: str, document: dict[str, Any]) -> httpx.Response:
    """Edit the order as it is now (If-Match with its current ETag)."""
    etag = (await client.get(f"/api/v1/orders/{order_id}")).headers["etag"]
    return await client.put(f"/api/v1/orders/{order_id}", json=document, headers={"If-Match": etag})


async def timeline_entry(client: httpx.AsyncClient, order_id: str, kind: str) -> dict[str, Any]:
    """The order's timeline entry of an event type, once it is there."""

    async def found() -> dict[str, Any] | None:
        items = (await client.get(f"/api/v1/orders/{order_id}/timeline")).json()["items"]
        return next((i for i in items if i["type"] == kind), None)

    entry: dict[str, Any] = await eventually(found, timeout=30)
    return entry


async def test_withdrawn_order_reviews_are_cancelled(
    infra: Infra, client: httpx.AsyncClient, amqp: Any, product_order: dict[str, Any]
) -> None:
    probe = f"probe.{uuid.uuid4().hex[:8]}"
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(probe, durable=True)
        await queue.bind(topology.EVENTS, routing_key="order.withdrawal_requested")
        await queue.bind(topology.EVENTS, routing_key="order.withdrawn")

    router = create_router(
        RouterSettings(database_url=infra.database_url, amqp_url=infra.url_as("review-router"))
    )
    async with running(router):
        order = await create(client, product_order)
        order_id = order["id"]
        # the router asks the business supervisor first
        [requested] = await get_messages(amqp, "review.supervisor", 1, timeout=30)
        assert requested.type == "review.requested"
        await wait_status(client, order_id, "in_review")

        asked = await client.post(
            f"/api/v1/orders/{order_id}/withdraw", json={"reason": "客户取消采购"}
        )
        # asked, not yet decided: the router decides against the round's decision
        assert asked.status_code == 202, asked.text
        body = asked.json()
        assert body["status"] == "withdrawal_requested"
        assert body["withdrawal"]["outcome"] == "pending"
        assert body["withdrawal"]["reason"] == "客户取消采购"
        assert body["withdrawn_at"] is None
        assert asked.headers["etag"] == body["etag"]

        # the supervisor's queue is told to stop reviewing
        [cancelled] = await get_messages(amqp, "review.supervisor", 1, timeout=30)
        assert cancelled.type == "review.cancelled"
        cancellation = ReviewCancelled.model_validate_json(cancelled.body)
        assert str(cancellation.order_id) == order_id
        assert cancellation.revision == 1 and cancellation.department == "supervisor"
        assert "客户取消采购" in cancellation.reason
        withdrawn = await wait_status(client, order_id, "withdrawn")
        assert withdrawn["withdrawn_at"] is not None
        assert withdrawn["withdrawal"]["outcome"] == "withdrawn"
        assert withdrawn["withdrawn_by"]["id"] == withdrawn["withdrawal"]["requested_by"]["id"]
        # nobody else had been asked yet, and nobody is now
        for department in ("production", "finance", "technical", "service_delivery"):
            assert await queue_depth(amqp, f"review.{department}") == 0

    first, second = await get_messages(amqp, probe, 2)
    request = OrderWithdrawalRequested.model_validate_json(first.body)
    assert str(request.order_id) == order_id and request.revision == 1
    assert request.salesperson is not None and request.salesperson.id == "zhang.wei"
    announced = OrderWithdrawn.model_validate_json(second.body)
    assert str(announced.order_id) == order_id and announced.revision == 1
    assert announced.reason == "客户取消采购"
    assert second.correlation_id == order_id
    assert second.user_id == infra.user("review-router")  # the router decided it

    # withdrawn for good: not again, not edited, not submitted
    again = await client.post(f"/api/v1/orders/{order_id}/withdraw")
    assert again.status_code == 409
    assert again.json()["detail"] == "the order is withdrawn already"
    edit = await put(client, order_id, product_order)
    assert edit.status_code == 409 and edit.json()["current_status"] == "withdrawn"

    entry = await timeline_entry(client, order_id, "order.withdrawn")
    assert entry["summary"] == "Order withdrawn: 客户取消采购"
    asked_entry = await timeline_entry(client, order_id, "order.withdrawal_requested")
    assert asked_entry["summary"] == "Withdrawal requested: 客户取消采购"
