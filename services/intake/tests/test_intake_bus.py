"""Intake on the bus, against the real broker and database: `order.submit` commands and
the projection of every event into the order read model."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
from fastapi import FastAPI

from intake.adapters import repository
from orderflow import topology
from orderflow.messages import (
    Annotation,
    ContractDrafted,
    ContractSigned,
    Decision,
    DepartmentFeedback,
    Message,
    OrderApproved,
    OrderChangesRequested,
    OrderDocument,
    OrderSubmitted,
    Reviewer,
    ReviewRoundOpened,
    Salesperson,
    SubmitOrderReply,
    Totals,
)
from orderflow_testkit.testing import eventually, get_messages, nothing_more, publish, queue_depth

COMMAND = "order.submit"


@asynccontextmanager
async def reply_queue(amqp: Any) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """The sender's own queue for replies, as a CRM would declare it."""
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(exclusive=True)
        yield queue


async def next_reply(queue: aio_pika.abc.AbstractQueue, timeout: float = 15) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        msg = await queue.get(fail=False, no_ack=True)
        if msg is not None:
            return msg
        await asyncio.sleep(0.05)
    raise AssertionError("no reply")


async def send_command(
    amqp: Any,
    body: dict[str, Any] | bytes,
    *,
    message_id: str | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
) -> str:
    return await publish(
        amqp,
        exchange=topology.COMMANDS,
        routing_key=COMMAND,
        body=body if isinstance(body, bytes) else json.dumps(body).encode(),
        message_id=message_id,
        message_type=COMMAND,
        reply_to=reply_to,
        correlation_id=correlation_id,
    )


async def send_event(amqp: Any, event: Message) -> str:
    return await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key=event.message_type,
        body=event.model_dump_json().encode(),
        message_type=event.message_type,
        correlation_id=str(getattr(event, "order_id", "")),
    )


async def status_of(client: httpx.AsyncClient, order_id: Any) -> str:
    return str((await client.get(f"/api/v1/orders/{order_id}")).json()["status"])


async def wait_status(client: httpx.AsyncClient, order_id: Any, status: str) -> Any:
    async def reached() -> Any:
        order = (await client.get(f"/api/v1/orders/{order_id}")).json()
        return order if order["status"] == status else None

    return await eventually(reached)


async def timeline(app: FastAPI, order_id: Any) -> list[dict[str, Any]]:
    return await repository.events(app.state.runtime.pool, order_id=uuid.UUID(str(order_id)))


async def wait_events(app: FastAPI, order_id: Any, count: int) -> None:
    """Until the order's timeline has `count` events (intake's own come through the bus)."""

    async def recorded() -> bool:
        return len(await timeline(app, order_id)) >= count

    await eventually(recorded)


async def test_submit_command_creates_submits_and_replies(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, service_order: dict[str, Any]
) -> None:
    _, client = app
    async with reply_queue(amqp) as replies:
        mid = await send_command(
            amqp, service_order, reply_to=replies.name, correlation_id="crm-88231"
        )
        msg = await next_reply(replies)
    assert msg.type == "order.submit.reply"
    assert msg.correlation_id == "crm-88231"
    reply = SubmitOrderReply.model_validate_json(msg.body)
    assert reply.accepted and reply.problems == []
    assert reply.revision == 1 and reply.status == "submitted"

    order = (await client.get(f"/api/v1/orders/{reply.order_id}")).json()
    assert order["channel"] == "bus"
    assert order["external_ref"] == "CRM-88231"
    assert order["submitted_revision"] == 1
    assert order["status"] in ("submitted", "in_review")

    [event] = await get_messages(amqp, topology.ROUTER_SUBMITTED.name, 1)
    assert event.correlation_id == str(reply.order_id)
    submitted = OrderSubmitted.model_validate_json(event.body)
    assert submitted.channel == "bus"
    assert submitted.order == OrderDocument.model_validate(service_order)
    assert submitted.totals.total == Totals.of(submitted.order).total

    # without a correlation id, the reply carries the command's message id
    service_order["external_ref"] = "CRM-88232"
    async with reply_queue(amqp) as replies:
        mid = await send_command(amqp, service_order, reply_to=replies.name)
        msg = await next_reply(replies)
    assert msg.correlation_id == mid
    assert SubmitOrderReply.model_validate_json(msg.body).accepted


