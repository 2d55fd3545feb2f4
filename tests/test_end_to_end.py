"""The whole pipeline, four services as separate processes on the real RabbitMQ and
PostgreSQL: an order travels from submission through review to a drafted contract."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from orderflow import topology
from orderflow.messages import ReviewRequested, SubmitOrderReply
from orderflow_testkit.testing import (
    Infra,
    answer_review,
    bearer,
    eventually,
    example_order,
    issue_key_for,
    publish,
    queue_depth,
    service_processes,
    submit_with_spec,
    take_review,
    wait_status,
)

example = example_order
order_status = wait_status


async def answer(
    amqp: Any,
    review: ReviewRequested,
    decision: str = "approve",
    annotations: list[dict[str, str]] | None = None,
) -> None:
    # each department answers as its own RabbitMQ user (this run's `dept-<department>`),
    # with that user_id, which RabbitMQ validates and the router checks
    await answer_review(amqp, review, decision, annotations)


@pytest.mark.timeout(240)
async def test_orders_travel_from_submission_to_contract(
    infra: Infra, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    # every service as its own least-privilege user, nobody acting for all departments
    async with service_processes(infra, tmp_path) as services:
        # a CRM places and revises the orders; an ERP reads the contracts; a chat robot
        # reads the salesperson's inbox: each with an API key of the fewest scopes
        async def client(name: str, scope: str) -> httpx.AsyncClient:
            key = await issue_key_for(infra.database_url, [scope])
            return httpx.AsyncClient(base_url=services[name].url, timeout=10, headers=bearer(key))

        intake = await client("intake", "orders:write")
        contracts = await client("contracts", "contracts:read")
        notifier = await client("notifier", "notifications:read")
        try:
            await _product_order_with_changes_then_contract(amqp, intake, contracts, notifier)
            await _service_order_over_the_bus(infra, amqp, intake)
        except BaseException:
            for s in services.values():
                print(f"----- {s.name} -----\n{s.log_tail(80)}")
            raise
        finally:
            for c in (intake, contracts, notifier):
                await c.aclose()


async def _product_order_with_changes_then_contract(
    amqp: Any, intake: httpx.AsyncClient, contracts: httpx.AsyncClient, notifier: httpx.AsyncClient
) -> None:
    # it has technical requirements: saved as a draft, the customer's requirement
    # specification uploaded, then submitted (in one step it would be refused for want of it)
    order = example("order-product")
    refused = await intake.post("/api/v1/orders", params={"submit": "true"}, json=order)
    assert refused.status_code == 422, refused.text
    assert [e["pointer"] for e in refused.json()["errors"]] == ["/attachments"]
    order_id = (await submit_with_spec(intake, order))["id"]

    # the business supervisor reviews first; nobody else is asked yet
    supervisor = await take_review(amqp, "supervisor")
    assert supervisor.order_id == uuid.UUID(order_id) and supervisor.revision == 1
    for department in ("production", "finance", "technical", "service_delivery"):
        assert await queue_depth(amqp, f"review.{department}") == 0
    await answer(amqp, supervisor)

    # then production, finance and technical (the order has technical requirements)
    production = await take_review(amqp, "production")
    finance = await take_review(amqp, "finance")
    technical = await take_review(amqp, "technical")
    assert await queue_depth(amqp, "review.service_delivery") == 0
    await order_status(intake, order_id, "in_review")

    await answer(amqp, production)
    await answer(
        amqp,
        finance,
        "request_changes",
        [
            {"field": "/payment/terms", "message": "预付比例至少 50%", "severity": "blocker"},
            {"field": "/lines/0/unit_price", "message": "低于成本价 90.00", "severity": "blocker"},
        ],
    )
    await answer(amqp, technical)

    # back to the salesperson with the annotations
    returned = await order_status(intake, order_id, "changes_requested")
    change = returned["change_request"]
    assert change["revision"] == 1
    assert [(a["field"], a["message"]) for a in change["annotations"]] == [
        ("/payment/terms", "预付比例至少 50%"),
        ("/lines/0/unit_price", "低于成本价 90.00"),
    ]
    # every department's verdict of the round, the supervisor's approval included
    assert sorted((f["department"], f["decision"]) for f in change["feedback"]) == [
        ("finance", "request_changes"),
        ("production", "approve"),
        ("supervisor", "approve"),
        ("technical", "approve"),
    ]

    # the salesperson revises and resubmits: revision 2
    order["payment"]["terms"] = "50% 预付，50% 货到后 30 天内付清"
    order["lines"][0]["unit_price"] = "95.00"
    etag = (await intake.get(f"/api/v1/orders/{order_id}")).headers["etag"]
    updated = await intake.put(f"/api/v1/orders/{order_id}", json=order, headers={"If-Match": etag})
    assert updated.status_code in (200, 201), updated.text
    # the new revision keeps the files of the one sent back: the specification goes along
    files = (await intake.get(f"/api/v1/orders/{order_id}/attachments")).json()["items"]
    assert [f["kind"] for f in files] == ["requirements_spec"]
    submitted = await intake.post(f"/api/v1/orders/{order_id}/submit")
    assert submitted.status_code in (200, 202), submitted.text

    supervisor = await take_review(amqp, "supervisor")
    assert supervisor.revision == 2
    assert supervisor.order.payment.terms == order["payment"]["terms"]
    await answer(amqp, supervisor)
    for department in ("production", "finance", "technical"):
        review = await take_review(amqp, department)
        assert review.revision == 2
        await answer(amqp, review)

    drafted = await order_status(intake, order_id, "contract_drafted")
    assert drafted["submitted_revision"] == 2

    listing = (await contracts.get("/api/v1/contracts", params={"order_id": order_id})).json()
    items = listing["items"] if isinstance(listing, dict) else listing
    assert len(items) == 1
    contract = items[0]
    assert contract["revision"] == 2
    assert contract["number"].startswith(f"HT-{date.today().year}-")
    assert drafted["contract"]["contract_number"] == contract["number"]

    async def inbox() -> list[str] | None:
        page = (await notifier.get("/api/v1/inbox/zhang.wei")).json()
        titles = sorted(n["title"] for n in page["items"])
        return titles if len(titles) >= 3 else None

    titles = await eventually(inbox, timeout=30)
    assert titles == ["Changes requested", "Contract ready", "Order approved"]


async def _service_order_over_the_bus(infra: Infra, amqp: Any, intake: httpx.AsyncClient) -> None:
    # a CRM as an order-submitting system: its own user, its own reply queue `<user>.*`
    crm = await aio_pika.connect(infra.url_as("submitter"))
    try:
        async with crm.channel() as channel:
            replies = await channel.declare_queue(
                f"{infra.user('submitter')}.replies", exclusive=True
            )
            command_id = await publish(
                crm,
                exchange=topology.COMMANDS,
                routing_key="order.submit",
                body=json.dumps(example("order-service"), ensure_ascii=False).encode(),
                message_type="order.submit",
                reply_to=replies.name,
                user_id=infra.user("submitter"),
            )
            message = None
            for _ in range(300):
                message = await replies.get(fail=False, no_ack=True)
                if message is not None:
                    break
                await asyncio.sleep(0.1)
            assert message is not None, "no reply to the order.submit command"
            reply = SubmitOrderReply.model_validate_json(message.body)
            assert reply.accepted, reply
            assert message.correlation_id == command_id
            assert message.user_id == infra.user("intake")
            order_id = str(reply.order_id)
    finally:
        await crm.close()

    supervisor = await take_review(amqp, "supervisor")
    assert str(supervisor.order_id) == order_id
    await answer(amqp, supervisor)
    delivery = await take_review(amqp, "service_delivery")
    finance = await take_review(amqp, "finance")
    assert await queue_depth(amqp, "review.production") == 0
    assert await queue_depth(amqp, "review.technical") == 0
    await answer(amqp, delivery)
    await answer(amqp, finance)
    await order_status(intake, order_id, "contract_drafted")
