"""What the handlers need of storage, as a protocol: the rounds and what departments sent in
PostgreSQL (`adapters.repository.PostgresStore`, in the caller's transaction, with the
outbox in the same one), an in-memory store in the handler unit tests.

Also the typed records the store returns to the handlers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol
from uuid import UUID

from orderflow.messages import (
    Annotation,
    AttachmentRef,
    FieldChange,
    Message,
    OrderDocument,
    Reviewer,
    Salesperson,
    Totals,
    VerdictGiven,
)

from . import domain

Json = Mapping[str, Any]


class Submitted:
    """The revision a round reviews, as it was submitted: sent on with each review request
    and with the approval. Read back from the database it stays the stored JSON, and each
    part is validated the first time a message needs it, so a verdict that only records
    itself (the usual one, in a stage of several departments) parses no order at all."""

    def __init__(
        self,
        *,
        order: OrderDocument | Json,
        totals: Totals | Json,
        attachments: Sequence[AttachmentRef | Json] = (),
        previous_revision: int | None = None,
        changes: Sequence[FieldChange | Json] = (),
    ) -> None:
        self._order = order
        self._totals = totals
        self._attachments = attachments
        self._changes = changes
        self.previous_revision = previous_revision

    @cached_property
    def order(self) -> OrderDocument:
        order = self._order
        return order if isinstance(order, OrderDocument) else OrderDocument.model_validate(order)

    @cached_property
    def salesperson(self) -> Salesperson:
        """Whom a change request goes to, without validating the rest of the order."""
        order = self._order
        if isinstance(order, OrderDocument):
            return order.salesperson
        return Salesperson.model_validate(order["salesperson"])

    @cached_property
    def totals(self) -> Totals:
        totals = self._totals
        return totals if isinstance(totals, Totals) else Totals.model_validate(totals)

    @cached_property
    def attachments(self) -> list[AttachmentRef]:
        return [
            a if isinstance(a, AttachmentRef) else AttachmentRef.model_validate(a)
            for a in self._attachments
        ]

    @cached_property
    def changes(self) -> list[FieldChange]:
        return [
            c if isinstance(c, FieldChange) else FieldChange.model_validate(c)
            for c in self._changes
        ]


@dataclass(frozen=True)
class LoadedRound:
    """A round with what was submitted for it."""

    round: domain.Round
    submitted: Submitted
    plan: domain.ReviewPlan


@dataclass(frozen=True)
class Timer:
    id: int
    kind: str
    review_id: UUID
    due_at: datetime
    attempts: int


class Store(Protocol):
    """Reads and writes of one transaction; every write commits or rolls back with it."""

    async def lock_order(self, *, order_id: UUID) -> None: ...

    async def rounds_of_order(self, *, order_id: UUID) -> list[domain.Round]: ...

    async def order_of_round(self, *, round_id: UUID) -> OrderDocument: ...

    async def round_of_review(self, *, review_id: UUID) -> UUID | None: ...

    async def lock_round(self, *, round_id: UUID) -> LoadedRound: ...

    async def insert_round(
        self,
        *,
        round_: domain.Round,
        plan: domain.ReviewPlan,
        submitted: Submitted,
        opened_at: datetime,
        policy_version: str | None = None,
    ) -> bool: ...

    async def update_round(
        self,
        *,
        round_: domain.Round,
        decided_at: datetime | None = None,
        decision: dict[str, Any] | None = None,
    ) -> None: ...

    async def mark_requested(
        self, *, review_ids: Sequence[UUID], at: datetime
    ) -> dict[UUID, datetime | None]: ...

    async def mark_cancelled(self, *, review_ids: Sequence[UUID], at: datetime) -> None: ...

    async def mark_answered(
        self, *, review_id: UUID, status: domain.RequestStatus, verdict_id: UUID, at: datetime
    ) -> None: ...

    async def record_verdict(
        self,
        *,
        verdict: VerdictGiven,
        message_id: str,
        round_id: UUID,
        outcome: domain.VerdictOutcome,
        received_at: datetime,
        user_id: str | None = None,
    ) -> UUID: ...

    async def record_annotations(
        self,
        *,
        message_id: str,
        review_id: UUID,
        round_id: UUID,
        department: str,
        reviewer: Reviewer,
        on_behalf_of: Reviewer | None,
        annotations: Sequence[Annotation],
        outcome: domain.VerdictOutcome,
        user_id: str | None,
        received_at: datetime,
    ) -> None: ...

    async def record_assignment(
        self,
        *,
        message_id: str,
        review_id: UUID,
        round_id: UUID,
        department: str,
        assigned_by: Reviewer,
        assignee: Reviewer,
        reason: str | None,
        outcome: domain.VerdictOutcome,
        user_id: str | None,
        received_at: datetime,
    ) -> None: ...

    async def record_withdrawal(
        self,
        *,
        order_id: UUID,
        revision: int,
        outcome: domain.WithdrawalOutcome,
        reason: str | None,
        requested_by: str | None,
        requested_at: datetime,
        decided_at: datetime,
        round_id: UUID | None,
        refusal: str | None,
    ) -> None: ...

    async def withdrawn_revision(self, *, order_id: UUID) -> int | None: ...

    async def customer_known(self, *, key: str | None) -> bool: ...

    async def remember_customer(self, *, key: str | None, order_id: UUID, at: datetime) -> None: ...

    async def schedule(
        self, *, review_id: UUID, kind: str, due_at: datetime, fire_at: datetime
    ) -> None: ...

    async def publish_event(self, event: Message, *, correlation_id: UUID) -> None:
        """An event for `orderflow.events`, sent when the transaction commits."""
        ...

    async def send_to_department(
        self, message: Message, *, department: str, correlation_id: UUID
    ) -> None:
        """A review request or cancellation for one department's queue."""
        ...
