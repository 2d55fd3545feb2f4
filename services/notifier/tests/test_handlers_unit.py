"""The event handlers without broker or database: the real contacts directory and templates,
the in-memory store in place of PostgreSQL and its outbox. Each test runs in milliseconds."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notifier import domain, handlers
from notifier.adapters.templates import Templates
from notifier.contacts import ContactsFile, Directory
from orderflow.messages import (
    Annotation,
    ContractDrafted,
    Decision,
    DepartmentFeedback,
    NotificationDelivered,
    OrderApproved,
    OrderChangesRequested,
    OrderDocument,
    OrderWithdrawalRefused,
    Reviewer,
    ReviewEscalated,
    ReviewSent,
    Salesperson,
    Totals,
)

from .fakes import FakeStore

CONSOLE = "http://console.example"
EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"

CONTACTS: dict[str, Any] = {
    "people": [
        {
            "id": "zhang.wei",
            "name": "张伟",
            "email": "zhang.wei@example.com",
            "channels": ["inbox", "email", "sales-group"],
        },
        {"id": "chen.jing", "name": "Chen Jing", "language": "en", "channels": ["inbox"]},
        {"id": "wang.fang", "name": "王芳", "email": "wang.fang@example.com"},
        {"id": "li.na", "name": "李娜", "channels": ["inbox"]},
    ],
    "webhooks": {"sales-group": {"kind": "wecom", "url": "https://robots.test/send?key=k"}},
    "departments": {"finance": {"contacts": ["wang.fang"], "escalation": ["li.na"]}},
}


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def deps(store: FakeStore) -> handlers.Notifying:
    templates = Templates()
    templates.check()
    return handlers.Notifying(
        directory=Directory(ContactsFile.model_validate(CONTACTS)),
        templates=templates,
        console=CONSOLE,
        email_enabled=True,
        store=store,
    )


def changes_requested(salesperson: Salesperson) -> OrderChangesRequested:
    blocker = Annotation(field="/payment/terms", message="预付比例至少 50%", severity="blocker")
    return OrderChangesRequested(
        order_id=uuid.uuid4(),
        revision=3,
        salesperson=salesperson,
        feedback=[
            DepartmentFeedback(
                department="finance",
                decision=Decision.REQUEST_CHANGES,
                reviewer=Reviewer(id="wang.fang"),
                annotations=[blocker],
            )
        ],
        annotations=[blocker],
        decided_at=datetime.now(UTC),
    )


def approved(salesperson_id: str = "zhang.wei") -> OrderApproved:
    document = json.loads((EXAMPLES / "order-product.json").read_text("utf-8"))
    document["salesperson"] = {"id": salesperson_id}
    order = OrderDocument.model_validate(document)
    return OrderApproved(
        order_id=uuid.uuid4(),
        revision=1,
        order=order,
        totals=Totals.of(order),
        approvals=[
            DepartmentFeedback(
                department="finance", decision=Decision.APPROVE, reviewer=Reviewer(id="x")
            )
        ],
        approved_at=datetime.now(UTC),
    )


def delivered_events(store: FakeStore) -> list[tuple[NotificationDelivered, uuid.UUID | None]]:
    return [(e, c) for e, c in store.published if isinstance(e, NotificationDelivered)]


async def test_changes_requested_reach_every_channel_the_salesperson_chose(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    # the event carries another address: only the contacts file's is ever used
    event = changes_requested(Salesperson(id="zhang.wei", email="someone@elsewhere.example"))
    await handlers.on_changes_requested(None, event, event_id="m1", deps=deps)  # type: ignore[arg-type]

    assert store.who() == [
        ("zhang.wei", "email"),
        ("zhang.wei", "inbox"),
        ("zhang.wei", "webhook:sales-group"),
    ]
    by_channel = {d.channel: d for d in store.notices()}
    email, inbox, robot = (by_channel[c] for c in ("email", "inbox", "webhook:sales-group"))
    assert email.address == "zhang.wei@example.com" and email.html and not email.markdown
    assert robot.address == "sales-group" and robot.markdown and not robot.html
    assert inbox.address is None and inbox.html is None and inbox.markdown is None
    ref = str(event.order_id)[:8]
    for notice in (email, inbox, robot):
        assert notice.subject == f"订单 {ref} 需要修改（第 3 版）"
        assert notice.title == "Changes requested" and notice.language == "zh"
        assert notice.link == f"{CONSOLE}/orders/{event.order_id}"
        assert "预付比例至少 50%" in notice.body
    assert inbox.data["checklist"][0]["field_label"] == "付款 › 条款"
    # only the inbox is delivered as it is written; the others wait for the delivery worker
    assert [d.status for d in (email, inbox, robot)] == ["pending", "delivered", "pending"]
    [(told, correlation)] = delivered_events(store)
    assert told.notification_id == inbox.id and told.channel == "inbox"
    assert correlation == event.order_id


async def test_an_approval_is_told_to_the_salesperson_of_the_order(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    event = approved("chen.jing")
    await handlers.on_approved(None, event, event_id="m1", deps=deps)  # type: ignore[arg-type]
    [notice] = store.notices()
    assert (notice.recipient, notice.channel, notice.language) == ("chen.jing", "inbox", "en")
    assert notice.subject == f"Order {str(event.order_id)[:8]} approved (revision 1)"
    assert notice.title == "Order approved"
    assert notice.data["customer_name"] == event.order.customer.name
    assert notice.data["total"] == str(event.totals.total)
    assert notice.data["departments"] == ["Finance"]


async def test_a_drafted_contract_is_told_to_the_salesperson(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    event = ContractDrafted(
        contract_id=uuid.uuid4(),
        contract_number="HT-2026-000042",
        order_id=uuid.uuid4(),
        revision=2,
        salesperson=Salesperson(id="chen.jing"),
        customer_name="ACME",
        currency="CNY",
        total="50880.00",
        drafted_at=datetime.now(UTC),
    )
    await handlers.on_contract_drafted(None, event, event_id="m1", deps=deps)  # type: ignore[arg-type]
    [notice] = store.notices("chen.jing")
    assert notice.title == "Contract ready" and "HT-2026-000042" in notice.subject
    assert notice.data["contract_number"] == "HT-2026-000042"
    assert notice.data["total"] == "50880.00"


async def test_review_notices_reach_the_department_and_its_escalation_contacts(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    due = datetime(2026, 5, 9, 10, 0, tzinfo=UTC)
    sent = ReviewSent(
        review_id=uuid.uuid4(),
        round_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        revision=1,
        department="finance",
        stage=1,
        sent_at=due - timedelta(days=1),
        due_at=due,
    )
    await handlers.on_review_sent(None, sent, event_id="m1", deps=deps)  # type: ignore[arg-type]
    assert store.who() == [("wang.fang", "email"), ("wang.fang", "inbox")]

    escalated = ReviewEscalated(
        review_id=sent.review_id,
        order_id=sent.order_id,
        revision=1,
        department="finance",
        due_at=due,
        escalate_to="the head of finance",  # free text: nobody the notifier can reach
        escalated_at=due + timedelta(hours=4),
    )
    await handlers.on_review_escalated(None, escalated, event_id="m2", deps=deps)  # type: ignore[arg-type]
    [escalation] = store.notices("li.na")
    assert escalation.event_type == "review.escalated" and escalation.channel == "inbox"
    assert {d.recipient for d in store.notices()} == {"wang.fang", "li.na"}


async def test_a_redelivered_event_adds_nothing(store: FakeStore, deps: handlers.Notifying) -> None:
    event = changes_requested(Salesperson(id="zhang.wei"))
    for _ in range(3):
        await handlers.on_changes_requested(None, event, event_id="m1", deps=deps)  # type: ignore[arg-type]
    assert len(store.notices()) == 3  # one per channel, however often it arrived
    assert len(delivered_events(store)) == 1
    # another message is another event: it is told again
    await handlers.on_changes_requested(None, event, event_id="m2", deps=deps)  # type: ignore[arg-type]
    assert len(store.notices()) == 6 and len(delivered_events(store)) == 2


async def test_a_salesperson_without_contacts_gets_the_inbox_only(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    # not in the contacts file: the defaults (inbox and email), but no address to mail to,
    # and the order's address is never used
    salesperson = Salesperson(id="zhao.lei", name="赵磊", email="zhao.lei@example.com")
    event = changes_requested(salesperson)
    await handlers.on_changes_requested(None, event, event_id="m1", deps=deps)  # type: ignore[arg-type]
    assert store.who() == [("zhao.lei", "inbox")]
    [notice] = store.notices()
    assert notice.recipient_name == "赵磊" and notice.language == "zh"  # the defaults
    assert "zhao.lei" in deps.hinted  # the operator is told once to add them


def refused(salesperson: Salesperson | None) -> OrderWithdrawalRefused:
    return OrderWithdrawalRefused(
        order_id=uuid.uuid4(),
        revision=1,
        decided_revision=1,
        decision="approved",
        reason="approved first",
        requested_at=datetime.now(UTC),
        refused_at=datetime.now(UTC),
        salesperson=salesperson,
    )


async def test_a_refused_withdrawal_is_told_to_the_salesperson_named(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    await handlers.on_withdrawal_refused(None, refused(None), event_id="m1", deps=deps)  # type: ignore[arg-type]
    assert store.who() == [] and store.published == []
    event = refused(Salesperson(id="chen.jing"))
    await handlers.on_withdrawal_refused(None, event, event_id="m2", deps=deps)  # type: ignore[arg-type]
    [notice] = store.notices()
    assert (notice.recipient, notice.title) == ("chen.jing", "Withdrawal refused")
    assert "approved by every department" in notice.body


def test_every_event_the_handlers_tell_has_a_title() -> None:
    assert set(domain.TITLES) >= {
        "order.changes_requested",
        "order.approved",
        "contract.drafted",
        "order.withdrawal_refused",
    }
