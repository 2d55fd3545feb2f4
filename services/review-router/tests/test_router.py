"""The review-router against the real broker and database."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import httpx
import pytest

from orderflow import topology
from orderflow.messages import (
    Annotation,
    Customer,
    Decision,
    Delivery,
    OrderDocument,
    OrderLine,
    OrderSubmitted,
    OrderWithdrawalRequested,
    Payment,
    ReviewCancelled,
    Reviewer,
    ReviewRequested,
    Salesperson,
    ServiceTerms,
    Totals,
    VerdictGiven,
)
from orderflow_testkit.testing import (
    Infra,
    ServiceProcess,
    bearer,
    eventually,
    get_messages,
    issue_key_for,
    nothing_more,
    publish,
    queue_depth,
    running,
    start_service,
    wait_ready,
)
from review_router.main import create_app
from review_router.settings import Settings

PROBE = topology.QueueSpec("probe.router-events", topology.EVENTS, ("#",))
VERDICTS_DLQ = "review-router.verdicts.dlq"
STAGE_TWO = ("production", "service_delivery", "finance", "technical")


# --- orders -----------------------------------------------------------------------------


def product_order(*, technical: bool = True) -> OrderDocument:
    return OrderDocument(
        order_type="product",
        external_ref="PO-SJPM-2026-0042",
        salesperson=Salesperson(id="zhang.wei", name="张伟"),
        customer=Customer(name="上海精密机械有限公司", email="li.na@example.cn"),
        lines=[
            OrderLine(item="不锈钢法兰", quantity="200", unit="件", unit_price="85.50"),
            OrderLine(item="密封垫片", quantity="400", unit="片", unit_price="3.20"),
        ],
        tax_rate="0.13",
        delivery=Delivery(date="2027-03-15", method="物流配送"),
        payment=Payment(method="bank_transfer", terms="30% 预付", settlement_days=30),
        technical_requirements="法兰密封面按客户图纸加工，粗糙度 Ra1.6" if technical else None,
    )


def service_order() -> OrderDocument:
    return OrderDocument(
        order_type="service",
        salesperson=Salesperson(id="chen.jing"),
        customer=Customer(name="Hangzhou Riverside Logistics Co., Ltd."),
        lines=[
            OrderLine(
                item="Annual maintenance of conveyor lines",
                quantity="1",
                unit="year",
                unit_price="48000.00",
                service=ServiceTerms(content="Quarterly inspection", standard="4h response"),
            )
        ],
        tax_rate="0.06",
        payment=Payment(terms="Quarterly in advance", settlement_days=15),
    )


# --- the bus, as departments and other services see it ---------------------------------


class Events:
    """Every event on `orderflow.events`, collected from a probe queue of the test's own."""

    def __init__(self, amqp: aio_pika.abc.AbstractConnection) -> None:
        self._amqp = self.amqp = amqp
        self.received: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def start(self) -> None:
        channel = await self._amqp.channel()
        await topology.declare(channel, [PROBE])
        queue = await channel.get_queue(PROBE.name)
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.received.append(message)

    def of(self, message_type: str, order_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
        bodies = [json.loads(m.body) for m in self.received if m.type == message_type]
        return [b for b in bodies if order_id is None or b["order_id"] == str(order_id)]

    def messages(self, order_id: uuid.UUID) -> list[aio_pika.abc.AbstractIncomingMessage]:
        return [m for m in self.received if json.loads(m.body).get("order_id") == str(order_id)]

    async def wait(
        self, message_type: str, order_id: uuid.UUID, count: int = 1, timeout: float = 15
    ) -> list[dict[str, Any]]:
        async def enough() -> list[dict[str, Any]] | None:
            found = self.of(message_type, order_id)
            return found if len(found) >= count else None

        found: list[dict[str, Any]] = await eventually(enough, timeout=timeout)
        return found


def user_of(infra: Infra) -> str:
    """The RabbitMQ user the tests connect as; it acts for every department, as the
    console's user does for its logged-in reviewers."""
    return urlsplit(infra.amqp_url).username or "guest"


def settings(infra: Infra, **extra: Any) -> Settings:
    extra.setdefault("verdict_acting_users", [user_of(infra)])
    return Settings(
        database_url=infra.database_url,
        amqp_url=infra.url_as("review-router"),
        outbox_poll_interval=0.2,
        **extra,
    )


@pytest.fixture
async def events(amqp: Any) -> Events:
    # declared before the router starts, so its events are routable from the first one
    collected = Events(amqp)
    await collected.start()
    return collected


@pytest.fixture
async def router(infra: Infra, events: Events) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings(infra))) as client:
        yield client


