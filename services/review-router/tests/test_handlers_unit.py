"""The router's handlers against an in-memory store: what each event or department message
stores and sends, without PostgreSQL or RabbitMQ (the same flows over the real servers are
in test_router.py and test_policy_rounds.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import pytest

from orderflow.consumer import PermanentError
from orderflow.messages import (
    Annotation,
    Customer,
    Decision,
    DepartmentFeedback,
    FieldChange,
    Message,
    OrderApproved,
    OrderChangesRequested,
    OrderDocument,
    OrderLine,
    OrderSubmitted,
    OrderWithdrawalRefused,
    OrderWithdrawalRequested,
    OrderWithdrawn,
    Payment,
    ReviewCancelled,
    Reviewer,
    ReviewRequested,
    ReviewRoundOpened,
    ReviewSent,
    Salesperson,
    Totals,
    VerdictGiven,
    VerdictRecorded,
)
from review_router import domain, handlers, policy
from review_router.domain import RequestStatus, RoundStatus, VerdictOutcome
from review_router.store import LoadedRound, Store, Submitted

M = TypeVar("M", bound=Message)
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DEPARTMENTS = ("supervisor", "production", "service_delivery", "finance", "technical")


@dataclass
class _Row:
    """A review_rounds row."""

    round: domain.Round
    plan: domain.ReviewPlan
    submitted: dict[str, Any]
    decided_at: datetime | None = None
    decision: dict[str, Any] | None = None


@dataclass
class _Request:
    """A review_requests row; `verdict_id` names the verdict that answered it."""

    round_id: UUID
    request: domain.Request
    verdict_id: UUID | None = None
    due_at: datetime | None = None


@dataclass
class MemoryStore:
    """The router's `Store` in dicts, shaped as its tables are, so what a handler reads back
    is what it wrote (requests start unsent, a verdict answers through its id, annotations
    count only when accepted). `events` and `sent` are the outbox."""

    rounds: dict[UUID, _Row] = field(default_factory=dict)
    requests: dict[UUID, _Request] = field(default_factory=dict)
    verdicts: dict[UUID, tuple[VerdictGiven, VerdictOutcome]] = field(default_factory=dict)
    notes: list[tuple[UUID, VerdictOutcome, list[Annotation]]] = field(default_factory=list)
    withdrawals: list[tuple[int, domain.WithdrawalOutcome]] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)
    timers: list[tuple[UUID, str, datetime]] = field(default_factory=list)
    events: list[Message] = field(default_factory=list)
    sent: list[tuple[str, Message]] = field(default_factory=list)
    loaded: list[LoadedRound] = field(default_factory=list)

    def _round(self, row: _Row) -> domain.Round:
        position = {d: i for i, d in enumerate(row.plan.departments)}
        mine = [self._request(q) for q in self.requests.values() if q.round_id == row.round.id]
        mine.sort(key=lambda r: (r.stage, position[r.department]))
        return replace(row.round, requests=tuple(mine))

    def _request(self, stored: _Request) -> domain.Request:
        request = stored.request
        notes = [
            a
            for review_id, outcome, annotations in self.notes
            if review_id == request.review_id
            and outcome in (VerdictOutcome.ACCEPTED, VerdictOutcome.AFTER_DECISION)
            for a in annotations
        ]
        feedback = request.feedback
        if stored.verdict_id is not None:
            feedback = domain.feedback_of(self.verdicts[stored.verdict_id][0])
        return replace(request, feedback=feedback, notes=tuple(notes))

    async def lock_order(self, *, order_id: UUID) -> None:
        pass

    async def rounds_of_order(self, *, order_id: UUID) -> list[domain.Round]:
        rows = [r for r in self.rounds.values() if r.round.order_id == order_id]
        return [self._round(r) for r in sorted(rows, key=lambda r: r.round.revision)]

    async def order_of_round(self, *, round_id: UUID) -> OrderDocument:
        return OrderDocument.model_validate(self.rounds[round_id].submitted["order"])

    async def round_of_review(self, *, review_id: UUID) -> UUID | None:
        found = self.requests.get(review_id)
        return found.round_id if found else None

    async def lock_round(self, *, round_id: UUID) -> LoadedRound:
        row = self.rounds[round_id]
        # as stored JSON, like the database's: parsed only when a message needs it
        loaded = LoadedRound(
            round=self._round(row), submitted=Submitted(**row.submitted), plan=row.plan
        )
        self.loaded.append(loaded)
        return loaded

    async def insert_round(
        self,
        *,
        round_: domain.Round,
        plan: domain.ReviewPlan,
        submitted: Submitted,
        opened_at: datetime,
        policy_version: str | None = None,
    ) -> bool:
        if any(
            (r.round.order_id, r.round.revision) == (round_.order_id, round_.revision)
            for r in self.rounds.values()
        ):
            return False
        stored = {
            "order": submitted.order.model_dump(mode="json", exclude_none=True),
            "totals": submitted.totals.model_dump(mode="json"),
            "attachments": [a.model_dump(mode="json") for a in submitted.attachments],
            "previous_revision": submitted.previous_revision,
            "changes": [c.model_dump(mode="json") for c in submitted.changes],
        }
        self.rounds[round_.id] = _Row(replace(round_, requests=()), plan, stored)
        for r in round_.requests:
            unsent = replace(r, status=RequestStatus.NOT_SENT)
            self.requests[r.review_id] = _Request(
                round_.id, unsent if r.status == RequestStatus.PENDING else r
            )
        return True

    async def update_round(
        self,
        *,
        round_: domain.Round,
        decided_at: datetime | None = None,
        decision: dict[str, Any] | None = None,
    ) -> None:
        row = self.rounds[round_.id]
        row.round = replace(row.round, status=round_.status, current_stage=round_.current_stage)
        row.decided_at = decided_at or row.decided_at
        row.decision = decision or row.decision

    def _set(self, review_id: UUID, status: RequestStatus) -> None:
        stored = self.requests[review_id]
        stored.request = replace(stored.request, status=status)

    async def mark_requested(
        self, *, review_ids: Sequence[UUID], at: datetime
    ) -> dict[UUID, datetime | None]:
        due: dict[UUID, datetime | None] = {}
        for review_id in review_ids:
            stored = self.requests[review_id]
            if stored.request.status != RequestStatus.NOT_SENT:
                continue
            self._set(review_id, RequestStatus.PENDING)
            deadline = stored.request.deadline
            stored.due_at = at + timedelta(hours=deadline.due_hours) if deadline else None
            due[review_id] = stored.due_at
            if stored.due_at is not None:
                self.timers.append((review_id, "overdue", stored.due_at))
        return due

    async def mark_cancelled(self, *, review_ids: Sequence[UUID], at: datetime) -> None:
        for review_id in review_ids:
            if self.requests[review_id].request.status == RequestStatus.PENDING:
                self._set(review_id, RequestStatus.CANCELLED)

    async def mark_answered(
        self, *, review_id: UUID, status: RequestStatus, verdict_id: UUID, at: datetime
    ) -> None:
        self._set(review_id, status)
        self.requests[review_id].verdict_id = verdict_id

    async def record_verdict(
        self,
        *,
        verdict: VerdictGiven,
        message_id: str,
        round_id: UUID,
        outcome: VerdictOutcome,
        received_at: datetime,
        user_id: str | None = None,
    ) -> UUID:
        verdict_id = uuid.uuid4()
        self.verdicts[verdict_id] = (verdict, outcome)
        return verdict_id

    async def record_annotations(
        self,
        *,
        review_id: UUID,
        outcome: VerdictOutcome,
        annotations: Sequence[Annotation],
        **_: Any,
    ) -> None:
        self.notes.append((review_id, outcome, list(annotations)))

    async def record_assignment(self, **_: Any) -> None:
        pass

    async def record_withdrawal(
        self, *, revision: int, outcome: domain.WithdrawalOutcome, **_: Any
    ) -> None:
        self.withdrawals.append((revision, outcome))

    async def withdrawn_revision(self, *, order_id: UUID) -> int | None:
        withdrawn = [r for r, o in self.withdrawals if o is domain.WithdrawalOutcome.WITHDRAWN]
        return max(withdrawn, default=None)

    async def customer_known(self, *, key: str | None) -> bool:
        return key in self.customers

    async def remember_customer(self, *, key: str | None, order_id: UUID, at: datetime) -> None:
        if key is not None:
            self.customers.add(key)

    async def schedule(
        self, *, review_id: UUID, kind: str, due_at: datetime, fire_at: datetime
    ) -> None:
        self.timers.append((review_id, kind, fire_at))

    async def publish_event(self, event: Message, *, correlation_id: UUID) -> None:
        assert correlation_id == getattr(event, "order_id", None)
        self.events.append(event)

    async def send_to_department(
        self, message: Message, *, department: str, correlation_id: UUID
    ) -> None:
        assert correlation_id == getattr(message, "order_id", None)
        self.sent.append((department, message))

    # what the tests look at

    def asked(self) -> list[ReviewRequested]:
        return [m for _, m in self.sent if isinstance(m, ReviewRequested)]

    def of_type(self, kind: type[M]) -> list[M]:
        return [e for e in self.events if isinstance(e, kind)]

    def take_asked(self) -> dict[str, ReviewRequested]:
        asked = {r.department: r for r in self.asked()}
        self.sent.clear()
        return asked


def _typed(store: MemoryStore) -> Store:
    return store  # the fake is checked against the protocol here, by mypy


RULES = handlers.Rules(
    policy=policy.load(),
    access=domain.VerdictAccess(required=True, users={f"dept-{d}": d for d in DEPARTMENTS}),
)


def submitted(
    *,
    order_id: UUID | None = None,
    revision: int = 1,
    terms: str = "30% 预付",
    changes: Sequence[FieldChange] = (),
) -> OrderSubmitted:
    order = OrderDocument(
        order_type="product",
        salesperson=Salesperson(id="zhang.wei", name="张伟"),
        customer=Customer(name="华东机械有限公司"),
        lines=[OrderLine(item="阀门", quantity="10", unit="台", unit_price="85.50")],
        payment=Payment(terms=terms, settlement_days=30),
    )
    return OrderSubmitted(
        order_id=order_id or uuid.uuid4(),
        revision=revision,
        order=order,
        totals=Totals.of(order),
        channel="api",
        submitted_at=NOW,
        previous_revision=revision - 1 if revision > 1 else None,
        changes=list(changes),
    )


def verdict(
    request: ReviewRequested, decision: Decision = Decision.APPROVE, **fields: Any
) -> VerdictGiven:
    return VerdictGiven(
        review_id=request.review_id,
        order_id=request.order_id,
        revision=request.revision,
        department=request.department,
        decision=decision,
        reviewer=Reviewer(id=f"{request.department}.lead"),
        **fields,
    )


def sender(department: str, user: str | None = None) -> handlers.Sender:
    return handlers.Sender(
        message_id=str(uuid.uuid4()), user_id=user or f"dept-{department}", routing_key=department
    )


async def give(
    store: MemoryStore, request: ReviewRequested, decision: Decision = Decision.APPROVE, **f: Any
) -> VerdictOutcome:
    return await handlers.on_verdict(
        _typed(store),
        verdict(request, decision, **f),
        sender=sender(request.department),
        now=NOW,
        rules=RULES,
    )


async def open_order(store: MemoryStore) -> tuple[OrderSubmitted, dict[str, ReviewRequested]]:
    """An order submitted and its supervisor's approval: the second stage asked."""
    event = submitted()
    await handlers.on_order_submitted(store, event, now=NOW, rules=RULES)
    [supervisor] = store.take_asked().values()
    assert await give(store, supervisor) == VerdictOutcome.ACCEPTED
    return event, store.take_asked()


