"""The projection's handlers against an in-memory store: no PostgreSQL, no RabbitMQ.

What PostgreSQL adds (the locks under concurrency, the SQL) stays proven by the real-server
tests (`test_intake_races.py`, `test_intake_bus.py`); these pin the handlers' decisions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from intake import domain, handlers
from intake.adapters.projection_store import KeptEvent, ProjectedOrder
from orderflow import topology
from orderflow.messages import (
    Annotation,
    Decision,
    DepartmentFeedback,
    Message,
    NotificationDelivered,
    OrderChangesRequested,
    OrderWithdrawn,
    Reviewer,
    ReviewRoundOpened,
    Salesperson,
    VerdictRecorded,
)

NO_CONNECTION: Any = None  # the fake store is given, so no connection is ever used


@dataclass
class FakeProjectionStore:
    """`ProjectionStore` in memory, with the same once-only timeline as the table's
    unique message id."""

    orders: dict[UUID, ProjectedOrder] = field(default_factory=dict)
    details: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    answers: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    timeline: list[tuple[UUID, KeptEvent, str]] = field(default_factory=list)
    pending: list[tuple[UUID, KeptEvent]] = field(default_factory=list)

    async def lock(self, order_id: UUID) -> ProjectedOrder | None:
        return self.orders.get(order_id)

    async def relock(self, order_id: UUID) -> ProjectedOrder | None:
        return self.orders.get(order_id)

    async def set_status(self, order_id: UUID, status: str, **details: Any) -> None:
        held = details.pop("held_status", None)
        self.orders[order_id] = replace(self.orders[order_id], status=status, held_status=held)
        self.details.setdefault(order_id, {}).update(details)

    async def answer_withdrawal(self, order_id: UUID, status: str, answer: dict[str, Any]) -> None:
        self.answers[order_id] = answer
        self.orders[order_id] = replace(self.orders[order_id], status=status, held_status=None)

    async def append_event(self, order_id: UUID, event: KeptEvent, outcome: str) -> None:
        if all(e.message_id != event.message_id for _, e, _ in self.timeline):
            self.timeline.append((order_id, event, outcome))

    async def keep_pending(self, order_id: UUID, event: KeptEvent) -> None:
        self.pending.append((order_id, event))

    async def discard_pending(self, *, older_than: datetime, keep_at_most: int) -> int:
        return 0

    async def count_pending(self) -> int:
        return len(self.pending)

    async def take_pending(self, order_id: UUID, up_to_revision: int) -> list[KeptEvent]:
        def due(e: KeptEvent) -> bool:
            return e.revision is None or e.revision <= up_to_revision

        taken = [e for o, e in self.pending if o == order_id and due(e)]
        self.pending = [(o, e) for o, e in self.pending if not (o == order_id and due(e))]
        return sorted(taken, key=lambda e: e.occurred_at)

    def order(self, status: str, revision: int = 1, held: str | None = None) -> UUID:
        order_id = uuid.uuid4()
        self.orders[order_id] = ProjectedOrder(order_id, status, revision, held)
        return order_id

    def types(self, order_id: UUID) -> list[tuple[str, int | None]]:
        return [(e.type, e.revision) for o, e, _ in self.timeline if o == order_id]


async def project(store: FakeProjectionStore, event: Message, message_id: str = "") -> str | None:
    return await handlers.on_event(
        NO_CONNECTION,
        event=event,
        message_id=message_id or str(uuid.uuid4()),
        sent_at=None,
        store=store,
    )


def now() -> datetime:
    return datetime.now(UTC)


def round_opened(order_id: UUID, revision: int = 1) -> ReviewRoundOpened:
    return ReviewRoundOpened(
        round_id=uuid.uuid4(),
        order_id=order_id,
        revision=revision,
        departments=["supervisor", "finance"],
        opened_at=now(),
    )


def changes_requested(order_id: UUID, revision: int = 1) -> OrderChangesRequested:
    annotation = Annotation(field="/payment/terms", message="预付比例至少 50%", severity="blocker")
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
                annotations=[annotation],
            )
        ],
        annotations=[annotation],
        decided_at=now(),
    )


def verdict(order_id: UUID, revision: int = 1) -> VerdictRecorded:
    return VerdictRecorded(
        review_id=uuid.uuid4(),
        order_id=order_id,
        revision=revision,
        department="supervisor",
        decision=Decision.APPROVE,
        reviewer=Reviewer(id="li.ming", name="李明"),
        recorded_at=now(),
    )


async def test_a_round_moves_the_order_and_goes_on_its_timeline() -> None:
    store = FakeProjectionStore()
    order_id = store.order("submitted")
    assert await project(store, round_opened(order_id)) == "submitted -> in_review"
    assert await project(store, verdict(order_id)) == "recorded"
    assert await project(store, changes_requested(order_id)) == "in_review -> changes_requested"
    assert store.orders[order_id].status == "changes_requested"
    request = store.details[order_id]["change_request"]
    assert request["revision"] == 1 and request["feedback"][0]["department"] == "finance"
    assert store.types(order_id) == [
        ("review.round_opened", 1),
        ("review.verdict_recorded", 1),
        ("order.changes_requested", 1),
    ]


async def test_a_status_never_goes_back_and_an_old_revision_is_history() -> None:
    store = FakeProjectionStore()
    order_id = store.order("changes_requested", revision=2)
    outcome = await project(store, round_opened(order_id, 1))
    assert outcome == "ignored: revision 1 is older than the current revision 2"
    assert store.orders[order_id].status == "changes_requested"
    # recorded all the same: the timeline is every event
    assert store.types(order_id) == [("review.round_opened", 1)]


async def test_the_same_message_twice_is_on_the_timeline_once() -> None:
    store = FakeProjectionStore()
    order_id = store.order("submitted")
    event = round_opened(order_id)
    await project(store, event, "m-1")
    await project(store, event, "m-1")
    assert store.types(order_id) == [("review.round_opened", 1)]


async def test_a_withdrawal_answered_by_the_router() -> None:
    store = FakeProjectionStore()
    order_id = store.order("withdrawal_requested", held="in_review")
    withdrawn = OrderWithdrawn(order_id=order_id, revision=1, reason="出差", withdrawn_at=now())
    assert await project(store, withdrawn) == "withdrawal_requested -> withdrawn"
    assert store.orders[order_id].status == "withdrawn"
    assert store.answers[order_id]["outcome"] == "withdrawn"
    assert store.details[order_id]["withdrawn_at"] == withdrawn.withdrawn_at


async def test_the_review_is_held_while_a_withdrawal_waits() -> None:
    store = FakeProjectionStore()
    order_id = store.order("withdrawal_requested")
    outcome = await project(store, changes_requested(order_id))
    assert outcome.startswith("held while the withdrawal waits")  # type: ignore[union-attr]
    # the caller was told withdrawal_requested: not contradicted before the answer
    assert store.orders[order_id] == ProjectedOrder(
        order_id, "withdrawal_requested", 1, "changes_requested"
    )


async def test_events_before_their_order_or_revision_are_kept_then_applied() -> None:
    store = FakeProjectionStore()
    stranger = uuid.uuid4()
    assert await project(store, verdict(stranger)) == "pending"
    order_id = store.order("submitted")
    assert await project(store, round_opened(order_id, 2)) == "pending"
    assert await project(store, round_opened(order_id, 1)) == "submitted -> in_review"
    assert len(store.pending) == 2
    assert handlers.PENDING_EVENTS._value.get() == 2  # type: ignore[attr-defined]

    # the order's revision 2 appears: the kept event of revision 2 is applied, not the other
    store.orders[order_id] = replace(store.orders[order_id], current_revision=2)
    assert await handlers.apply_pending_events(NO_CONNECTION, order_id=order_id, store=store) == 1
    assert store.types(order_id) == [("review.round_opened", 1), ("review.round_opened", 2)]
    assert [o for o, _ in store.pending] == [stranger]


async def test_an_event_without_an_order_is_ignored() -> None:
    store = FakeProjectionStore()
    event = NotificationDelivered(
        notification_id=uuid.uuid4(),
        order_id=None,
        recipient="zhang.wei",
        channel="inbox",
        event_type="order.changes_requested",
        delivered_at=now(),
    )
    assert await project(store, event) is None
    assert store.timeline == [] and store.pending == []


def test_the_projection_takes_what_moves_a_status_or_goes_on_the_timeline() -> None:
    assert set(domain.EVENT_STATUS) <= domain.PROJECTED_EVENTS
    assert domain.DESCRIBED_EVENTS <= domain.PROJECTED_EVENTS
    # bound to every event: the binding keeps every event of the exchange routable
    assert topology.INTAKE_PROJECTION.routing_keys == ("#",)


def test_the_timeline_keeps_no_order_document() -> None:
    payload = {
        "order_id": "o",
        "revision": 2,
        "order": {"salesperson": {"id": "zhang.wei"}, "lines": [{"item": "法兰"}]},
        "changes": [{"pointer": "/lines/0/item", "old": "螺栓", "new": "法兰"}],
        "channel": "api",
    }
    kept = domain.timeline_payload("order.submitted", payload)
    assert kept["order"] == {"salesperson": {"id": "zhang.wei"}}
    assert kept["changes"] == payload["changes"]
    described = domain.describe("order.submitted", kept, salesperson=None)
    assert described == domain.describe("order.submitted", payload, salesperson=None)
    # other events are kept whole
    assert domain.timeline_payload("review.sent", {"a": 1}) == {"a": 1}


@pytest.mark.parametrize("event_type", sorted(domain.PROJECTED_EVENTS))
def test_every_projected_event_is_a_known_message(event_type: str) -> None:
    from orderflow.messages import EVENTS

    assert event_type in EVENTS


@pytest.mark.parametrize(
    ("exc", "status", "type_"),
    [
        (handlers.OrderNotFound(uuid.uuid4()), 404, "urn:orderflow:problem:order-not-found"),
        (
            handlers.RevisionNotFound(uuid.uuid4(), 3),
            404,
            "urn:orderflow:problem:revision-not-found",
        ),
        (
            handlers.AttachmentNotFound(uuid.uuid4(), uuid.uuid4()),
            404,
            "urn:orderflow:problem:attachment-not-found",
        ),
        (
            handlers.IdempotencyKeyReused("k", uuid.uuid4()),
            409,
            "urn:orderflow:problem:idempotency-key-reused",
        ),
        (domain.NotEditable(domain.Status.IN_REVIEW), 409, "urn:orderflow:problem:order-state"),
        (domain.SelfCheckFailed([]), 422, "urn:orderflow:problem:self-check-failed"),
    ],
)
def test_each_refusal_has_its_problem(exc: Exception, status: int, type_: str) -> None:
    """What the exception handlers installed on the app answer, one place for all routes."""
    from intake.entrypoints import problems

    problem = problems.problem_for(exc)
    assert (problem.status, problem.type) == (status, type_)
    assert isinstance(exc, problems.ANSWERED)
