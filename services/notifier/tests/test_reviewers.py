"""Reviewers: a waiting review reaches each reviewing department's contacts; an overdue one
reaches the department and its escalation contacts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from orderflow.messages import ReviewOverdue, ReviewRoundOpened
from orderflow.testing import eventually

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


async def test_a_waiting_review_reaches_each_departments_contacts(
    start_notifier: Any, send_event: Any
) -> None:
    async with start_notifier(CONTACTS) as service:
        order_id = uuid.uuid4()
        await send_event(
            ReviewRoundOpened(
                round_id=uuid.uuid4(),
                order_id=order_id,
                revision=2,
                departments=["finance", "production", "technical"],
                opened_at=datetime.now(UTC),
            )
        )
        ref = str(order_id)[:8]
        [fang] = await inbox_of(service, "wang.fang")
        assert fang["title"] == "Review waiting"
        assert fang["subject"] == f"待评审：订单 {ref}（第 2 版）"
        assert "财务部" in fang["body"] and fang["link"].endswith(f"/orders/{order_id}")
        [qiang] = await inbox_of(service, "li.qiang")
        assert qiang["subject"] == f"Review waiting: order {ref} (revision 2)"
        assert "Production" in qiang["body"]
        # the contact of two reviewing departments hears it once, naming both
        [min_] = await inbox_of(service, "zhao.min")
        assert "财务部" in min_["body"] and "生产部" in min_["body"]
        rows = await service.deliveries(order_id=str(order_id))
        assert sorted(r["recipient"] for r in rows) == ["li.qiang", "wang.fang", "zhao.min"]


async def test_an_overdue_review_reaches_the_escalation_contacts(
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
        [na] = await inbox_of(service, "li.na")
        assert na["title"] == "Review overdue"
        assert na["subject"].startswith("【升级】评审超时")
        # the due time in the person's own time zone (Asia/Shanghai by default)
        assert (due + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M") in na["body"]
        assert "升级联系人" in na["body"]
        [fang] = await inbox_of(service, "wang.fang")
        assert fang["subject"].startswith("评审超时") and "升级联系人" not in fang["body"]
        await inbox_of(service, "zhao.min")
        assert (await service.client.get("/api/v1/inbox/li.qiang")).json()["total"] == 0
