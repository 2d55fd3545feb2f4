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
from intake.adapters.repository import LockedOrder
from intake.domain import Status
from orderflow import topology
from orderflow.messages import (
    Annotation,
    Decision,
    DepartmentFeedback,
    Message,
    NotificationDelivered,
    OrderChangesRequested,
    OrderSubmitted,
    OrderWithdrawalRequested,
    OrderWithdrawn,
    Reviewer,
    ReviewRoundOpened,
    Salesperson,
    SubmitOrder,
    SubmitOrderReply,
    VerdictRecorded,
)

from .conftest import TODAY

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


# The order handlers (an `order.submit` over the bus, a revision, a withdrawal) against an
# in-memory `OrderStore`.


@dataclass
class FakeOrderStore:
    """`OrderStore` in memory: orders as the lock returns them, revisions' documents, and
    what went to the outbox (events with their correlation id, replies)."""

    projection: FakeProjectionStore = field(default_factory=FakeProjectionStore)
    orders: dict[UUID, LockedOrder] = field(default_factory=dict)
    revisions: dict[tuple[UUID, int], dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[Message, UUID]] = field(default_factory=list)
    replies: list[tuple[Message, str, str | None]] = field(default_factory=list)
    publishers: dict[UUID, dict[str, Any]] = field(default_factory=dict)

    async def lock_order(self, order_id: UUID) -> LockedOrder | None:
        return self.orders.get(order_id)

    async def lock_for_creation(self, order_id: UUID, duplicate_key: str | None) -> None:
        pass  # one task: nothing to serialise

    async def lock_duplicate_key(self, key: str) -> None:
        pass

    async def find_duplicates(
        self, key: str, *, exclude: UUID, created_before: datetime | None
    ) -> list[UUID]:
        return [
            o.id
            for o in sorted(self.orders.values(), key=lambda o: o.created_at)
            if o.duplicate_key == key and o.id != exclude and o.status != Status.WITHDRAWN
        ]

    async def insert_draft(self, **row: Any) -> None:
        self.orders[row["order_id"]] = locked(
            row["order_id"],
            Status.DRAFT,
            duplicate_key=row["duplicate_key"],
            possible_duplicate_of=row["possible_duplicate_of"],
            external_ref=row["external_ref"],
        )
        self.revisions[(row["order_id"], 1)] = {"document": row["document"]}

    async def get_revision(self, order_id: UUID, revision: int) -> dict[str, Any] | None:
        return self.revisions.get((order_id, revision))

    async def previous_submitted(self, order_id: UUID, before: int) -> int | None:
        return None

    async def revision_attachments(self, order_id: UUID, revision: int) -> list[dict[str, Any]]:
        return []

    async def mark_submitted_by(
        self,
        order_id: UUID,
        revision: int,
        *,
        submitted_at: datetime,
        message_id: UUID,
        actor: dict[str, Any],
    ) -> None:
        self.orders[order_id] = replace(
            self.orders[order_id], status=Status.SUBMITTED, current_submitted=True
        )
        self.publishers[message_id] = actor

    async def request_withdrawal(
        self, order_id: UUID, *, held_status: str, withdrawal: dict[str, Any], at: datetime
    ) -> None:
        self.orders[order_id] = replace(
            self.orders[order_id],
            status=Status.WITHDRAWAL_REQUESTED,
            held_status=held_status,
            withdrawal=withdrawal,
        )

    async def record_publisher(self, message_id: UUID, actor: dict[str, Any]) -> None:
        self.publishers[message_id] = actor

    async def publish_event(self, event: Message, *, correlation_id: UUID) -> UUID:
        self.events.append((event, correlation_id))
        return uuid.uuid4()

    async def reply(self, message: Message, *, reply_to: str, correlation_id: str | None) -> None:
        self.replies.append((message, reply_to, correlation_id))


def locked(order_id: UUID, status: str, revision: int = 1, **fields: Any) -> LockedOrder:
    at = datetime.now(UTC)
    defaults: dict[str, Any] = {
        "salesperson_id": "zhang.wei",
        "external_ref": None,
        "customer_name": None,
        "channel": handlers.BUS,
        "submitted_revision": None,
        "created_at": at,
        "updated_at": at,
        "change_request": None,
        "approved_at": None,
        "contract_id": None,
        "contract_number": None,
        "contract_signed_at": None,
        "withdrawn_at": None,
        "version": 1,
        "duplicate_key": None,
        "possible_duplicate_of": [],
        "created_by": None,
        "withdrawn_by": None,
        "withdrawal": None,
        "held_status": None,
        "current_submitted": status != Status.DRAFT,
    }
    return LockedOrder(id=order_id, status=status, current_revision=revision, **(defaults | fields))