async def test_a_submitted_order_asks_the_business_supervisor_first() -> None:
    store = MemoryStore()
    event = submitted()
    await handlers.on_order_submitted(store, event, now=NOW, rules=RULES)

    [opened] = store.of_type(ReviewRoundOpened)
    assert opened.departments == ["supervisor", "production", "finance"]
    assert [d for d, _ in store.sent] == ["supervisor"]
    [asked] = store.asked()
    assert (asked.order_id, asked.revision, asked.stage) == (event.order_id, 1, 1)
    assert asked.order == event.order and asked.totals == event.totals
    assert asked.due_at == NOW + timedelta(hours=8)  # the supervisor's deadline
    [sent] = store.of_type(ReviewSent)
    assert (sent.review_id, sent.department, sent.due_at) == (
        asked.review_id,
        "supervisor",
        asked.due_at,
    )
    assert store.timers == [(asked.review_id, "overdue", asked.due_at)]
    # the same event again opens nothing
    await handlers.on_order_submitted(store, event, now=NOW, rules=RULES)
    assert len(store.rounds) == 1 and len(store.asked()) == 1


async def test_a_verdict_is_recorded_and_completes_its_stage() -> None:
    store = MemoryStore()
    event, second = await open_order(store)

    [recorded] = store.of_type(VerdictRecorded)
    assert (recorded.department, recorded.decision) == ("supervisor", Decision.APPROVE)
    # the second stage, in the policy's order, each with the order as submitted
    assert list(second) == ["production", "finance"]
    assert {r.stage for r in second.values()} == {2}
    assert all(r.order == event.order for r in second.values())

    # one department of two answers: recorded, nothing else asked or decided, and the
    # stored order was not parsed for it
    store.events.clear()
    assert await give(store, second["production"]) == VerdictOutcome.ACCEPTED
    assert [type(e) for e in store.events] == [VerdictRecorded]
    assert store.sent == []
    assert "order" not in vars(store.loaded[-1].submitted)
    [row] = store.rounds.values()
    assert row.round.status == RoundStatus.OPEN


