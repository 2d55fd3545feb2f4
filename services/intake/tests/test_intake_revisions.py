"""Revisions against the real broker and database: optimistic concurrency (ETag and
If-Match), the field-level difference between revisions, what `order.submitted` tells the
departments about a resubmission, and the order's timeline."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from orderflow import topology
from orderflow.messages import (
    Annotation,
    ContractDrafted,
    Decision,
    DepartmentFeedback,
    Message,
    NotificationDelivered,
    OrderApproved,
    OrderChangesRequested,
    OrderDocument,
    OrderSubmitted,
    Reviewer,
    ReviewRoundOpened,
    Salesperson,
    Totals,
    VerdictRecorded,
)
from orderflow_testkit.testing import eventually, get_messages, publish

PROBLEM_JSON = "application/problem+json"


async def send_event(amqp: Any, event: Message) -> None:
    await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key=event.message_type,
        body=event.model_dump_json().encode(),
        message_type=event.message_type,
        correlation_id=str(getattr(event, "order_id", "")),
    )


async def wait_status(client: httpx.AsyncClient, order_id: str, status: str) -> Any:
    async def reached() -> Any:
        order = (await client.get(f"/api/v1/orders/{order_id}")).json()
        return order if order["status"] == status else None

    return await eventually(reached)


FINANCE = Reviewer(id="wang.fang", name="王芳")
PAYMENT = "50% 预付，50% 货到后 30 天内付清"


def changes_requested(order_id: str, revision: int, at: datetime) -> OrderChangesRequested:
    annotation = Annotation(field="/payment/terms", message="预付比例至少 50%", severity="blocker")
    return OrderChangesRequested(
        order_id=order_id,
        revision=revision,
        salesperson=Salesperson(id="zhang.wei"),
        feedback=[
            DepartmentFeedback(
                department="finance",
                decision=Decision.REQUEST_CHANGES,
                reviewer=FINANCE,
                comment="付款条件需调整",
                annotations=[annotation],
            )
        ],
        annotations=[annotation],
        decided_at=at,
    )


async def test_if_match_is_required_on_put_in_the_openapi_and_in_fact(
    app: tuple[FastAPI, httpx.AsyncClient], api: Any, product_order: dict[str, Any]
) -> None:
    """What the OpenAPI document says of `PUT /orders/{id}` is what intake does: without
    If-Match the change is refused with 428, so a generated client must send it."""
    service, client = app
    put = service.openapi()["paths"]["/api/v1/orders/{order_id}"]["put"]
    [if_match] = [p for p in put["parameters"] if p["name"].lower() == "if-match"]
    assert (if_match["in"], if_match["required"]) == ("header", True)
    assert if_match["schema"]["type"] == "string"
    assert "428" in put["responses"]

    order = await api.create(product_order)
    url = f"/api/v1/orders/{order['id']}"
    product_order["notes"] = "without If-Match"
    for headers in ({}, {"If-Match": ""}, {"If-Match": "*"}):
        missing = await client.put(url, json=product_order, headers=headers)
        assert missing.status_code == 428, (headers, missing.text)
        assert missing.headers["content-type"] == PROBLEM_JSON
        assert missing.json()["type"] == "urn:orderflow:problem:precondition-required"
    assert (await client.get(url)).json()["document"]["notes"] != "without If-Match"
    etag = (await client.get(url)).headers["etag"]
    sent = await client.put(url, json=product_order, headers={"If-Match": etag})
    assert sent.status_code == 200, sent.text


async def test_stale_put_is_answered_409_with_the_current_revision(
    client: httpx.AsyncClient, api: Any, product_order: dict[str, Any]
) -> None:
    order = await api.create(product_order)
    url = f"/api/v1/orders/{order['id']}"
    read = await client.get(url)
    etag = read.headers["etag"]
    assert etag == '"r1.1"' == read.json()["etag"]

    # without If-Match: refused, nothing written
    product_order["notes"] = "一"
    missing = await client.put(url, json=product_order)
    assert missing.status_code == 428
    assert missing.headers["content-type"] == PROBLEM_JSON
    assert missing.json()["errors"] == [
        {"pointer": "header:/If-Match", "detail": "If-Match is required"}
    ]
    star = await client.put(url, json=product_order, headers={"If-Match": "*"})
    assert star.status_code == 428

    # two salespeople read the same revision; the first to save wins
    first = await client.put(url, json=product_order, headers={"If-Match": etag})
    assert first.status_code == 200, first.text
    assert first.headers["etag"] == '"r1.2"' == first.json()["etag"]
    product_order["notes"] = "二"
    second = await client.put(url, json=product_order, headers={"If-Match": etag})
    assert second.status_code == 409
    assert second.headers["content-type"] == PROBLEM_JSON
    problem = second.json()
    assert problem["type"] == "urn:orderflow:problem:stale-revision"
    assert problem["current_revision"] == 1
    assert problem["current_etag"] == '"r1.2"' == second.headers["etag"]
    assert '"r1.1"' in problem["detail"] and '"r1.2"' in problem["detail"]
    assert (await client.get(url)).json()["document"]["notes"] == "一"  # never overwritten

    # many writers with the same ETag at once: exactly one is applied
    responses = await asyncio.gather(
        *(
            client.put(
                url, json={**product_order, "notes": f"writer {i}"}, headers={"If-Match": '"r1.2"'}
            )
            for i in range(6)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409, 409, 409]
    [winner] = [r for r in responses if r.status_code == 200]
    assert (await client.get(url)).json()["document"]["notes"] == winner.json()["document"]["notes"]

    # other changes honour If-Match too, when sent
    stale_upload = await api.attach(order["id"], headers={"If-Match": '"r1.2"'})
    assert stale_upload.status_code == 409
    stale_submit = await client.post(f"{url}/submit", headers={"If-Match": '"r1.2"'})
    assert stale_submit.status_code == 409
    stale_withdraw = await client.post(f"{url}/withdraw", headers={"If-Match": '"r1.2"'})
    assert stale_withdraw.status_code == 409
    assert (await client.get(url)).json()["status"] == "draft"


async def test_revisions_their_diff_and_what_the_departments_are_told(
    app: tuple[FastAPI, httpx.AsyncClient],
    api: Any,
    amqp: Any,
    product_order: dict[str, Any],
) -> None:
    _, client = app
    order = await api.create(product_order)
    order_id = order["id"]
    spec = await api.attached(order_id)
    await api.submit(order_id)
    [msg] = await get_messages(amqp, topology.ROUTER_SUBMITTED.name, 1)
    assert OrderSubmitted.model_validate_json(msg.body).previous_revision is None

    await send_event(amqp, changes_requested(order_id, 1, datetime.now(UTC)))
    await wait_status(client, order_id, "changes_requested")
    product_order["payment"]["terms"] = PAYMENT
    product_order["lines"][0]["unit_price"] = "95.00"
    del product_order["lines"][0]["attributes"]["colour"]
    product_order["lines"].append(
        {"item": "螺栓", "model": "M12", "quantity": "800", "unit": "个", "unit_price": "1.10"}
    )
    revised = await api.put(order_id, product_order)
    assert revised.status_code == 200 and revised.json()["current_revision"] == 2
    drawing = await api.attached(
        order_id, kind="drawing", name="图.png", content=api.png(), content_type="image/png"
    )

    revisions = (await client.get(f"/api/v1/orders/{order_id}/revisions")).json()
    assert revisions["current_revision"] == 2
    assert [
        (r["revision"], r["attachments"], r["submitted_at"] is None) for r in revisions["items"]
    ] == [(1, 1, False), (2, 2, True)]

    diff = await client.get(f"/api/v1/orders/{order_id}/revisions/1/diff/2")
    assert diff.status_code == 200
    body = diff.json()
    assert (body["from_revision"], body["to_revision"]) == (1, 2)
    added_line = {
        "item": "螺栓",
        "specification": None,
        "model": "M12",
        "quantity": "800",
        "unit": "个",
        "unit_price": "1.10",
        "amount": None,
        "attributes": {},
        "service": None,
    }
    drawing_entry = {k: v for k, v in drawing.items() if k != "id"}
    assert body["changes"] == [
        {"pointer": "/lines/0/attributes/colour", "old": "本色", "new": None},
        {"pointer": "/lines/0/unit_price", "old": "85.50", "new": "95.00"},
        {"pointer": "/lines/2", "old": None, "new": added_line},
        {"pointer": "/payment/terms", "old": "30% 预付，70% 货到后 30 天内付清", "new": PAYMENT},
        {"pointer": f"/attachments/{drawing['id']}", "old": None, "new": drawing_entry},
    ]
    back = (await client.get(f"/api/v1/orders/{order_id}/revisions/2/diff/1")).json()
    assert [(c["pointer"], c["old"], c["new"]) for c in back["changes"]] == [
        (c["pointer"], c["new"], c["old"]) for c in body["changes"]
    ]
    same = (await client.get(f"/api/v1/orders/{order_id}/revisions/2/diff/2")).json()
    assert same["changes"] == []
    missing = await client.get(f"/api/v1/orders/{order_id}/revisions/1/diff/3")
    assert missing.status_code == 404 and missing.json()["revision"] == 3

    # resubmitted: the departments are told exactly that
    await api.submit(order_id)
    [msg] = await get_messages(amqp, topology.ROUTER_SUBMITTED.name, 1)
    event = OrderSubmitted.model_validate_json(msg.body)
    assert event.revision == 2 and event.previous_revision == 1
    assert [c.model_dump(mode="json") for c in event.changes] == body["changes"]
    assert [a.id for a in event.attachments] == [uuid.UUID(spec["id"]), uuid.UUID(drawing["id"])]
    assert event.totals == Totals.of(OrderDocument.model_validate(product_order))


async def test_the_timeline_lists_every_event_in_order(
    app: tuple[FastAPI, httpx.AsyncClient],
    api: Any,
    amqp: Any,
    product_order: dict[str, Any],
) -> None:
    _, client = app
    order = await api.create(product_order)
    order_id = order["id"]
    await api.attached(order_id, name="规格书.pdf")
    product_order["notes"] = "客户要求分三批发货"
    assert (await api.put(order_id, product_order)).status_code == 200
    await api.submit(order_id)

    async def timeline_types(count: int) -> list[str] | None:
        items = (await client.get(f"/api/v1/orders/{order_id}/timeline")).json()["items"]
        return [i["type"] for i in items] if len(items) >= count else None

    # intake's own submission comes back through the bus; then the departments' events
    await eventually(lambda: timeline_types(4))
    start = datetime.now(UTC)
    round_id = uuid.uuid4()
    events: list[Message] = [
        ReviewRoundOpened(
            round_id=round_id,
            order_id=order_id,
            revision=1,
            departments=["supervisor"],
            opened_at=start,
        ),
        VerdictRecorded(
            review_id=uuid.uuid4(),
            order_id=order_id,
            revision=1,
            department="supervisor",
            decision=Decision.APPROVE,
            reviewer=Reviewer(id="li.ming", name="李明"),
            comment="客户信用良好",
            recorded_at=start + timedelta(milliseconds=1),
        ),
        VerdictRecorded(
            review_id=uuid.uuid4(),
            order_id=order_id,
            revision=1,
            department="finance",
            decision=Decision.REQUEST_CHANGES,
            reviewer=FINANCE,
            comment="付款条件需调整",
            annotations=[Annotation(field="/payment/terms", message="预付比例至少 50%")],
            recorded_at=start + timedelta(milliseconds=2),
        ),
        changes_requested(order_id, 1, start + timedelta(milliseconds=3)),
        NotificationDelivered(
            notification_id=uuid.uuid4(),
            order_id=order_id,
            recipient="zhang.wei",
            channel="inbox",
            event_type="order.changes_requested",
            delivered_at=start + timedelta(milliseconds=4),
        ),
    ]
    # published out of order: the timeline is in the order things happened
    for event in reversed(events):
        await send_event(amqp, event)
    await eventually(lambda: timeline_types(9))
    await wait_status(client, order_id, "changes_requested")
    product_order["payment"]["terms"] = PAYMENT
    assert (await api.put(order_id, product_order)).status_code == 200
    await api.submit(order_id)
    await eventually(lambda: timeline_types(11))
    later = datetime.now(UTC) + timedelta(seconds=10)
    document = OrderDocument.model_validate(product_order)
    await send_event(
        amqp,
        OrderApproved(
            order_id=order_id,
            revision=2,
            order=document,
            totals=Totals.of(document),
            approvals=[
                DepartmentFeedback(
                    department="finance", decision=Decision.APPROVE, reviewer=FINANCE
                )
            ],
            approved_at=later,
        ),
    )
    await send_event(
        amqp,
        ContractDrafted(
            contract_id=uuid.uuid4(),
            contract_number="HT-2026-000007",
            order_id=order_id,
            revision=2,
            salesperson=Salesperson(id="zhang.wei"),
            currency="CNY",
            total="22642.80",
            drafted_at=later + timedelta(seconds=1),
        ),
    )
    await eventually(lambda: timeline_types(13))

    timeline = await client.get(f"/api/v1/orders/{order_id}/timeline")
    assert timeline.status_code == 200
    items = timeline.json()["items"]
    assert [(i["type"], i["revision"], i["source"]) for i in items] == [
        ("order.created", 1, "intake"),
        ("attachment.added", 1, "intake"),
        ("order.revised", 1, "intake"),
        ("order.submitted", 1, "bus"),
        ("review.round_opened", 1, "bus"),
        ("review.verdict_recorded", 1, "bus"),
        ("review.verdict_recorded", 1, "bus"),
        ("order.changes_requested", 1, "bus"),
        ("notification.delivered", None, "bus"),
        ("order.revised", 2, "intake"),
        ("order.submitted", 2, "bus"),
        ("order.approved", 2, "bus"),
        ("contract.drafted", 2, "bus"),
    ]
    times = [datetime.fromisoformat(i["at"]) for i in items]
    assert times == sorted(times)
    by_type = {i["type"]: i for i in items}
    # intake's own actions and its submissions name the signed-in caller (here an API key)
    me = (await client.get("/auth/me")).json()
    caller = {
        "kind": "system",
        "id": me["id"],
        "name": None,
        "department": None,
        "via": "api_key",
        "source": "127.0.0.1",
    }
    assert items[0]["actor"] == caller
    assert items[0]["summary"] == "Order created (api)"
    assert by_type["attachment.added"]["summary"] == "File added: 规格书.pdf (requirements_spec)"
    assert items[3]["actor"] == caller
    assert items[10]["summary"].endswith("1 change(s) since revision 1")
    verdict = items[6]
    assert verdict["actor"] == {
        "kind": "reviewer",
        "id": "wang.fang",
        "name": "王芳",
        "department": "finance",
        "via": None,
        "source": None,
    }
    assert verdict["details"]["decision"] == "request_changes"
    assert verdict["details"]["annotations"][0]["field"] == "/payment/terms"
    assert by_type["order.changes_requested"]["summary"] == "Changes requested by finance"
    assert by_type["contract.drafted"]["details"]["contract_number"] == "HT-2026-000007"
    assert by_type["notification.delivered"]["actor"]["id"] == "notifier"

    missing = await client.get(f"/api/v1/orders/{uuid.uuid4()}/timeline")
    assert missing.status_code == 404
