"""Reviewers: a review sent to a department reaches its contacts, an overdue one reminds
them, and an escalated one reaches the department's escalation contacts, once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from structlog.testing import capture_logs

from orderflow.messages import ReviewEscalated, ReviewOverdue, ReviewSent
from orderflow_testkit.testing import eventually

CONTACTS = {
    "people": [
        {"id": "wang.fang", "name": "王芳", "channels": ["inbox"]},
        {"id": "li.qiang", "name": "Li Qiang", "language": "en", "channels": ["inbox"]},
        {"id": "zhao.min", "name": "赵敏", "channels": ["inbox"]},
        {"id": "li.na", "name": "李娜", "channels": ["inbox"]},
    ],
    "departments": {
        "finance": {"contacts": ["wang.fang", "zhao.min"], "escalation": ["li.na"]},
        "production": {"contacts": ["li.qiang", "zhao.min"]},
    },
}


async def inbox_of(service: Any, person: str, count: int = 1) -> list[dict[str, Any]]:
    async def items() -> list[dict[str, Any]] | None:
        page = (await service.client.get(f"/api/v1/inbox/{person}")).json()
        found: list[dict[str, Any]] = page["items"]
        return found if len(found) >= count else None

    result: list[dict[str, Any]] = await eventually(items)
    return result


def review_sent(order_id: uuid.UUID, department: str, **extra: Any) -> ReviewSent:
    return ReviewSent(
        review_id=uuid.uuid4(),
        round_id=uuid.uuid4(),
        order_id=order_id,
        revision=2,
        department=department,
        stage=2,
        sent_at=datetime.now(UTC),
        **extra,
    )


async def test_a_sent_review_reaches_its_departments_contacts(
    start_notifier: Any, send_event: Any
) -> None:
    async with start_notifier(CONTACTS) as service:
        order_id = uuid.uuid4()
        due = datetime(2026, 5, 9, 10, 0, tzinfo=UTC)
        await send_event(review_sent(order_id, "finance", due_at=due))
        await send_event(review_sent(order_id, "production"))
        ref = str(order_id)[:8]
        [fang] = await inbox_of(service, "wang.fang")
        assert fang["title"] == "Review waiting"
        assert fang["subject"] == f"待评审：订单 {ref}（第 2 版，财务部）"
        assert "财务部" in fang["body"] and fang["link"].endswith(f"/orders/{order_id}")
        assert (due + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M") in fang["body"]
        [qiang] = await inbox_of(service, "li.qiang")
        assert qiang["subject"] == f"Review waiting: order {ref} (revision 2, Production)"
        # the contact of two departments hears of each review sent to either
        both = await inbox_of(service, "zhao.min", count=2)
        assert sorted(n["data"]["department"] for n in both) == ["生产部", "财务部"]
        rows = await service.deliveries(order_id=str(order_id))
        assert sorted(r["recipient"] for r in rows) == [
            "li.qiang",
            "wang.fang",
            "zhao.min",
            "zhao.min",
        ]
        # the escalation contact hears of no review that is merely sent
        assert (await service.client.get("/api/v1/inbox/li.na")).json()["total"] == 0


async def test_an_overdue_review_reminds_the_departments_contacts(
    start_notifier: Any, send_event: Any
) -> None:
    async with start_notifier(CONTACTS) as service:
        order_id = uuid.uuid4()
        due = datetime(2026, 5, 9, 10, 0, tzinfo=UTC)
        await send_event(
            ReviewOverdue(
                review_id=uuid.uuid4(),
                order_id=order_id,
                revision=1,
                department="finance",
                due_at=due,
            )
        )
        [fang] = await inbox_of(service, "wang.fang")
        assert fang["title"] == "Review overdue"
        assert fang["subject"].startswith("评审超时")
        # the due time in the person's own time zone (Asia/Shanghai by default)
        assert (due + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M") in fang["body"]
        assert "升级联系人" not in fang["body"]
        await inbox_of(service, "zhao.min")
        rows = await service.deliveries(order_id=str(order_id))
        # the escalation contact is told when the review is escalated, not before
        assert sorted(r["recipient"] for r in rows) == ["wang.fang", "zhao.min"]


async def test_an_escalated_review_reaches_the_escalation_contact_once(
    start_notifier: Any, send_event: Any
) -> None:
    event = ReviewEscalated(
        review_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        revision=1,
        department="finance",
        due_at=datetime(2026, 5, 9, 10, 0, tzinfo=UTC),
        escalate_to="the head of finance",  # not a person's id: the contacts file decides
        escalated_at=datetime.now(UTC),
    )
    with capture_logs() as logs:
        async with start_notifier(CONTACTS) as service:
            message_id = str(uuid.uuid4())
            await send_event(event, message_id=message_id)
            [na] = await inbox_of(service, "li.na")
            assert na["title"] == "Review escalated"
            assert na["subject"].startswith("【升级】评审超时") and "升级联系人" in na["body"]
            # delivered again (a redelivery, a replay): the same message id adds nothing
            await send_event(event, message_id=message_id)

            def ignored() -> bool:
                return any(
                    e["event"] == "duplicate message ignored"
                    and e.get("consumer") == "notifier.review-escalated"
                    for e in logs
                )

            await eventually(ignored)
            page = (await service.client.get("/api/v1/inbox/li.na")).json()
            assert page["total"] == 1
            rows = await service.deliveries(order_id=str(event.order_id))
            assert [r["recipient"] for r in rows] == ["li.na"]
