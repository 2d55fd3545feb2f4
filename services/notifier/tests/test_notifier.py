"""The notifier against the real broker and database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from notifier.main import create_app
from notifier.settings import Settings
from orderflow import topology
from orderflow.messages import (
    Annotation,
    ContractDrafted,
    Decision,
    DepartmentFeedback,
    OrderChangesRequested,
    OrderWithdrawalRefused,
    Reviewer,
    Salesperson,
)
from orderflow_testkit.testing import Infra, eventually, publish, running

from .test_notifier_authz import person


def settings(infra: Infra) -> Settings:
    return Settings(
        database_url=infra.database_url,
        amqp_url=infra.url_as("notifier"),
        console_base_url="http://console.example",
    )


def changes_requested() -> OrderChangesRequested:
    annotations = [
        Annotation(field="/payment/terms", message="预付比例至少 50%", severity="blocker"),
        Annotation(field="/lines/0/unit_price", message="低于成本价 90.00", severity="blocker"),
    ]
    return OrderChangesRequested(
        order_id=uuid.uuid4(),
        revision=1,
        salesperson=Salesperson(id="zhang.wei", name="张伟"),
        feedback=[
            DepartmentFeedback(
                department="finance",
                decision=Decision.REQUEST_CHANGES,
                reviewer=Reviewer(id="wang.fang"),
                annotations=annotations,
            )
        ],
        annotations=annotations,
        decided_at=datetime.now(UTC),
    )


async def test_duplicate_event_makes_one_notification(infra: Infra, amqp: Any) -> None:
    app = create_app(settings(infra))
    async with running(app) as client:
        # only the recipient marks their notifications read
        recipient = await person(app.state.runtime.pool, "zhang.wei", ["salesperson"])
        event = changes_requested()
        mid = str(uuid.uuid4())
        for _ in range(2):
            await publish(
                amqp,
                exchange=topology.EVENTS,
                routing_key=event.message_type,
                body=event.model_dump_json().encode(),
                message_id=mid,
                message_type=event.message_type,
            )

        async def inbox() -> Any:
            page = (await client.get("/api/v1/inbox/zhang.wei")).json()
            return page if page["total"] >= 1 else None

        page = await eventually(inbox)
        [note] = page["items"]
        assert page["unread"] == 1
        assert note["link"] == f"http://console.example/orders/{event.order_id}"
        assert [c["field"] for c in note["data"]["checklist"]] == [
            "/payment/terms",
            "/lines/0/unit_price",
        ]
        assert "预付比例至少 50%" in note["body"]
        read = await client.post(f"/api/v1/inbox/zhang.wei/{note['id']}/read", headers=recipient)
        assert read.status_code == 204
        page = (await client.get("/api/v1/inbox/zhang.wei?unread=true")).json()
        assert page["unread"] == 0 and page["items"] == []
        missing = await client.post(
            f"/api/v1/inbox/zhang.wei/{uuid.uuid4()}/read", headers=recipient
        )
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


async def test_contract_drafted_reaches_the_salesperson(infra: Infra, amqp: Any) -> None:
    async with running(create_app(settings(infra))) as client:
        event = ContractDrafted(
            contract_id=uuid.uuid4(),
            contract_number="HT-2026-000001",
            order_id=uuid.uuid4(),
            revision=2,
            salesperson=Salesperson(id="chen.jing"),
            currency="CNY",
            total="50880.00",
            drafted_at=datetime.now(UTC),
        )
        await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key=event.message_type,
            body=event.model_dump_json().encode(),
            message_type=event.message_type,
        )
        page = await eventually(
            lambda: _first(client, "/api/v1/inbox/chen.jing"),
        )
        assert "HT-2026-000001" in page["items"][0]["body"]


async def test_a_refused_withdrawal_is_told_to_the_salesperson(infra: Infra, amqp: Any) -> None:
    async with running(create_app(settings(infra))) as client:
        event = OrderWithdrawalRefused(
            order_id=uuid.uuid4(),
            revision=1,
            decided_revision=1,
            decision="approved",
            reason="the order was approved before the withdrawal arrived",
            withdrawal_reason="客户取消",
            requested_by="zhang.wei",
            requested_at=datetime.now(UTC),
            refused_at=datetime.now(UTC),
            salesperson=Salesperson(id="zhang.wei", name="张伟"),
        )
        await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key=event.message_type,
            body=event.model_dump_json().encode(),
            message_type=event.message_type,
        )
        page = await eventually(lambda: _first(client, "/api/v1/inbox/zhang.wei"))
        [note] = page["items"]
        assert note["event_type"] == "order.withdrawal_refused"
        assert note["title"] == "Withdrawal refused"
        # the contacts file gives no language: Chinese, the company's
        assert "撤回请求未被接受" in note["body"] or "withdrawal" in note["body"]
        assert note["data"]["decision"] == "approved"


async def _first(client: Any, url: str) -> Any:
    page = (await client.get(url)).json()
    return page if page["items"] else None


async def test_mark_all_read_and_the_unread_count(infra: Infra, amqp: Any) -> None:
    app = create_app(settings(infra))
    async with running(app) as client:
        recipient = await person(app.state.runtime.pool, "zhang.wei", ["salesperson"])
        for _ in range(2):
            event = changes_requested()
            await publish(
                amqp,
                exchange=topology.EVENTS,
                routing_key=event.message_type,
                body=event.model_dump_json().encode(),
                message_type=event.message_type,
            )

        async def two_unread() -> Any:
            counts = (await client.get("/api/v1/inbox/zhang.wei/unread")).json()
            return counts if counts["unread"] == 2 else None

        assert await eventually(two_unread) == {"total": 2, "unread": 2}
        marked = await client.post("/api/v1/inbox/zhang.wei/read", headers=recipient)
        assert marked.status_code == 200 and marked.json() == {"marked": 2}
        assert (await client.get("/api/v1/inbox/zhang.wei/unread")).json() == {
            "total": 2,
            "unread": 0,
        }
        again = await client.post("/api/v1/inbox/zhang.wei/read", headers=recipient)
        assert again.json() == {"marked": 0}
        assert (await client.get("/api/v1/inbox/li.na/unread")).json()["total"] == 0