async def test_changes_requested_go_to_the_salesperson_with_every_remark() -> None:
    store = MemoryStore()
    event, second = await open_order(store)
    blocker = Annotation(field="/payment/terms", message="预付比例至少 50%", severity="blocker")
    await give(store, second["finance"], Decision.REQUEST_CHANGES, annotations=[blocker])
    # `collect`: the stage waits for production before deciding
    assert store.of_type(OrderChangesRequested) == []
    await give(store, second["production"])

    [changes] = store.of_type(OrderChangesRequested)
    assert (changes.order_id, changes.revision) == (event.order_id, 1)
    assert changes.salesperson == event.order.salesperson
    assert [(f.department, f.decision) for f in changes.feedback] == [
        ("supervisor", Decision.APPROVE),
        ("production", Decision.APPROVE),
        ("finance", Decision.REQUEST_CHANGES),
    ]
    assert changes.annotations == [blocker]
    [row] = store.rounds.values()
    assert row.round.status == RoundStatus.CHANGES_REQUESTED
    assert row.decision is not None and row.decision["annotations"][0]["field"] == "/payment/terms"
    assert store.of_type(OrderApproved) == []


async def test_every_approval_approves_the_order() -> None:
    store = MemoryStore()
    event, second = await open_order(store)
    await give(store, second["finance"])
    assert store.of_type(OrderApproved) == []
    await give(store, second["production"])

    [approved] = store.of_type(OrderApproved)
    assert (approved.order_id, approved.revision) == (event.order_id, 1)
    assert approved.order == event.order and approved.totals == event.totals
    assert [a.department for a in approved.approvals] == ["supervisor", "production", "finance"]
    assert all(isinstance(a, DepartmentFeedback) for a in approved.approvals)
    [row] = store.rounds.values()
    assert (row.round.status, row.decided_at) == (RoundStatus.APPROVED, NOW)
    assert store.customers == {"name:华东机械有限公司"}  # no longer a new customer
    assert store.sent == []


