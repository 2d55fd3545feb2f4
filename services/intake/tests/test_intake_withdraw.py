"""Withdrawal against the real broker and database: intake asks (202,
`withdrawal_requested`), the review-router decides against the round's decision, and the
order follows its answer, never showing anything the answer could contradict."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from orderflow import topology
from orderflow.messages import (
    ContractDrafted,
    Message,
    OrderApproved,
    OrderDocument,
    OrderWithdrawalRefused,
    Salesperson,
    Totals,
)
from orderflow_testkit.testing import (
    eventually,
    publish,
    wait_status,
)

PROBLEM_JSON = "application/problem+json"


async def announce(amqp: Any, event: Message) -> None:
    """Publish an event as the service the contract names as its producer."""
    await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key=event.message_type,
        body=event.model_dump_json().encode(),
        message_type=event.message_type,
        correlation_id=str(getattr(event, "order_id", "")),
    )


async def timeline_entry(client: httpx.AsyncClient, order_id: str, kind: str) -> dict[str, Any]:
    """The order's timeline entry of an event type, once it is there."""

    async def found() -> dict[str, Any] | None:
        items = (await client.get(f"/api/v1/orders/{order_id}/timeline")).json()["items"]
        return next((i for i in items if i["type"] == kind), None)

    entry: dict[str, Any] = await eventually(found, timeout=30)
    return entry


def _approved(order_id: str, document: OrderDocument) -> OrderApproved:
    return OrderApproved(
        order_id=order_id,
        revision=1,
        order=document,
        totals=Totals.of(document),
        approvals=[],
        approved_at=datetime.now(UTC),
    )


async def test_an_approval_that_came_first_is_held_until_the_refusal(
    app: tuple[FastAPI, httpx.AsyncClient], api: Any, amqp: Any, product_order: dict[str, Any]
) -> None:
    """The router approved before the withdrawal reached it: intake holds the approval and
    its contract (the caller was told `withdrawal_requested`) until the refusal comes."""
    _, client = app
    order = await api.create(product_order, submit="true")
    order_id = order["id"]
    asked = await client.post(f"/api/v1/orders/{order_id}/withdraw", json={"reason": "late"})
    assert asked.status_code == 202, asked.text
    # a retry while the answer is pending changes nothing
    retried = await client.post(f"/api/v1/orders/{order_id}/withdraw", json={"reason": "x"})
    assert retried.status_code == 202
    assert retried.json()["status"] == "withdrawal_requested"
    assert retried.json()["withdrawal"] == asked.json()["withdrawal"]

    document = OrderDocument.model_validate(product_order)
    await announce(amqp, _approved(order_id, document))
    held = await timeline_entry(client, order_id, "order.approved")
    assert held["summary"].startswith("Approved")
    contract_id = uuid.uuid4()
    await announce(
        amqp,
        ContractDrafted(
            contract_id=contract_id,
            contract_number="HT-2026-000042",
            order_id=order_id,
            revision=1,
            salesperson=document.salesperson,
            customer_name=document.customer.name,
            currency=document.currency,
            total=Totals.of(document).total,
            drafted_at=datetime.now(UTC),
        ),
    )
    await timeline_entry(client, order_id, "contract.drafted")
    pending = (await client.get(f"/api/v1/orders/{order_id}")).json()
    assert pending["status"] == "withdrawal_requested"
    assert pending["approved_at"] is not None  # kept, not shown as the status yet

    await announce(
        amqp,
        OrderWithdrawalRefused(
            order_id=order_id,
            revision=1,
            decided_revision=1,
            decision="approved",
            reason="the order was approved before the withdrawal arrived",
            withdrawal_reason="late",
            requested_by="key:test",
            requested_at=datetime.now(UTC),
            refused_at=datetime.now(UTC),
            salesperson=Salesperson(id="zhang.wei"),
        ),
    )
    final = await wait_status(client, order_id, "contract_drafted")
    assert final["contract"]["contract_number"] == "HT-2026-000042"
    assert final["withdrawal"]["outcome"] == "refused"
    assert final["withdrawal"]["refusal"] == "the order was approved before the withdrawal arrived"
    assert final["withdrawn_at"] is None and final["withdrawn_by"] is None
    refused = await timeline_entry(client, order_id, "order.withdrawal_refused")
    assert refused["summary"] == (
        "Withdrawal refused: the order was approved before the withdrawal arrived"
    )
    # approved now: too late to ask again
    again = await client.post(f"/api/v1/orders/{order_id}/withdraw")
    assert again.status_code == 409


async def test_no_withdrawal_after_approval(
    app: tuple[FastAPI, httpx.AsyncClient], api: Any, amqp: Any, product_order: dict[str, Any]
) -> None:
    _, client = app
    draft = await api.create(product_order)
    # a draft may be withdrawn too, without a reason: asked like any other
    asked = await client.post(f"/api/v1/orders/{draft['id']}/withdraw")
    assert asked.status_code == 202
    assert asked.json()["status"] == "withdrawal_requested"

    order = await api.create(product_order, submit="true")
    document = OrderDocument.model_validate(product_order)
    await announce(amqp, _approved(order["id"], document))
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