async def submit(
    orders: FakeOrderStore, body: dict[str, Any], *, reply_to: str | None = "erp.replies"
) -> handlers.Outcome:
    return await handlers.on_submit_command(
        NO_CONNECTION,
        command=SubmitOrder.model_validate(body),
        today=TODAY,
        reply_to=reply_to,
        correlation_id="cmd-1",
        user_id="erp",
        orders=orders,
    )


def submitted_events(orders: FakeOrderStore) -> list[tuple[OrderSubmitted, UUID]]:
    return [(e, c) for e, c in orders.events if isinstance(e, OrderSubmitted)]


async def test_a_submission_is_stored_and_announced_once_under_the_order_id(
    product_order: dict[str, Any],
) -> None:
    orders = FakeOrderStore()
    outcome = await submit(orders, product_order)

    assert outcome.status is Status.SUBMITTED and outcome.revision == 1
    assert orders.orders[outcome.order_id].status == Status.SUBMITTED
    [(event, correlation_id)] = submitted_events(orders)
    assert event.order_id == outcome.order_id and event.revision == 1
    assert correlation_id == outcome.order_id
    assert event.channel == handlers.BUS and event.previous_revision is None
    [(reply, to, reply_correlation)] = orders.replies
    assert isinstance(reply, SubmitOrderReply) and reply.accepted
    assert (reply.order_id, to, reply_correlation) == (outcome.order_id, "erp.replies", "cmd-1")
    assert orders.publishers[next(iter(orders.publishers))]["id"] == "erp"


async def test_a_second_order_with_the_same_reference_is_accepted_and_marked(
    product_order: dict[str, Any],
) -> None:
    orders = FakeOrderStore()
    first = await submit(orders, product_order)
    second = await submit(orders, product_order)

    # as the real code does: not refused, both accepted, the later one marked
    assert first.possible_duplicate_of == []
    assert second.possible_duplicate_of == [first.order_id]
    assert orders.orders[second.order_id].possible_duplicate_of == [first.order_id]
    assert [r.accepted for r, _, _ in orders.replies] == [True, True]  # type: ignore[attr-defined]
    assert [c for _, c in submitted_events(orders)] == [first.order_id, second.order_id]


async def test_a_revision_of_an_order_under_review_waits_for_the_decision(
    product_order: dict[str, Any],
) -> None:
    orders = FakeOrderStore()
    order_id = uuid.uuid4()
    orders.orders[order_id] = locked(order_id, Status.IN_REVIEW)

    with pytest.raises(domain.DecisionPending):
        await submit(orders, {**product_order, "order_id": str(order_id)})
    assert orders.events == [] and orders.replies == []
    assert orders.orders[order_id].current_revision == 1


async def test_a_withdrawal_is_requested_once(product_order: dict[str, Any]) -> None:
    orders = FakeOrderStore()
    order_id = uuid.uuid4()
    orders.orders[order_id] = locked(order_id, Status.IN_REVIEW)
    orders.revisions[(order_id, 1)] = {"document": product_order}
    actor: handlers.Actor = {"id": "zhang.wei", "kind": "user"}

    outcome = await handlers.withdraw_order(
        NO_CONNECTION, order_id=order_id, reason="客户取消", actor=actor, orders=orders
    )
    again = await handlers.withdraw_order(
        NO_CONNECTION, order_id=order_id, reason="客户取消", actor=actor, orders=orders
    )

    assert outcome.status is again.status is Status.WITHDRAWAL_REQUESTED
    assert orders.orders[order_id].held_status == Status.IN_REVIEW
    [(event, correlation_id)] = orders.events
    assert isinstance(event, OrderWithdrawalRequested)
    assert (event.order_id, event.reason, event.requested_by) == (order_id, "客户取消", "zhang.wei")
    assert event.salesperson.id == product_order["salesperson"]["id"]
    assert correlation_id == order_id
    assert list(orders.publishers.values()) == [actor]