async def submit(
    amqp: Any, order: OrderDocument, *, order_id: uuid.UUID | None = None, revision: int = 1
) -> OrderSubmitted:
    event = OrderSubmitted(
        order_id=order_id or uuid.uuid4(),
        revision=revision,
        order=order,
        totals=Totals.of(order),
        channel="api",
        submitted_at=datetime.now(UTC),
    )
    await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key=event.message_type,
        body=event.model_dump_json().encode(),
        message_type=event.message_type,
        correlation_id=str(event.order_id),
    )
    return event


async def take(
    amqp: Any, department: str, count: int = 1, *, timeout: float = 15
) -> list[ReviewRequested]:
    """The department's next review requests (acknowledged)."""
    messages = await get_messages(amqp, f"review.{department}", count, timeout=timeout)
    assert all(m.type == ReviewRequested.message_type for m in messages)
    requests = [ReviewRequested.model_validate_json(m.body) for m in messages]
    assert all(m.correlation_id == str(r.order_id) for m, r in zip(messages, requests, strict=True))
    assert all(r.department == department for r in requests)
    return requests


async def give(
    amqp: Any,
    review: ReviewRequested,
    decision: Decision = Decision.APPROVE,
    *,
    annotations: Sequence[Annotation] = (),
    message_id: str | None = None,
    **change: Any,
) -> VerdictGiven:
    verdict = VerdictGiven(
        review_id=review.review_id,
        order_id=review.order_id,
        revision=review.revision,
        department=review.department,
        decision=decision,
        reviewer=Reviewer(id=f"{review.department}.lead", name="Reviewer"),
        comment="ok" if decision == Decision.APPROVE else "please revise",
        annotations=list(annotations),
    ).model_copy(update=change)
    await publish(
        amqp,
        exchange=topology.VERDICTS,
        routing_key=verdict.department,
        body=verdict.model_dump_json().encode(),
        message_id=message_id,
        message_type=verdict.message_type,
        correlation_id=str(verdict.order_id),
        user_id=amqp.url.user,
    )
    return verdict


async def depths(amqp: Any, departments: Sequence[str]) -> dict[str, int]:
    return {d: await queue_depth(amqp, f"review.{d}") for d in departments}


async def rounds(client: httpx.AsyncClient, order_id: uuid.UUID) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/rounds", params={"order_id": str(order_id)})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def statuses(round_: dict[str, Any]) -> dict[str, str]:
    return {r["department"]: r["status"] for r in round_["requests"]}


#: What the router consumes from (its timers need no queue).
ROUTER_INPUTS = (
    topology.ROUTER_SUBMITTED.name,
    topology.ROUTER_WITHDRAWAL_REQUESTS.name,
    topology.verdict_queue(()).name,
)


async def settle(events: Events, order_id: uuid.UUID, quiet: float = 0.8) -> None:
    """Wait until the router has taken every message sent to it and published what it wrote
    (its outbox drained), and a marker sent to the probe after that has come: every event of
    the order is in `events` by then. (`quiet` is no longer used: kept for the callers.)"""
    await nothing_more(
        events.amqp,
        PROBE.name,
        inputs=ROUTER_INPUTS,
        outboxes=["review_router"],
        received=lambda: events.received,
    )


# --- routing ---------------------------------------------------------------------------