async def test_redelivered_command_creates_one_order(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, product_order: dict[str, Any]
) -> None:
    _, client = app
    async with reply_queue(amqp) as replies:
        mid = str(uuid.uuid4())
        for _ in range(3):
            await send_command(amqp, product_order, message_id=mid, reply_to=replies.name)
        first = SubmitOrderReply.model_validate_json((await next_reply(replies)).body)
        # a sentinel behind the duplicates: once it is answered they were all handled
        product_order["external_ref"] = "sentinel"
        await send_command(amqp, product_order, reply_to=replies.name)
        sentinel = SubmitOrderReply.model_validate_json((await next_reply(replies)).body)
        assert sentinel.order_id != first.order_id
        assert await replies.get(fail=False) is None  # one reply for the three deliveries
    page = (await client.get("/api/v1/orders", params={"external_ref": "PO-SJPM-2026-0042"})).json()
    assert page["total"] == 1
    assert page["items"][0]["id"] == str(first.order_id)
    assert await queue_depth(amqp, topology.INTAKE_COMMANDS.dlq) == 0
    routed = await get_messages(amqp, topology.ROUTER_SUBMITTED.name, 2)
    assert sorted(m.correlation_id for m in routed) == sorted(
        [str(first.order_id), str(sentinel.order_id)]
    )


async def test_invalid_command_is_dead_lettered_and_the_sender_told(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, product_order: dict[str, Any]
) -> None:
    _, client = app
    bad = json.loads(json.dumps(product_order))
    del bad["customer"]["name"]
    bad["lines"][0]["unit_price"] = "-85.50"
    bad["delivery"]["date"] = "2026-01-01"
    async with reply_queue(amqp) as replies:
        mid = await send_command(amqp, bad, reply_to=replies.name, correlation_id="po-42")
        await send_command(amqp, product_order, reply_to=replies.name)
        rejected = await next_reply(replies)
        accepted = await next_reply(replies)

    assert rejected.correlation_id == "po-42"
    refusal = SubmitOrderReply.model_validate_json(rejected.body)
    assert not refusal.accepted and refusal.order_id is None
    assert refusal.reason is not None and "self-check failed: 3 problem(s)" in refusal.reason
    assert refusal.code == "self_check_failed" and "Error" not in refusal.reason
    assert [p.pointer for p in refusal.problems] == [
        "/customer/name",
        "/lines/0/unit_price",
        "/delivery/date",
    ]

    [dead] = await get_messages(amqp, topology.INTAKE_COMMANDS.dlq, 1)
    assert dead.message_id == mid
    assert "self-check failed: 3 problem(s)" in dead.headers["x-orderflow-reason"]
    assert dead.headers["x-orderflow-reason-code"] == "self_check_failed"
    assert dead.headers["x-orderflow-queue"] == topology.INTAKE_COMMANDS.name
    assert json.loads(dead.body) == bad

    # the consumer went on: the good command behind it was accepted, and only it
    reply = SubmitOrderReply.model_validate_json(accepted.body)
    assert reply.accepted
    assert (await client.get("/api/v1/orders")).json()["total"] == 1

    # a body that is not an order at all: refused with the field at fault
    async with reply_queue(amqp) as replies:
        await send_command(
            amqp, {**product_order, "colour": "red"}, reply_to=replies.name, correlation_id="x"
        )
        refusal = SubmitOrderReply.model_validate_json((await next_reply(replies)).body)
    assert not refusal.accepted
    [problem] = refusal.problems
    assert problem.pointer == "/colour"
    assert "Extra inputs" in problem.detail
    await get_messages(amqp, topology.INTAKE_COMMANDS.dlq, 1)