async def test_a_duplicate_or_late_verdict_changes_nothing() -> None:
    store = MemoryStore()
    event, second = await open_order(store)
    await give(store, second["production"])
    before = (list(store.events), dict(store.requests))
    assert await give(store, second["production"]) == VerdictOutcome.DUPLICATE
    assert store.events == before[0]
    assert len(store.verdicts) == 3  # kept for the record all the same

    # revision 2 supersedes the round: finance's answer to revision 1 is stale
    await handlers.on_order_submitted(
        store,
        submitted(
            order_id=event.order_id,
            revision=2,
            terms="50% 预付",
            changes=[FieldChange(pointer="/payment/terms", old="30% 预付", new="50% 预付")],
        ),
        now=NOW,
        rules=RULES,
    )
    cancelled = [m for _, m in store.sent if isinstance(m, ReviewCancelled)]
    assert [c.department for c in cancelled] == ["finance"]
    store.events.clear()
    assert await give(store, second["finance"]) == VerdictOutcome.STALE
    assert store.events == []
    # the new round's requests carry intake's changes as they came
    [again] = store.asked()
    assert (again.revision, again.department) == (2, "supervisor")
    assert [(c.pointer, c.new) for c in again.changes] == [("/payment/terms", "50% 预付")]


async def test_a_revision_announced_without_changes_is_compared_with_the_stored_one() -> None:
    store = MemoryStore()
    event, _ = await open_order(store)
    store.sent.clear()
    await handlers.on_order_submitted(
        store,
        submitted(order_id=event.order_id, revision=2, terms="50% 预付"),
        now=NOW,
        rules=RULES,
    )
    # nothing came with revision 2: the departments get the router's own comparison
    [again] = store.take_asked().values()
    assert (again.revision, again.previous_revision) == (2, 1)
    assert [(c.pointer, c.old, c.new) for c in again.changes] == [
        ("/payment/terms", "30% 预付", "50% 预付")
    ]