async def test_product_order_supervisor_first_then_stage_two(
    amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    order = product_order(technical=True)
    submitted = await submit(amqp, order)
    oid = submitted.order_id

    [opened] = await events.wait("review.round_opened", oid)
    assert opened["departments"] == ["supervisor", "production", "finance", "technical"]
    assert opened["revision"] == 1
    [supervisor] = await take(amqp, "supervisor")
    assert (supervisor.stage, supervisor.revision, supervisor.order_id) == (1, 1, oid)
    assert supervisor.order == order and supervisor.totals == submitted.totals
    # the second stage is asked only after the supervisor approved
    assert await depths(amqp, STAGE_TWO) == dict.fromkeys(STAGE_TWO, 0)
    [round_] = await rounds(router, oid)
    assert round_["status"] == "open" and round_["current_stage"] == 1
    assert statuses(round_) == {
        "supervisor": "pending",
        "production": "not_sent",
        "finance": "not_sent",
        "technical": "not_sent",
    }
    pending = (await router.get("/api/v1/departments/supervisor/pending")).json()
    assert [p["review_id"] for p in pending["items"]] == [str(supervisor.review_id)]
    assert (await router.get("/api/v1/departments/finance/pending")).json()["total"] == 0

    await give(amqp, supervisor)
    second = {d: (await take(amqp, d))[0] for d in ("production", "finance", "technical")}
    assert {r.stage for r in second.values()} == {2}
    assert all(r.order_id == oid and r.order == order for r in second.values())
    assert await depths(amqp, ("supervisor", "service_delivery")) == {
        "supervisor": 0,
        "service_delivery": 0,
    }
    [recorded] = await events.wait("review.verdict_recorded", oid)
    assert recorded["department"] == "supervisor" and recorded["decision"] == "approve"
    # each request sent is announced once, with what the department received
    sent = {e["department"]: e for e in await events.wait("review.sent", oid, count=4)}
    assert sorted(sent) == ["finance", "production", "supervisor", "technical"]
    for review in (supervisor, *second.values()):
        announced = sent[review.department]
        assert announced["review_id"] == str(review.review_id)
        assert announced["round_id"] == round_["id"]
        assert (announced["stage"], announced["revision"]) == (review.stage, 1)
        assert datetime.fromisoformat(announced["sent_at"]) == review.requested_at
        assert announced["due_at"] is not None
        assert datetime.fromisoformat(announced["due_at"]) == review.due_at

    for review in second.values():
        await give(amqp, review)
    [approved] = await events.wait("order.approved", oid)
    assert [a["department"] for a in approved["approvals"]] == [
        "supervisor",
        "production",
        "finance",
        "technical",
    ]
    assert OrderDocument.model_validate(approved["order"]) == order
    assert Totals.model_validate(approved["totals"]) == submitted.totals
    await settle(events, oid)
    assert len(events.of("order.approved", oid)) == 1
    assert events.of("order.changes_requested", oid) == []
    assert len(events.of("review.verdict_recorded", oid)) == 4
    assert len(events.of("review.sent", oid)) == 4
    published = [m for m in events.messages(oid) if m.type != "order.submitted"]
    assert {m.correlation_id for m in published} == {str(oid)}
    assert {m.app_id for m in published} == {"review-router"}
    assert {m.delivery_mode for m in published} == {aio_pika.DeliveryMode.PERSISTENT}

    [round_] = await rounds(router, oid)
    assert round_["status"] == "approved" and round_["decided_at"] is not None
    assert set(statuses(round_).values()) == {"approved"}
    assert [v["outcome"] for v in round_["verdicts"]] == ["accepted"] * 4
    review = (await router.get(f"/api/v1/reviews/{second['finance'].review_id}")).json()
    assert review["status"] == "approved" and review["round_status"] == "approved"
    assert review["stage"] == 2 and OrderDocument.model_validate(review["order"]) == order
    assert [v["department"] for v in review["verdicts"]] == ["finance"]


async def test_service_order_goes_to_service_delivery(
    amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    submitted = await submit(amqp, service_order())
    oid = submitted.order_id
    [opened] = await events.wait("review.round_opened", oid)
    assert opened["departments"] == ["supervisor", "service_delivery", "finance"]
    [supervisor] = await take(amqp, "supervisor")
    await give(amqp, supervisor)
    [delivery] = await take(amqp, "service_delivery")
    [finance] = await take(amqp, "finance")
    assert delivery.stage == finance.stage == 2
    await events.wait("review.verdict_recorded", oid)
    assert await depths(amqp, ("production", "technical")) == {"production": 0, "technical": 0}
    pending = (await router.get("/api/v1/departments/service_delivery/pending")).json()
    assert pending["total"] == 1 and pending["items"][0]["review_id"] == str(delivery.review_id)

    await give(amqp, delivery)
    await give(amqp, finance)
    [approved] = await events.wait("order.approved", oid)
    assert [a["department"] for a in approved["approvals"]] == [
        "supervisor",
        "service_delivery",
        "finance",
    ]


# --- changes requested -----------------------------------------------------------------


async def test_changes_wait_for_the_stage_and_carry_every_annotation(
    amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    order = product_order(technical=True)
    oid = (await submit(amqp, order)).order_id
    [supervisor] = await take(amqp, "supervisor")
    await give(
        amqp,
        supervisor,
        annotations=[
            Annotation(field="/customer/name", message="老客户，信用良好", severity="info")
        ],
    )
    second = {d: (await take(amqp, d))[0] for d in ("production", "finance", "technical")}

    finance_remarks = [
        Annotation(field="/payment/terms", message="预付比例至少 50%", severity="blocker"),
        Annotation(field="/lines/0/unit_price", message="低于成本价 90.00", severity="blocker"),
    ]
    await give(amqp, second["finance"], Decision.REQUEST_CHANGES, annotations=finance_remarks)
    await events.wait("review.verdict_recorded", oid, count=2)
    # production and technical have not answered yet: the round waits for them
    await settle(events, oid, quiet=0.5)
    assert events.of("order.changes_requested", oid) == []
    [round_] = await rounds(router, oid)
    assert round_["status"] == "open"
    assert statuses(round_)["finance"] == "changes_requested"

    await give(amqp, second["production"])
    technical_remark = Annotation(
        field="/technical_requirements", message="请附图纸", severity="major"
    )
    await give(amqp, second["technical"], Decision.REQUEST_CHANGES, annotations=[technical_remark])
    [changes] = await events.wait("order.changes_requested", oid)
    assert changes["salesperson"]["id"] == "zhang.wei"
    assert changes["revision"] == 1
    assert [(f["department"], f["decision"]) for f in changes["feedback"]] == [
        ("supervisor", "approve"),
        ("production", "approve"),
        ("finance", "request_changes"),
        ("technical", "request_changes"),
    ]
    assert [Annotation.model_validate(a) for a in changes["annotations"]] == [
        Annotation(field="/customer/name", message="老客户，信用良好", severity="info"),
        *finance_remarks,
        technical_remark,
    ]
    await settle(events, oid)
    assert len(events.of("order.changes_requested", oid)) == 1
    assert events.of("order.approved", oid) == []
    [round_] = await rounds(router, oid)
    assert round_["status"] == "changes_requested"
    assert len(round_["decision"]["annotations"]) == 4


async def test_supervisor_changes_end_the_round_before_stage_two(
    amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    oid = (await submit(amqp, product_order(technical=True))).order_id
    [supervisor] = await take(amqp, "supervisor")
    remark = Annotation(field="/customer/company", message="补充企业信用信息", severity="blocker")
    await give(amqp, supervisor, Decision.REQUEST_CHANGES, annotations=[remark])
    [changes] = await events.wait("order.changes_requested", oid)
    assert [f["department"] for f in changes["feedback"]] == ["supervisor"]
    assert changes["annotations"] == [remark.model_dump(mode="json")]
    await settle(events, oid)
    # the later stage is never asked
    assert await depths(amqp, STAGE_TWO) == dict.fromkeys(STAGE_TWO, 0)
    # and so announced as sent to nobody but the supervisor
    [sent] = events.of("review.sent", oid)
    assert (sent["department"], sent["review_id"]) == ("supervisor", str(supervisor.review_id))
    [round_] = await rounds(router, oid)
    assert statuses(round_) == {
        "supervisor": "changes_requested",
        "production": "not_sent",
        "finance": "not_sent",
        "technical": "not_sent",
    }


# --- verdicts that change nothing --------------------------------------------------------


async def test_duplicate_verdicts_change_nothing(
    amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    oid = (await submit(amqp, product_order(technical=False))).order_id
    [supervisor] = await take(amqp, "supervisor")
    message_id = str(uuid.uuid4())
    await give(amqp, supervisor, message_id=message_id)
    await give(amqp, supervisor, message_id=message_id)  # the same message, delivered twice
    [production] = await take(amqp, "production")
    [finance] = await take(amqp, "finance")
    # another verdict for the review already answered, now asking for changes
    await give(amqp, supervisor, Decision.REQUEST_CHANGES, annotations=[])

    async def recorded_twice() -> list[dict[str, Any]] | None:
        [round_] = await rounds(router, oid)
        return round_ if len(round_["verdicts"]) == 2 else None

    round_ = await eventually(recorded_twice)
    assert [v["outcome"] for v in round_["verdicts"]] == ["accepted", "duplicate"]
    assert round_["verdicts"][0]["message_id"] == message_id
    assert round_["status"] == "open" and statuses(round_)["supervisor"] == "approved"
    await settle(events, oid)
    assert len(events.of("review.verdict_recorded", oid)) == 1
    assert events.of("order.changes_requested", oid) == []
    # the second stage was asked once
    assert await depths(amqp, ("production", "finance")) == {"production": 0, "finance": 0}

    await give(amqp, production)
    await give(amqp, finance)
    await events.wait("order.approved", oid)
    await give(amqp, finance, Decision.REQUEST_CHANGES)  # after the decision
    review = await eventually(lambda: _review_with_verdicts(router, finance.review_id, 2))
    assert [v["outcome"] for v in review["verdicts"]] == ["accepted", "round_closed"]
    await settle(events, oid)
    assert len(events.of("order.approved", oid)) == 1
    assert events.of("order.changes_requested", oid) == []


async def _review_with_verdicts(
    client: httpx.AsyncClient, review_id: uuid.UUID, count: int
) -> dict[str, Any] | None:
    review: dict[str, Any] = (await client.get(f"/api/v1/reviews/{review_id}")).json()
    return review if len(review["verdicts"]) >= count else None


async def handled(infra: Infra, consumer: str, count: int) -> bool:
    """The router's consumer has handled `count` messages (its inbox says so)."""
    conn = await asyncpg.connect(infra.database_url)
    try:
        done = await conn.fetchval(
            "SELECT count(*) FROM review_router.inbox WHERE consumer = $1", consumer
        )
    finally:
        await conn.close()
    return bool(done == count)


async def test_verdict_for_a_superseded_revision_changes_nothing(
    infra: Infra, amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    first = await submit(amqp, service_order())
    oid = first.order_id
    [old] = await take(amqp, "supervisor")
    assert old.revision == 1
    await submit(amqp, service_order(), order_id=oid, revision=2)

    messages = await get_messages(amqp, "review.supervisor", 2)
    by_type = {m.type: m for m in messages}
    cancelled = ReviewCancelled.model_validate_json(by_type["review.cancelled"].body)
    assert (cancelled.review_id, cancelled.revision) == (old.review_id, 1)
    assert "revision 2" in cancelled.reason
    new = ReviewRequested.model_validate_json(by_type["review.requested"].body)
    assert new.revision == 2 and new.review_id != old.review_id

    await give(amqp, old)  # revision 1's supervisor approves, too late

    async def stale() -> list[dict[str, Any]] | None:
        found = await rounds(router, oid)
        return found if found[0]["verdicts"] else None

    first_round, second_round = await eventually(stale)
    assert first_round["revision"] == 1 and first_round["status"] == "superseded"
    assert [v["outcome"] for v in first_round["verdicts"]] == ["stale"]
    assert statuses(first_round)["supervisor"] == "cancelled"
    assert second_round["status"] == "open" and second_round["current_stage"] == 1
    await settle(events, oid)
    assert events.of("review.verdict_recorded", oid) == []
    assert await depths(amqp, ("service_delivery", "finance")) == {
        "service_delivery": 0,
        "finance": 0,
    }
    # the same revision submitted again opens no second round
    await submit(amqp, service_order(), order_id=oid, revision=2)
    # nor does an older revision arriving late
    await submit(amqp, service_order(), order_id=oid, revision=1)
    await eventually(lambda: handled(infra, "review-router.order-submitted", 4))
    assert len(await rounds(router, oid)) == 2
    assert len(events.of("review.round_opened", oid)) == 2
    assert await queue_depth(amqp, "review.supervisor") == 0


# --- dead letters ---------------------------------------------------------------------


async def test_bad_verdicts_are_dead_lettered_and_the_consumer_goes_on(
    amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    oid = (await submit(amqp, service_order())).order_id
    [supervisor] = await take(amqp, "supervisor")

    async def raw(body: bytes, message_type: str | None = VerdictGiven.message_type) -> None:
        await publish(
            amqp,
            exchange=topology.VERDICTS,
            routing_key="supervisor",
            body=body,
            message_type=message_type,
            user_id=amqp.url.user,
        )

    unknown = uuid.uuid4()
    await raw(b"{not json")
    await raw(json.dumps({"review_id": str(supervisor.review_id), "decision": "maybe"}).encode())
    await give(amqp, supervisor, review_id=unknown)  # nobody asked for this review
    await give(amqp, supervisor, department="finance")  # not whom it was asked of
    await give(amqp, supervisor, revision=3)
    await raw(b'{"kind": "approve-all"}', "review.approve")  # no such message
    await raw(b'{"kind": "untyped"}', None)
    await give(amqp, supervisor)  # and a good one after them

    dead = await get_messages(amqp, VERDICTS_DLQ, 7)

    def reason(body_has: bytes) -> str:
        # verdicts are handled concurrently, so they are dead-lettered in any order
        [found] = [m for m in dead if body_has in m.body]
        return str(found.headers["x-orderflow-reason"])

    bad_json = reason(b"{not json")
    assert "not JSON" in bad_json or "invalid message" in bad_json
    broken = reason(b'"maybe"')
    assert "invalid message" in broken and "decision" in broken and "reviewer" in broken
    assert f"unknown review_id {unknown}" in reason(str(unknown).encode())
    wrong_department = reason(b'"department":"finance"')
    assert "does not match" in wrong_department and "department" in wrong_department
    wrong_revision = reason(b'"revision":3')
    assert "does not match" in wrong_revision and "revision" in wrong_revision
    assert "unknown message type 'review.approve'" in reason(b"approve-all")
    assert "unknown message type None" in reason(b"untyped")
    assert "review.verdict, review.annotation, review.reassign" in reason(b"untyped")
    assert all(m.headers["x-orderflow-queue"] == "review-router.verdicts" for m in dead)

    def code(body_has: bytes) -> str:
        [found] = [m for m in dead if body_has in m.body]
        return str(found.headers["x-orderflow-reason-code"])

    assert code(b"{not json") in ("not_json", "invalid_message")
    assert code(b'"maybe"') == "invalid_message"
    assert code(str(unknown).encode()) == "unknown_review"
    assert code(b'"department":"finance"') == code(b'"revision":3') == "review_mismatch"
    assert code(b"approve-all") == code(b"untyped") == "unexpected_type"
    # a sentence, never a Python class name
    texts = [str(m.headers["x-orderflow-reason"]) for m in dead]
    assert not any("VerdictGiven" in t or "Error:" in t for t in texts), texts

    [recorded] = await events.wait("review.verdict_recorded", oid)
    assert recorded["review_id"] == str(supervisor.review_id)
    await take(amqp, "finance")
    [round_] = await rounds(router, oid)
    # the refused ones were not kept as verdicts of the round
    assert [v["outcome"] for v in round_["verdicts"]] == ["accepted"]
    assert round_["current_stage"] == 2


# --- withdrawal ------------------------------------------------------------------------


async def test_withdrawal_cancels_pending_reviews(
    amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    oid = (await submit(amqp, product_order(technical=True))).order_id
    [supervisor] = await take(amqp, "supervisor")
    await give(amqp, supervisor)
    second = {d: (await take(amqp, d))[0] for d in ("production", "finance", "technical")}
    await give(amqp, second["finance"])
    await events.wait("review.verdict_recorded", oid, count=2)

    await request_withdrawal(amqp, oid, reason="客户取消")
    [answer] = await events.wait("order.withdrawn", oid)
    assert answer["revision"] == 1 and answer["reason"] == "客户取消"
    assert answer["requested_by"] == "zhang.wei"
    assert answer["salesperson"]["id"] == "zhang.wei"
    for department in ("production", "technical"):
        [message] = await get_messages(amqp, f"review.{department}", 1)
        assert message.type == "review.cancelled"
        cancelled = ReviewCancelled.model_validate_json(message.body)
        assert cancelled.review_id == second[department].review_id
        assert "客户取消" in cancelled.reason
    [round_] = await rounds(router, oid)
    assert round_["status"] == "withdrawn"
    assert statuses(round_) == {
        "supervisor": "approved",
        "production": "cancelled",
        "finance": "approved",
        "technical": "cancelled",
    }
    assert (await router.get("/api/v1/departments/production/pending")).json()["total"] == 0

    await give(amqp, second["production"])
    review = await eventually(
        lambda: _review_with_verdicts(router, second["production"].review_id, 1)
    )
    assert review["verdicts"][0]["outcome"] == "round_closed"
    await settle(events, oid)
    assert events.of("order.approved", oid) == []
    assert events.of("order.withdrawal_refused", oid) == []
    assert await depths(amqp, ("finance", "supervisor")) == {"finance": 0, "supervisor": 0}


async def request_withdrawal(
    amqp: Any, order_id: uuid.UUID, *, revision: int = 1, reason: str | None = None
) -> OrderWithdrawalRequested:
    asked = OrderWithdrawalRequested(
        order_id=order_id,
        revision=revision,
        reason=reason,
        requested_by="zhang.wei",
        requested_at=datetime.now(UTC),
        salesperson=Salesperson(id="zhang.wei", name="张伟"),
    )
    await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key=asked.message_type,
        body=asked.model_dump_json().encode(),
        message_type=asked.message_type,
        correlation_id=str(order_id),
    )
    return asked


async def test_withdrawal_after_the_approval_is_refused(
    amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    oid = (await submit(amqp, product_order(technical=False))).order_id
    [supervisor] = await take(amqp, "supervisor")
    await give(amqp, supervisor)
    for department in ("production", "finance"):
        [review] = await take(amqp, department)
        await give(amqp, review)
    await events.wait("order.approved", oid)

    await request_withdrawal(amqp, oid, reason="客户取消")
    [refused] = await events.wait("order.withdrawal_refused", oid)
    assert refused["decision"] == "approved" and refused["decided_revision"] == 1
    assert refused["reason"] == "the order was approved before the withdrawal arrived"
    assert refused["withdrawal_reason"] == "客户取消"
    assert refused["salesperson"]["id"] == "zhang.wei"
    [round_] = await rounds(router, oid)
    assert round_["status"] == "approved"
    assert events.of("order.withdrawn", oid) == []


async def test_a_submission_after_its_withdrawal_opens_no_review(
    amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    # the withdrawal overtakes the submission (they travel in separate queues)
    oid = uuid.uuid4()
    await request_withdrawal(amqp, oid)
    [answer] = await events.wait("order.withdrawn", oid)
    assert answer["revision"] == 1
    await submit(amqp, product_order(), order_id=oid)

    async def recorded() -> list[dict[str, Any]] | None:
        response = await router.get("/api/v1/rounds", params={"order_id": str(oid)})
        return response.json()["items"] if response.status_code == 200 else None

    [round_] = await eventually(recorded)
    assert round_["status"] == "withdrawn"
    assert round_["decision"]["reason"] == "the order was withdrawn before its submission arrived"
    assert set(statuses(round_).values()) == {"not_sent"}
    assert await queue_depth(amqp, "review.supervisor") == 0
    assert events.of("review.round_opened", oid) == []


# --- HTTP ------------------------------------------------------------------------------


async def test_http_problems(router: httpx.AsyncClient) -> None:
    missing = await router.get(f"/api/v1/reviews/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["title"] == "Review not found"

    bad_id = await router.get("/api/v1/reviews/not-a-uuid")
    assert bad_id.status_code == 422
    assert bad_id.json()["errors"][0]["pointer"] == "path:/review_id"

    no_order = await router.get("/api/v1/rounds")
    assert no_order.status_code == 422
    assert no_order.json()["errors"][0]["pointer"] == "query:/order_id"

    bad_department = await router.get("/api/v1/departments/Finance!/pending")
    assert bad_department.status_code == 422
    assert bad_department.headers["content-type"] == "application/problem+json"
    assert bad_department.json()["errors"][0]["pointer"] == "path:/department"

    empty = await router.get("/api/v1/rounds", params={"order_id": str(uuid.uuid4())})
    assert empty.status_code == 200 and empty.json()["items"] == []


# --- competing replicas ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def router_processes(
    infra: Infra, log_dir: Path, count: int, **env: str
) -> AsyncIterator[list[ServiceProcess]]:
    """`count` review-routers, each its own OS process, as replicas run in production."""
    started = [
        start_service(
            infra,
            "review-router",
            log_dir,
            REVIEW_ROUTER_VERDICT_ACTING_USERS=user_of(infra),
            REVIEW_ROUTER_OUTBOX_POLL_INTERVAL="0.2",
            REVIEW_ROUTER_LOG_LEVEL="WARNING",
            **env,
        )
        for _ in range(count)
    ]
    try:
        await asyncio.gather(*(wait_ready(s) for s in started))
        yield started
    except BaseException:
        for s in started:
            print(f"----- {s.name} :{s.port} -----\n{s.log_tail(40)}")
        raise
    finally:
        for s in started:
            await asyncio.to_thread(s.terminate)


async def verdicts_handled(router: ServiceProcess, headers: dict[str, str]) -> float:
    """What the process's own metrics say it handled from the verdict queue (`headers`: a
    caller allowed to scrape them)."""
    async with httpx.AsyncClient(base_url=router.url, timeout=5, headers=headers) as client:
        text = (await client.get("/metrics")).text
    pattern = re.compile(
        r'^orderflow_messages_consumed_total\{[^}]*outcome="ok"[^}]*'
        r'queue="review-router.verdicts"[^}]*\} (\S+)$|'
        r'^orderflow_messages_consumed_total\{[^}]*queue="review-router.verdicts"[^}]*'
        r'outcome="ok"[^}]*\} (\S+)$',
        re.M,
    )
    return sum(float(a or b) for a, b in pattern.findall(text))


@pytest.mark.parametrize(
    "count",
    [50, pytest.param(500, marks=[pytest.mark.slow, pytest.mark.timeout(600)])],
)
async def test_two_router_processes_decide_each_round_once(
    infra: Infra, amqp: Any, events: Events, tmp_path: Path, count: int
) -> None:
    async with router_processes(infra, tmp_path, 2, REVIEW_ROUTER_PREFETCH="1") as routers:
        loop = asyncio.get_running_loop()
        began = loop.time()
        gate = asyncio.Semaphore(50)

        async def submit_one() -> OrderSubmitted:
            async with gate:
                return await submit(amqp, product_order(technical=True))

        submitted = await asyncio.gather(*(submit_one() for _ in range(count)))
        ids = {s.order_id for s in submitted}
        supervisor = await take(amqp, "supervisor", count, timeout=60 + count / 5)
        # every fifth order gets a request for changes from finance, the rest are approved
        to_change = {s.order_id for i, s in enumerate(submitted) if i % 5 == 0}

        async def answer(review: ReviewRequested) -> None:
            changes = review.department == "finance" and review.order_id in to_change
            async with gate:
                await give(
                    amqp,
                    review,
                    Decision.REQUEST_CHANGES if changes else Decision.APPROVE,
                    annotations=[Annotation(field="/payment/terms", message="50% 预付")]
                    if changes
                    else [],
                )

        await asyncio.gather(*(answer(r) for r in supervisor))
        second = [
            r
            for d in ("production", "finance", "technical")
            for r in await take(amqp, d, count, timeout=60 + count / 5)
        ]
        assert {r.order_id for r in second} == ids
        # the verdicts of one round are published next to each other and, with one message
        # in hand per process, go to both processes at the same time: without the lock on
        # the round each would see the other's review still pending, and nobody would decide
        position = {s.order_id: i for i, s in enumerate(submitted)}
        second.sort(key=lambda r: position[r.order_id])
        await asyncio.gather(*(answer(r) for r in second))

        async def decided() -> list[dict[str, Any]] | None:
            found = [
                *events.of("order.approved"),
                *events.of("order.changes_requested"),
            ]
            return found if len(found) >= count else None

        await eventually(decided, timeout=60 + count / 5)
        elapsed = loop.time() - began
        # anything decided twice is in `events` by the time a marker behind it has come
        await nothing_more(
            amqp,
            PROBE.name,
            inputs=ROUTER_INPUTS,
            outboxes=["review_router"],
            received=lambda: events.received,
        )
        approved = [e["order_id"] for e in events.of("order.approved")]
        changes = [e["order_id"] for e in events.of("order.changes_requested")]
        assert len(approved) + len(changes) == count
        assert set(approved) | set(changes) == {str(i) for i in ids}
        assert len(changes) == count // 5
        assert len(events.of("review.verdict_recorded")) == 4 * count
        assert all(len(e["feedback"]) == 4 for e in events.of("order.changes_requested"))
        # no review was asked twice
        assert await depths(amqp, topology.DEFAULT_DEPARTMENTS) == dict.fromkeys(
            topology.DEFAULT_DEPARTMENTS, 0
        )
        # both processes did their share of the work
        scraper = bearer(await issue_key_for(infra.database_url, ["metrics:read"]))
        for r in routers:
            assert await verdicts_handled(r, scraper) > 0, r.log_tail()
        print(f"{count} rounds decided by 2 router processes in {elapsed:.1f}s")


# --- the department simulator ----------------------------------------------------------


def load_simulator() -> ModuleType:
    path = Path(__file__).resolve().parents[3] / "bench" / "department_simulator.py"
    spec = importlib.util.spec_from_file_location("department_simulator", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@contextlib.asynccontextmanager
async def simulating(infra: Infra, **options: Any) -> AsyncIterator[Any]:
    simulator_module = load_simulator()
    options.setdefault("departments", topology.DEFAULT_DEPARTMENTS)
    simulator = simulator_module.Simulator(
        simulator_module.Config(amqp_url=infra.amqp_url, **options)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(simulator.run(stop))
    try:
        yield simulator
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest.mark.parametrize(
    ("approve_rate", "decision_event"), [(1.0, "order.approved"), (0.0, "order.changes_requested")]
)
async def test_department_simulator_answers_reviews(
    infra: Infra,
    amqp: Any,
    events: Events,
    router: httpx.AsyncClient,
    approve_rate: float,
    decision_event: str,
) -> None:
    async with simulating(infra, approve_rate=approve_rate, duplicate_rate=0.5, seed=1) as sim:
        orders = [
            await submit(amqp, product_order(technical=True)),
            await submit(amqp, service_order()),
            await submit(amqp, product_order(technical=False)),
        ]
        for submitted in orders:
            await events.wait(decision_event, submitted.order_id, timeout=30)
    for submitted in orders:
        await settle(events, submitted.order_id, quiet=0.3)
        decided = [*events.of("order.approved", submitted.order_id)]
        decided += events.of("order.changes_requested", submitted.order_id)
        assert len(decided) == 1
    assert sim.stats["duplicates_sent"] > 0
    if approve_rate == 0.0:
        # the supervisor asks for changes, so only it answered, with one or two remarks
        for submitted in orders:
            [changes] = events.of("order.changes_requested", submitted.order_id)
            assert [f["department"] for f in changes["feedback"]] == ["supervisor"]
            assert 1 <= len(changes["annotations"]) <= 2
            assert all(a["field"].startswith("/") for a in changes["annotations"])
        assert sim.stats["request_changes"] == 3
    else:
        # every department of every plan: 4 (product, technical) + 3 (service) + 3 (product)
        assert sim.stats["approve"] == 10