async def test_command_for_an_existing_order(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, technical_order: dict[str, Any]
) -> None:
    application, client = app
    product_order = technical_order
    # a revision that finds the order under review waits for the decision: here briefly
    settings = application.state.settings
    application.state.settings = settings.model_copy(update={"revision_decision_wait": 0.5})
    created = (await client.post("/api/v1/orders", json=product_order)).json()
    order_id = created["id"]
    # the customer's specification, which an order with technical requirements needs
    await client.post(
        f"/api/v1/orders/{order_id}/attachments",
        data={"kind": "requirements_spec"},
        files={"file": ("spec.txt", "法兰密封面 Ra1.6".encode(), "text/plain")},
    )

    # a draft: its open revision is replaced and submitted
    product_order["lines"][0]["quantity"] = "210"
    async with reply_queue(amqp) as replies:
        await send_command(amqp, {**product_order, "order_id": order_id}, reply_to=replies.name)
        reply = SubmitOrderReply.model_validate_json((await next_reply(replies)).body)
    assert reply.accepted and str(reply.order_id) == order_id and reply.revision == 1
    order = (await client.get(f"/api/v1/orders/{order_id}")).json()
    assert order["document"]["lines"][0]["quantity"] == "210"
    assert order["channel"] == "api"  # it was created over HTTP; this revision came by bus

    # submitted, and no decision comes: a conflict, to be sent again later (not dead-lettered)
    async with reply_queue(amqp) as replies:
        await send_command(amqp, {**product_order, "order_id": order_id}, reply_to=replies.name)
        refusal = SubmitOrderReply.model_validate_json((await next_reply(replies)).body)
    assert not refusal.accepted and refusal.retryable
    assert refusal.reason is not None and refusal.reason.startswith("conflict")
    assert refusal.code == "decision_pending"
    assert "submitted" in refusal.reason
    assert refusal.status == "submitted" and refusal.revision == 1
    assert [p.pointer for p in refusal.problems] == ["/order_id"]

    # sent back by the departments: the command makes revision 2
    await send_event(amqp, changes_requested(order_id, 1))
    await wait_status(client, order_id, "changes_requested")
    product_order["payment"]["terms"] = "50% 预付，50% 货到后 30 天内付清"
    async with reply_queue(amqp) as replies:
        await send_command(amqp, {**product_order, "order_id": order_id}, reply_to=replies.name)
        reply = SubmitOrderReply.model_validate_json((await next_reply(replies)).body)
    assert reply.accepted and reply.revision == 2 and reply.status == "submitted"
    order = await wait_status(client, order_id, "submitted")
    assert order["current_revision"] == 2 and order["submitted_revision"] == 2
    first = (await client.get(f"/api/v1/orders/{order_id}/revisions/1")).json()
    assert first["document"]["payment"]["terms"].startswith("30%")

    # an order that does not exist
    async with reply_queue(amqp) as replies:
        missing = str(uuid.uuid4())
        await send_command(amqp, {**product_order, "order_id": missing}, reply_to=replies.name)
        refusal = SubmitOrderReply.model_validate_json((await next_reply(replies)).body)
    assert not refusal.accepted and not refusal.retryable
    assert refusal.reason is not None and missing in refusal.reason
    assert refusal.code == "unknown_order"
    [dead] = await get_messages(amqp, topology.INTAKE_COMMANDS.dlq, 1)
    assert "does not exist" in dead.headers["x-orderflow-reason"]

    # a revision made from an older revision than the order's: a conflict at once
    await send_event(amqp, changes_requested(order_id, 2))
    await wait_status(client, order_id, "changes_requested")
    async with reply_queue(amqp) as replies:
        stale = {**product_order, "order_id": order_id, "revises": 1}
        await send_command(amqp, stale, reply_to=replies.name)
        conflict = SubmitOrderReply.model_validate_json((await next_reply(replies)).body)
    assert not conflict.accepted and conflict.retryable
    assert conflict.code == "stale_revision"
    assert conflict.revision == 2 and conflict.status == "changes_requested"
    assert [p.pointer for p in conflict.problems] == ["/revises"]
    # and one that names a revision the order does not have: refused for good
    async with reply_queue(amqp) as replies:
        unknown = {**product_order, "order_id": order_id, "revises": 7}
        await send_command(amqp, unknown, reply_to=replies.name)
        refusal = SubmitOrderReply.model_validate_json((await next_reply(replies)).body)
    assert not refusal.accepted and not refusal.retryable
    assert [p.pointer for p in refusal.problems] == ["/revises"]
    assert refusal.code == "unknown_revision"
    assert await queue_depth(amqp, topology.INTAKE_COMMANDS.dlq) == 1


def changes_requested(order_id: Any, revision: int) -> OrderChangesRequested:
    annotations = [
        Annotation(field="/payment/terms", message="预付比例至少 50%", severity="blocker"),
        Annotation(field="/lines/0/unit_price", message="低于成本价 90.00", severity="blocker"),
    ]
    return OrderChangesRequested(
        order_id=order_id,
        revision=revision,
        salesperson=Salesperson(id="zhang.wei"),
        feedback=[
            DepartmentFeedback(
                department="finance",
                decision=Decision.REQUEST_CHANGES,
                reviewer=Reviewer(id="wang.fang", name="王芳"),
                comment="付款条件需调整",
                annotations=annotations,
            ),
            DepartmentFeedback(
                department="production",
                decision=Decision.APPROVE,
                reviewer=Reviewer(id="liu.qiang"),
            ),
        ],
        annotations=annotations,
        decided_at=datetime.now(UTC),
    )


def approved(order_id: Any, revision: int, document: dict[str, Any]) -> OrderApproved:
    order = OrderDocument.model_validate(document)
    return OrderApproved(
        order_id=order_id,
        revision=revision,
        order=order,
        totals=Totals.of(order),
        approvals=[],
        approved_at=datetime.now(UTC),
    )


