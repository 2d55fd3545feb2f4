"""Events on `orderflow.events` (topic exchange, routing key = the event type)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field

from .base import DecimalStr, Document, Message
from .order import AttachmentRef, FieldChange, OrderDocument, Salesperson, Totals
from .reviews import Annotation, Decision, Department, Reviewer


class OrderSubmitted(Message):
    """A revision of an order passed the self-check and is ready for review."""

    message_type = "order.submitted"

    order_id: UUID
    revision: Annotated[int, Field(ge=1)]
    order: OrderDocument
    totals: Totals
    channel: str = Field(description="Where it came from: api, console or bus")
    submitted_at: datetime
    attachments: list[AttachmentRef] = Field(
        default_factory=list, description="The files of this revision, as they were submitted"
    )
    previous_revision: int | None = Field(
        default=None, description="The revision submitted before this one, if any"
    )
    changes: list[FieldChange] = Field(
        default_factory=list, description="What changed since `previous_revision`"
    )


class OrderWithdrawn(Message):
    message_type = "order.withdrawn"

    order_id: UUID
    revision: int
    reason: str | None = None
    withdrawn_at: datetime


class ReviewRoundOpened(Message):
    """The router has asked the departments of a revision's first stage to review."""

    message_type = "review.round_opened"

    round_id: UUID
    order_id: UUID
    revision: int
    departments: list[Department] = Field(description="Every department that will review")
    opened_at: datetime
    policy_version: str | None = Field(
        default=None, description="The version of the review policy that planned the round"
    )


class VerdictRecorded(Message):
    """A department's verdict was recorded against a review round."""

    message_type = "review.verdict_recorded"

    review_id: UUID
    order_id: UUID
    revision: int
    department: Department
    decision: Decision
    reviewer: Reviewer
    comment: str | None = None
    annotations: list[Annotation] = Field(default_factory=list)
    recorded_at: datetime
    on_behalf_of: Reviewer | None = Field(
        default=None, description="The reviewer `reviewer` decided for, when delegated"
    )


class DepartmentFeedback(Document):
    department: Department
    decision: Decision
    reviewer: Reviewer
    comment: str | None = None
    annotations: list[Annotation] = Field(default_factory=list)


class OrderApproved(Message):
    """Every department approved this revision."""

    message_type = "order.approved"

    order_id: UUID
    revision: int
    order: OrderDocument
    totals: Totals
    approvals: list[DepartmentFeedback]
    approved_at: datetime
    attachments: list[AttachmentRef] = Field(default_factory=list)


class OrderChangesRequested(Message):
    """At least one department asked for changes: back to the salesperson with all feedback."""

    message_type = "order.changes_requested"

    order_id: UUID
    revision: int
    salesperson: Salesperson
    feedback: list[DepartmentFeedback] = Field(description="Every verdict of the round")
    annotations: list[Annotation] = Field(description="Every annotation, as one checklist")
    decided_at: datetime


class ReviewOverdue(Message):
    message_type = "review.overdue"

    review_id: UUID
    order_id: UUID
    revision: int
    department: Department
    due_at: datetime


class ReviewEscalated(Message):
    """A review is still unanswered long after it fell due: its department's supervisor
    contact is told."""

    message_type = "review.escalated"

    review_id: UUID
    order_id: UUID
    revision: int
    department: Department
    due_at: datetime
    escalate_to: str = Field(description="The department's supervisor contact, from the policy")
    escalated_at: datetime


class ReviewAnnotationRecorded(Message):
    """A department's remarks on fields, posted while reviewing, were recorded."""

    message_type = "review.annotation_recorded"

    review_id: UUID
    order_id: UUID
    revision: int
    department: Department
    reviewer: Reviewer
    on_behalf_of: Reviewer | None = None
    annotations: list[Annotation]
    recorded_at: datetime


class ReviewReassigned(Message):
    """A pending review was handed to another reviewer of its department."""

    message_type = "review.reassigned"

    review_id: UUID
    order_id: UUID
    revision: int
    department: Department
    assigned_by: Reviewer
    assignee: Reviewer
    reason: str | None = None
    reassigned_at: datetime


class ContractDrafted(Message):
    message_type = "contract.drafted"

    contract_id: UUID
    contract_number: str
    order_id: UUID
    revision: int
    salesperson: Salesperson
    customer_name: str | None = None
    currency: str
    total: DecimalStr
    drafted_at: datetime


class ContractSent(Message):
    """The drafted contract went to the customer for signature."""

    message_type = "contract.sent"

    contract_id: UUID
    contract_number: str
    order_id: UUID
    revision: int
    sent_at: datetime
    sent_by: str | None = None


class ContractSigned(Message):
    message_type = "contract.signed"

    contract_id: UUID
    contract_number: str
    order_id: UUID
    revision: int
    signed_at: datetime
    signed_copy_sha256: str | None = Field(
        default=None, description="SHA-256 of the signed copy the customer returned"
    )


class ContractVoided(Message):
    """The contract will not be signed; the reason says why."""

    message_type = "contract.voided"

    contract_id: UUID
    contract_number: str
    order_id: UUID
    revision: int
    voided_at: datetime
    reason: str
    voided_by: str | None = None


class NotificationDelivered(Message):
    message_type = "notification.delivered"

    notification_id: UUID
    order_id: UUID | None = None
    recipient: str
    channel: str
    event_type: str
    delivered_at: datetime


class NotificationFailed(Message):
    message_type = "notification.failed"

    notification_id: UUID
    order_id: UUID | None = None
    recipient: str
    channel: str
    event_type: str
    error: str
    failed_at: datetime
