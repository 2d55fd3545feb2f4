"""What reviewers are told, with the review-router deciding on the real broker and database:
a review is announced when it is sent, never when it is only planned; an overdue one is a
reminder to the department, and its escalation reaches the escalation contacts once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from orderflow import topology
from orderflow.messages import (
    Customer,
    Delivery,
    OrderDocument,
    OrderLine,
    OrderSubmitted,
    Payment,
    ReviewRequested,
    Salesperson,
    Totals,
)
from orderflow_testkit.testing import (
    Infra,
    answer_review,
    eventually,
    publish,
    queue_depth,
    running,
    take_review,
)
from review_router.main import create_app as create_router
from review_router.settings import Settings as RouterSettings

CONTACTS = {
    "people": [
        {"id": "zhang.wei", "name": "张伟", "email": "zhang.wei@example.com"},
        {"id": "zhou.jie", "name": "周杰", "email": "zhou.jie@example.com"},
        {
            "id": "wang.fang",
            "name": "Wang Fang",
            "email": "wang.fang@example.com",
            "language": "en",
        },
        {"id": "li.qiang", "name": "李强", "email": "li.qiang@example.com"},
        {"id": "chen.gang", "name": "陈刚", "channels": ["inbox"]},
        {"id": "li.na", "name": "Li Na", "email": "li.na@example.com", "language": "en"},
    ],
    "departments": {
        "supervisor": {"contacts": ["zhou.jie"], "escalation": ["li.na"]},
        "production": {"contacts": ["li.qiang"], "escalation": ["li.na"]},
        "finance": {"contacts": ["wang.fang"], "escalation": ["li.na"]},
        "technical": {"contacts": ["chen.gang"]},
    },
}
LATER_STAGE = {"production": "li.qiang", "finance": "wang.fang", "technical": "chen.gang"}


def router_settings(infra: Infra, amqp: Any, **extra: Any) -> RouterSettings:
    return RouterSettings(
        database_url=infra.database_url,
        amqp_url=infra.url_as("review-router"),
        outbox_poll_interval=0.2,
        # the tests answer for every department, as the console does for its reviewers
        verdict_acting_users=[amqp.url.user],
        **extra,
    )


def product_order() -> OrderDocument:
    return OrderDocument(
        order_type="product",
        salesperson=Salesperson(id="zhang.wei", name="张伟"),
        customer=Customer(name="上海精密机械有限公司"),
        lines=[OrderLine(item="不锈钢法兰", quantity="200", unit="件", unit_price="85.50")],
        tax_rate="0.13",
        delivery=Delivery(date="2027-03-15", method="物流配送"),
        payment=Payment(method="bank_transfer", terms="30% 预付", settlement_days=30),
        technical_requirements="法兰密封面按客户图纸加工，粗糙度 Ra1.6",
    )


async def submit(amqp: Any) -> uuid.UUID:
    order = product_order()
    event = OrderSubmitted(
        order_id=uuid.uuid4(),
        revision=1,
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
    return event.order_id


async def answer(amqp: Any, review: ReviewRequested, decision: str = "approve") -> None:
    notes = [{"field": "/customer/company", "message": "补充企业信用信息", "severity": "blocker"}]
    await answer_review(
        amqp,
        review,
        decision,
        notes if decision == "request_changes" else None,
        user_id=amqp.url.user,
    )


async def inbox(service: Any, person: str) -> list[dict[str, Any]]:
    page = (await service.client.get(f"/api/v1/inbox/{person}")).json()
    items: list[dict[str, Any]] = page["items"]
    return items


async def inbox_with(service: Any, person: str, title: str, count: int = 1) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]] | None:
        items = [n for n in await inbox(service, person) if n["title"] == title]
        return items if len(items) >= count else None

    result: list[dict[str, Any]] = await eventually(found, timeout=20)
    return result


async def all_delivered(service: Any, order_id: uuid.UUID, count: int) -> list[dict[str, Any]]:
    """The order's `count` deliveries, once every one of them is delivered."""

    async def done() -> list[dict[str, Any]] | None:
        rows = await service.deliveries(order_id=str(order_id), limit=200)
        finished = len(rows) >= count and all(r["status"] == "delivered" for r in rows)
        return rows if finished else None

    result: list[dict[str, Any]] = await eventually(done, timeout=20)
    return result


async def test_later_stages_hear_nothing_when_the_supervisor_asks_for_changes(
    infra: Infra, amqp: Any, start_notifier: Any, smtp: Any
) -> None:
    async with (
        running(create_router(router_settings(infra, amqp))),
        start_notifier(CONTACTS, smtp=smtp) as notifier,
    ):
        order_id = await submit(amqp)
        supervisor = await take_review(amqp, "supervisor")
        [waiting] = await inbox_with(notifier, "zhou.jie", "Review waiting")
        assert waiting["data"]["review_id"] == str(supervisor.review_id)
        assert waiting["subject"] == f"待评审：订单 {str(order_id)[:8]}（第 1 版，主管）"
        await answer(amqp, supervisor, "request_changes")

        # the positive signal: the salesperson was told, after everything the round sent
        await inbox_with(notifier, "zhang.wei", "Changes requested")
        assert await queue_depth(amqp, topology.NOTIFIER_REVIEW_SENT.name) == 0
        rows = await all_delivered(notifier, order_id, 4)
        assert sorted((r["recipient"], r["channel"], r["event_type"]) for r in rows) == [
            ("zhang.wei", "email", "order.changes_requested"),
            ("zhang.wei", "inbox", "order.changes_requested"),
            ("zhou.jie", "email", "review.sent"),
            ("zhou.jie", "inbox", "review.sent"),
        ]
        # production, finance and technical were planned, never asked, and never told
        for person in LATER_STAGE.values():
            assert await inbox(notifier, person) == [], person
        assert sorted(m.rcpt_tos[0] for m in smtp.received) == [
            "zhang.wei@example.com",
            "zhou.jie@example.com",
        ]