def round_opened(order_id: Any, revision: int) -> ReviewRoundOpened:
    return ReviewRoundOpened(
        round_id=uuid.uuid4(),
        order_id=order_id,
        revision=revision,
        departments=["supervisor", "finance"],
        opened_at=datetime.now(UTC),
    )


async def test_projection_follows_the_review(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, product_order: dict[str, Any]
) -> None:
    application, client = app
    created = await client.post("/api/v1/orders", json=product_order, params={"submit": "true"})
    order_id = created.json()["id"]
    await wait_events(application, order_id, 1)

    await send_event(amqp, round_opened(order_id, 1))
    await wait_status(client, order_id, "in_review")

    await send_event(amqp, changes_requested(order_id, 1))
    order = await wait_status(client, order_id, "changes_requested")
    request = order["change_request"]
    assert request["revision"] == 1
    assert [f["department"] for f in request["feedback"]] == ["finance", "production"]
    assert request["feedback"][0]["comment"] == "付款条件需调整"
    assert request["feedback"][0]["annotations"][0]["field"] == "/payment/terms"
    assert [a["field"] for a in request["annotations"]] == ["/payment/terms", "/lines/0/unit_price"]

    # the salesperson revises: revision 2, revision 1 stays as it was reviewed
    product_order["payment"]["terms"] = "50% 预付，50% 货到后 30 天内付清"
    product_order["lines"][0]["unit_price"] = "92.00"
    spec = await client.post(
        f"/api/v1/orders/{order_id}/attachments",
        data={"kind": "requirements_spec"},
        files={"file": ("spec.txt", "法兰密封面 Ra1.6".encode(), "text/plain")},
    )
    assert spec.status_code == 201, spec.text
    assert spec.json()["revision"] == 2  # the file opened revision 2; revision 1 is as reviewed
    revised = await client.put(
        f"/api/v1/orders/{order_id}",
        json=product_order,
        headers={"If-Match": spec.headers["etag"]},
    )
    assert revised.status_code == 200
    assert revised.json()["current_revision"] == 2
    assert revised.json()["status"] == "changes_requested"
    assert revised.json()["change_request"]["revision"] == 1  # still shown while revising
    assert (await client.post(f"/api/v1/orders/{order_id}/submit")).status_code == 200
    await wait_events(application, order_id, 4)

    # an older revision's events change nothing
    await send_event(amqp, approved(order_id, 1, product_order))
    await send_event(amqp, round_opened(order_id, 2))
    await wait_status(client, order_id, "in_review")
    assert (await client.get(f"/api/v1/orders/{order_id}")).json()["approved_at"] is None

    await send_event(amqp, approved(order_id, 2, product_order))
    order = await wait_status(client, order_id, "approved")
    assert order["approved_at"] is not None

    # a late round_opened after the approval does not move it back
    await send_event(amqp, round_opened(order_id, 2))
    contract = ContractDrafted(
        contract_id=uuid.uuid4(),
        contract_number="HT-2026-000042",
        order_id=order_id,
        revision=2,
        salesperson=Salesperson(id="zhang.wei"),
        currency="CNY",
        total="22642.80",
        drafted_at=datetime.now(UTC),
    )
    await send_event(amqp, contract)
    order = await wait_status(client, order_id, "contract_drafted")
    assert order["contract"] == {
        "contract_id": str(contract.contract_id),
        "contract_number": "HT-2026-000042",
        "signed_at": None,
    }
    await send_event(
        amqp,
        ContractSigned(
            contract_id=contract.contract_id,
            contract_number=contract.contract_number,
            order_id=order_id,
            revision=2,
            signed_at=datetime.now(UTC),
        ),
    )
    order = await wait_status(client, order_id, "contract_signed")
    assert order["contract"]["signed_at"] is not None

    events = await timeline(application, order_id)
    assert [(e["type"], e["revision"]) for e in events] == [
        ("order.submitted", 1),
        ("review.round_opened", 1),
        ("order.changes_requested", 1),
        ("order.submitted", 2),
        ("order.approved", 1),
        ("review.round_opened", 2),
        ("order.approved", 2),
        ("review.round_opened", 2),
        ("contract.drafted", 2),
        ("contract.signed", 2),
    ]
    outcomes = [e["outcome"] for e in events]
    assert outcomes[1] == "submitted -> in_review"
    assert outcomes[4].startswith("ignored: revision 1 is older")
    assert outcomes[7].startswith("unchanged")
    assert outcomes[9] == "contract_drafted -> contract_signed"