async def test_a_verdict_for_another_department_or_review_is_refused() -> None:
    store = MemoryStore()
    _, second = await open_order(store)
    with pytest.raises(PermanentError):
        await handlers.on_verdict(
            store,
            verdict(second["finance"]),
            sender=sender("finance", user="dept-production"),
            now=NOW,
            rules=RULES,
        )
    unknown = second["finance"].model_copy(update={"review_id": uuid.uuid4()})
    with pytest.raises(PermanentError):
        await give(store, unknown)
    wrong = second["finance"].model_copy(update={"department": "production"})
    with pytest.raises(PermanentError):
        await handlers.on_verdict(
            store, verdict(wrong), sender=sender("production"), now=NOW, rules=RULES
        )


def withdrawal(event: OrderSubmitted) -> OrderWithdrawalRequested:
    return OrderWithdrawalRequested(
        order_id=event.order_id,
        revision=event.revision,
        reason="客户取消",
        requested_by="zhang.wei",
        requested_at=NOW,
    )


async def test_a_withdrawal_closes_the_round_and_stops_the_reviews() -> None:
    store = MemoryStore()
    event, second = await open_order(store)
    await give(store, second["production"])

    outcome = await handlers.on_withdrawal_requested(store, withdrawal(event), now=NOW)
    assert outcome is domain.WithdrawalOutcome.WITHDRAWN
    [withdrawn] = store.of_type(OrderWithdrawn)
    assert (withdrawn.order_id, withdrawn.reason) == (event.order_id, "客户取消")
    assert [(d, type(m)) for d, m in store.sent] == [("finance", ReviewCancelled)]
    [row] = store.rounds.values()
    assert row.round.status == RoundStatus.WITHDRAWN
    # finance answers anyway: kept, changes nothing
    store.events.clear()
    assert await give(store, second["finance"]) == VerdictOutcome.ROUND_CLOSED
    assert store.events == []
    # the submission of the same revision arriving late asks nobody
    store.sent.clear()
    late = submitted(order_id=event.order_id, revision=2)
    await handlers.on_withdrawal_requested(store, withdrawal(late), now=NOW)
    await handlers.on_order_submitted(store, late, now=NOW, rules=RULES)
    assert store.asked() == []


async def test_a_withdrawal_after_the_approval_is_refused() -> None:
    store = MemoryStore()
    event, second = await open_order(store)
    for request in second.values():
        await give(store, request)
    outcome = await handlers.on_withdrawal_requested(store, withdrawal(event), now=NOW)
    assert outcome is domain.WithdrawalOutcome.REFUSED
    [refused] = store.of_type(OrderWithdrawalRefused)
    assert (refused.decided_revision, refused.decision) == (1, "approved")
    assert store.of_type(OrderWithdrawn) == []