async def test_each_later_stage_department_is_told_when_its_review_is_sent(
    infra: Infra, amqp: Any, start_notifier: Any, smtp: Any
) -> None:
    async with (
        running(create_router(router_settings(infra, amqp))),
        start_notifier(CONTACTS, smtp=smtp) as notifier,
    ):
        order_id = await submit(amqp)
        await answer(amqp, await take_review(amqp, "supervisor"))
        reviews = {d: await take_review(amqp, d) for d in LATER_STAGE}
        for department, person in LATER_STAGE.items():
            [note] = await inbox_with(notifier, person, "Review waiting")
            assert note["data"]["review_id"] == str(reviews[department].review_id)
            assert note["data"]["stage"] == reviews[department].stage == 2
            assert note["data"]["due_at"] is not None
        [fang] = await inbox(notifier, "wang.fang")
        assert fang["subject"] == f"Review waiting: order {str(order_id)[:8]} (revision 1, Finance)"
        # one email per contact with an address, each in its reader's language
        await all_delivered(notifier, order_id, 2 + 2 + 2 + 1)
        languages = {m.rcpt_tos[0]: m.message["Content-Language"] for m in smtp.received}
        assert languages == {
            "zhou.jie@example.com": "zh-CN",
            "li.qiang@example.com": "zh-CN",
            "wang.fang@example.com": "en",
        }


def fast_deadlines(directory: Path, *, due_seconds: float, escalate_seconds: float) -> Path:
    """A policy whose supervisor review falls due, and is escalated, within seconds."""
    path = directory / "policy-deadlines.toml"
    path.write_text(
        'version = "deadlines"\n'
        "[departments.supervisor]\n"
        f"due_hours = {due_seconds / 3600}\n"
        f"escalate_after_hours = {escalate_seconds / 3600}\n"
        'escalate_to = "sales.director"\n'
        "[[stages]]\n"
        'name = "business"\n'
        "[[stages.reviews]]\n"
        'department = "supervisor"\n',
        encoding="utf-8",
    )
    return path


async def test_an_escalation_reaches_the_escalation_contact_exactly_once(
    infra: Infra, amqp: Any, start_notifier: Any, smtp: Any, tmp_path: Path
) -> None:
    policy = fast_deadlines(tmp_path, due_seconds=1.5, escalate_seconds=1.0)
    settings = router_settings(infra, amqp, policy_file=policy, timer_poll_interval=0.2)
    async with (
        running(create_router(settings)) as router,
        start_notifier(CONTACTS, smtp=smtp) as notifier,
    ):
        order_id = await submit(amqp)
        review = await take_review(amqp, "supervisor")
        # the department is reminded; the escalation contact is told only of the escalation
        [overdue] = await inbox_with(notifier, "zhou.jie", "Review overdue")
        assert overdue["subject"].startswith("评审超时")
        [escalated] = await inbox_with(notifier, "li.na", "Review escalated")
        assert escalated["subject"] == (
            f"[Escalation] Review overdue: order {str(order_id)[:8]} (Supervisor)"
        )
        assert "escalation contact" in escalated["body"]
        # the contact the policy names is told as well, in the in-app inbox
        [director] = await inbox_with(notifier, "sales.director", "Review escalated")
        assert director["data"]["review_id"] == str(review.review_id)

        # both timers fired, once each, and everything they caused was delivered
        async def fired() -> dict[str, Any] | None:
            answer: httpx.Response = await router.get(f"/api/v1/reviews/{review.review_id}")
            body: dict[str, Any] = answer.json()
            outcomes = [t["outcome"] for t in body["timers"]]
            return body if outcomes == ["sent", "sent"] else None

        body = await eventually(fired)
        assert [h["kind"] for h in body["history"]] == ["requested", "overdue", "escalated"]
        rows = await all_delivered(notifier, order_id, 2 + 2 + 2 + 1)
        for queue in (topology.NOTIFIER_REVIEW_OVERDUE, topology.NOTIFIER_REVIEW_ESCALATED):
            assert await queue_depth(amqp, queue.name) == 0
        assert [n["title"] for n in await inbox(notifier, "li.na")] == ["Review escalated"]
        assert sorted((r["recipient"], r["channel"], r["event_type"]) for r in rows) == [
            ("li.na", "email", "review.escalated"),
            ("li.na", "inbox", "review.escalated"),
            ("sales.director", "inbox", "review.escalated"),
            ("zhou.jie", "email", "review.overdue"),
            ("zhou.jie", "email", "review.sent"),
            ("zhou.jie", "inbox", "review.overdue"),
            ("zhou.jie", "inbox", "review.sent"),
        ]
        [mail] = [m for m in smtp.received if m.rcpt_tos == ["li.na@example.com"]]
        assert mail.message["Content-Language"] == "en"