async def test_events_of_other_orders_and_types_are_acknowledged(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, product_order: dict[str, Any]
) -> None:
    application, client = app
    stranger = uuid.uuid4()
    await send_event(amqp, changes_requested(stranger, 1))
    await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key="inventory.reserved",
        body=b'{"sku": "FL-50-16"}',
        message_type="inventory.reserved",
    )
    # a known type with a broken body can never be projected: dead-lettered
    await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key="order.approved",
        body=b'{"order_id": "nope"}',
        message_type="order.approved",
    )
    created = await client.post("/api/v1/orders", json=product_order, params={"submit": "true"})
    order_id = created.json()["id"]
    await send_event(amqp, round_opened(order_id, 1))
    await wait_status(client, order_id, "in_review")

    [dead] = await get_messages(amqp, topology.INTAKE_PROJECTION.dlq, 1)
    assert dead.type == "order.approved"
    assert "order_id" in dead.headers["x-orderflow-reason"]
    await nothing_more(
        amqp, topology.INTAKE_PROJECTION.dlq, inputs=[topology.INTAKE_PROJECTION.name]
    )
    assert await queue_depth(amqp, topology.INTAKE_PROJECTION.dlq) == 0
    assert await queue_depth(amqp, topology.INTAKE_PROJECTION.name) == 0
    assert (
        await application.state.runtime.pool.fetchval(
            "SELECT count(*) FROM order_events WHERE order_id = $1", stranger
        )
        == 0
    )


async def test_the_same_purchase_order_from_the_api_and_the_bus_is_flagged(
    app: tuple[FastAPI, httpx.AsyncClient], amqp: Any, product_order: dict[str, Any]
) -> None:
    _, client = app
    first = await client.post("/api/v1/orders", json=product_order, params={"submit": "true"})
    assert first.status_code == 201
    first_id = first.json()["id"]
    assert first.json()["possible_duplicate_of"] == []

    # the customer's ERP sends the same purchase order, written its own way
    from_erp = json.loads(json.dumps(product_order))
    from_erp["external_ref"] = "po sjpm 2026/0042"
    from_erp["customer"]["name"] = " 上海精密机械有限公司 "
    mid = str(uuid.uuid4())
    async with reply_queue(amqp) as replies:
        for _ in range(2):  # delivered twice: still one order
            await send_command(amqp, from_erp, message_id=mid, reply_to=replies.name)
        reply = SubmitOrderReply.model_validate_json((await next_reply(replies)).body)
    assert reply.accepted  # accepted, not merged
    second_id = str(reply.order_id)
    second = (await client.get(f"/api/v1/orders/{second_id}")).json()
    assert second["possible_duplicate_of"] == [first_id]
    assert second["channel"] == "bus"
    # the first one is not marked: it came first
    assert (await client.get(f"/api/v1/orders/{first_id}")).json()["possible_duplicate_of"] == []

    # another customer's order with the same reference is not a duplicate
    stranger = json.loads(json.dumps(product_order))
    stranger["customer"]["name"] = "杭州某某有限公司"
    third = await client.post("/api/v1/orders", json=stranger)
    assert third.json()["possible_duplicate_of"] == []

    flagged = (await client.get("/api/v1/orders", params={"duplicate": "true"})).json()
    assert [(o["id"], o["possible_duplicate_of"]) for o in flagged["items"]] == [
        (second_id, [first_id])
    ]
    others = (await client.get("/api/v1/orders", params={"duplicate": "false"})).json()
    assert {o["id"] for o in others["items"]} == {first_id, third.json()["id"]}

    # the salesperson corrects the third order's reference: now it is one too
    stranger["customer"]["name"] = "上海精密机械有限公司"
    etag = (await client.get(f"/api/v1/orders/{third.json()['id']}")).headers["etag"]
    edited = await client.put(
        f"/api/v1/orders/{third.json()['id']}", json=stranger, headers={"If-Match": etag}
    )
    assert edited.json()["possible_duplicate_of"] == [first_id, second_id]
    # and back: no longer
    stranger["external_ref"] = "PO-SJPM-2026-0043"
    edited = await client.put(
        f"/api/v1/orders/{third.json()['id']}",
        json=stranger,
        headers={"If-Match": edited.headers["etag"]},
    )
    assert edited.json()["possible_duplicate_of"] == []

    # two orders with one new reference arriving together still see each other
    product_order["external_ref"] = "PO-SJPM-2026-0099"
    together = await asyncio.gather(
        *(client.post("/api/v1/orders", json=product_order) for _ in range(4))
    )
    marks = sorted(len(r.json()["possible_duplicate_of"]) for r in together)
    assert marks == [0, 1, 2, 3]
