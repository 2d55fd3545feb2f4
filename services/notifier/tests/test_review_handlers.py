"""Who hears of a review, without broker or database: the handlers with the real contacts
directory and templates, and the in-memory store in place of PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from notifier import domain, handlers
from notifier.adapters.templates import Templates
from notifier.contacts import ContactsFile, Directory
from orderflow.messages import ReviewEscalated, ReviewOverdue, ReviewSent

from .fakes import FakeStore

CONTACTS = {
    "people": [
        {"id": "wang.fang", "name": "王芳", "email": "wang.fang@example.com"},
        {"id": "li.qiang", "name": "Li Qiang", "language": "en", "channels": ["inbox"]},
        {"id": "li.na", "name": "李娜", "email": "li.na@example.com"},
        {"id": "finance.head", "name": "Head of Finance", "language": "en"},
    ],
    "departments": {
        "finance": {"contacts": ["wang.fang"], "escalation": ["li.na"]},
        "production": {"contacts": ["li.qiang"], "escalation": ["li.na", "li.qiang"]},
    },
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
        console="http://console.example",
        email_enabled=True,
        store=store,
    )


DUE = datetime(2026, 5, 9, 10, 0, tzinfo=UTC)


def sent(department: str = "finance", *, due_at: datetime | None = DUE) -> ReviewSent:
    return ReviewSent(
        review_id=uuid.uuid4(),
        round_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        revision=2,
        department=department,
        stage=2,
        sent_at=DUE - timedelta(hours=24),
        due_at=due_at,
    )


def escalated(department: str = "finance", escalate_to: str = "finance.head") -> ReviewEscalated:
    return ReviewEscalated(
        review_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        revision=1,
        department=department,
        due_at=DUE,
        escalate_to=escalate_to,
        escalated_at=DUE + timedelta(hours=24),
    )


async def test_a_sent_review_reaches_the_departments_contacts_only(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    event = sent()
    await handlers.on_review_sent(None, event, event_id="m1", deps=deps)  # type: ignore[arg-type]
    # wang.fang on her default channels; neither the escalation contact nor another department
    assert store.who() == [("wang.fang", "email"), ("wang.fang", "inbox")]
    [inbox] = [n for n in store.notices("wang.fang") if n.channel == domain.INBOX]
    assert inbox.title == "Review waiting" and inbox.event_type == "review.sent"
    ref = str(event.order_id)[:8]
    assert inbox.subject == f"待评审：订单 {ref}（第 2 版，财务部）"
    # the due time in her time zone (Asia/Shanghai by default)
    assert "2026-05-09 18:00" in inbox.body
    assert inbox.data["department"] == "财务部" and inbox.data["stage"] == 2
    assert store.delivered == ["wang.fang"]  # the inbox is delivered as it is written


async def test_a_review_without_a_deadline_and_in_english(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    event = sent("production", due_at=None)
    await handlers.on_review_sent(None, event, event_id="m1", deps=deps)  # type: ignore[arg-type]
    [notice] = store.notices()
    assert notice.recipient == "li.qiang" and notice.language == "en"
    assert notice.subject.endswith("(revision 2, Production)")
    assert "due" not in notice.body.lower()


async def test_a_department_without_contacts_hears_nothing(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    await handlers.on_review_sent(None, sent("technical"), event_id="m1", deps=deps)  # type: ignore[arg-type]
    assert store.who() == []


async def test_overdue_reminds_the_contacts_and_leaves_escalation_to_later(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    event = ReviewOverdue(
        review_id=uuid.uuid4(), order_id=uuid.uuid4(), revision=1, department="finance", due_at=DUE
    )
    await handlers.on_review_overdue(None, event, event_id="m1", deps=deps)  # type: ignore[arg-type]
    assert {r for r, _ in store.who()} == {"wang.fang"}
    [inbox] = [n for n in store.notices() if n.channel == domain.INBOX]
    assert inbox.title == "Review overdue" and not inbox.subject.startswith("【升级】")


async def test_an_escalation_reaches_the_escalation_contacts_and_the_policys(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    event = escalated()
    await handlers.on_review_escalated(None, event, event_id="m1", deps=deps)  # type: ignore[arg-type]
    assert store.who() == [
        ("finance.head", "inbox"),  # named by the policy; no address in the file
        ("li.na", "email"),
        ("li.na", "inbox"),
    ]
    assert "wang.fang" not in {r for r, _ in store.who()}
    [na] = [n for n in store.notices("li.na") if n.channel == domain.INBOX]
    assert na.title == "Review escalated"
    assert na.subject == f"【升级】评审超时：订单 {str(event.order_id)[:8]}（财务部）"
    assert "升级联系人" in na.body and "2026-05-09 18:00" in na.body
    [head] = store.notices("finance.head")
    assert head.language == "en" and head.subject.startswith("[Escalation] Review overdue")


async def test_an_escalation_is_told_once_however_often_it_arrives(
    store: FakeStore, deps: handlers.Notifying
) -> None:
    event = escalated("production", escalate_to="li.qiang")
    for _ in range(3):
        await handlers.on_review_escalated(None, event, event_id="m1", deps=deps)  # type: ignore[arg-type]
    # li.qiang is both an escalation contact and the policy's contact: one notice
    assert store.who() == [("li.na", "email"), ("li.na", "inbox"), ("li.qiang", "inbox")]
    assert sorted(store.delivered) == ["li.na", "li.qiang"]


def test_who_an_escalation_names() -> None:
    assert domain.escalation_recipients(["li.na"], "finance.head") == ["li.na", "finance.head"]
    assert domain.escalation_recipients(["li.na", "li.na"], "li.na") == ["li.na"]
    # free text names nobody the notifier can reach
    assert domain.escalation_recipients(["li.na"], "the head of finance") == ["li.na"]
    assert domain.escalation_recipients([], "Head <head@example.com>") == []


def test_every_review_event_has_its_templates() -> None:
    assert {"review.sent", "review.overdue", "review.escalated"} <= set(domain.TITLES)
    assert "review.round_opened" not in domain.TITLES
