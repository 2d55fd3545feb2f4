"""Events on `orderflow.events` (topic exchange, routing key = the event type)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import Field

from .. import limits
from .base import Chars, Document, Id, Message, Money, RevisionNo, ShortText, Text, Timestamp
from .order import AttachmentRef, FieldChange, OrderDocument, Salesperson, Totals
from .reviews import Annotation, Decision, Department, Reviewer


class OrderSubmitted(Message):
    """A revision of an order passed the self-check and is ready for review."""

    message_type = "order.submitted"

    order_id: UUID
    revision: RevisionNo
    order: OrderDocument
    totals: Totals
    channel: Id = Field(description="Where it came from: api, console or bus")
    submitted_at: Timestamp
    attachments: list[AttachmentRef] = Field(
        default_factory=list, description="The files of this revision, as they were submitted"
    )
    previous_revision: RevisionNo | None = Field(
        default=None, description="The revision submitted before this one, if any"
    )
    changes: list[FieldChange] = Field(
        default_factory=list, description="What changed since `previous_revision`"
    )


class OrderWithdrawalRequested(Message):
    """Someone asked to withdraw the order. Intake only asks: the review-router, which
    decides the round under the same lock, answers with `order.withdrawn` (the withdrawal
    came first) or `order.withdrawal_refused` (the round was approved first)."""

    message_type = "order.withdrawal_requested"

    order_id: UUID
    revision: RevisionNo = Field(description="The order's current revision at intake")
    reason: Text | None = None
    requested_by: Id = Field(description="Who asked: a username, `key:<name>` or a bus user")
    requested_at: Timestamp
    salesperson: Salesperson | None = Field(
        default=None, description="The order's salesperson, who is told of the answer"
    )


class OrderWithdrawn(Message):
    """The withdrawal won: the order's review is closed and no approval will follow.
    Published by the review-router, the one that decides withdrawals."""

    message_type = "order.withdrawn"

    order_id: UUID
    revision: RevisionNo
    reason: Text | None = None
    withdrawn_at: Timestamp
    requested_by: Id | None = Field(default=None, description="Who asked for the withdrawal")
    salesperson: Salesperson | None = None


class OrderWithdrawalRefused(Message):
    """The round was approved before the withdrawal reached the review-router: the approval
    stands (the order goes on to its contract) and the withdrawal is refused."""

    message_type = "order.withdrawal_refused"

    order_id: UUID
    revision: RevisionNo = Field(description="The revision the withdrawal named")
    decided_revision: RevisionNo = Field(description="The revision whose round was decided")
    decision: Annotated[str, Chars(limits.ID)] = Field(
        description="What the round decided before the withdrawal arrived: approved"
    )
    reason: Text = Field(description="Why the withdrawal was refused, for the salesperson")
    withdrawal_reason: Text | None = Field(default=None, description="The reason given")
    requested_by: Id | None = None
    requested_at: Timestamp
    refused_at: Timestamp
    salesperson: Salesperson | None = None


class ReviewRoundOpened(Message):
    """The router opened a review round for a revision and asked its first stage. Which
    departments are actually asked, and when, is `review.sent`: `departments` is the plan,
    and a later stage is not asked when an earlier one requests changes."""

    message_type = "review.round_opened"

    round_id: UUID
    order_id: UUID
    revision: RevisionNo
    departments: list[Department] = Field(
        description="Every department the policy planned for the round, in every stage"
    )
    opened_at: Timestamp
    policy_version: Annotated[str, Chars(limits.ID)] | None = Field(
        default=None, description="The version of the review policy that planned the round"
    )


class ReviewSent(Message):
    """A review request was sent to a department's queue (`review.<department>`): at the
    round's opening for its first stage, and when a later stage opens. A department the
    policy planned but that is never asked (the round was decided before its stage) has no
    `review.sent`."""

    message_type = "review.sent"

    review_id: UUID
    round_id: UUID
    order_id: UUID
    revision: RevisionNo
    department: Department
    stage: Annotated[int, Field(ge=0, le=limits.MAX_STAGE)] = Field(
        description="The stage of the round the review belongs to (the first is 1)"
    )
    sent_at: Timestamp
    due_at: Timestamp | None = Field(
        default=None, description="When the review falls due, if the policy sets a deadline"
    )


class VerdictRecorded(Message):
    """A department's verdict was recorded against a review round."""

    message_type = "review.verdict_recorded"

    review_id: UUID
    order_id: UUID
    revision: RevisionNo
    department: Department
    decision: Decision
    reviewer: Reviewer
    comment: Text | None = None
    annotations: list[Annotation] = Field(default_factory=list, max_length=limits.MAX_ANNOTATIONS)
    recorded_at: Timestamp
    on_behalf_of: Reviewer | None = Field(
        default=None, description="The reviewer `reviewer` decided for, when delegated"
    )


class DepartmentFeedback(Document):
    department: Department
    decision: Decision
    reviewer: Reviewer
    comment: Text | None = None
    annotations: list[Annotation] = Field(default_factory=list, max_length=limits.MAX_ANNOTATIONS)


class OrderApproved(Message):
    """Every department approved this revision."""

    message_type = "order.approved"

    order_id: UUID
    revision: RevisionNo
    order: OrderDocument
    totals: Totals
    approvals: list[DepartmentFeedback]
    approved_at: Timestamp
    attachments: list[AttachmentRef] = Field(default_factory=list)


class OrderChangesRequested(Message):
    """At least one department asked for changes: back to the salesperson with all feedback."""

    message_type = "order.changes_requested"

    order_id: UUID
    revision: RevisionNo
    salesperson: Salesperson
    feedback: list[DepartmentFeedback] = Field(description="Every verdict of the round")
    annotations: list[Annotation] = Field(description="Every annotation, as one checklist")
    decided_at: Timestamp


class ReviewOverdue(Message):
    message_type = "review.overdue"

    review_id: UUID
    order_id: UUID
    revision: RevisionNo
    department: Department
    due_at: Timestamp


class ReviewEscalated(Message):
    """A review is still unanswered long after it fell due: its department's supervisor
    contact is told."""

    message_type = "review.escalated"

    review_id: UUID
    order_id: UUID
    revision: RevisionNo
    department: Department
    due_at: Timestamp
    escalate_to: ShortText = Field(
        description="The department's supervisor contact, from the policy"
    )
    escalated_at: Timestamp


class ReviewAnnotationRecorded(Message):
    """A department's remarks on fields, posted while reviewing, were recorded."""

    message_type = "review.annotation_recorded"

    review_id: UUID
    order_id: UUID
    revision: RevisionNo
    department: Department
    reviewer: Reviewer
    on_behalf_of: Reviewer | None = None
    annotations: list[Annotation]
    recorded_at: Timestamp


class ReviewReassigned(Message):
    """A pending review was handed to another reviewer of its department."""

    message_type = "review.reassigned"

    review_id: UUID
    order_id: UUID
    revision: RevisionNo
    department: Department
    assigned_by: Reviewer
    assignee: Reviewer
    reason: Annotated[str, Chars(limits.REMARK, lines=True)] | None = None
    reassigned_at: Timestamp


class ContractDrafted(Message):
    message_type = "contract.drafted"

    contract_id: UUID
    contract_number: Id
    order_id: UUID
    revision: RevisionNo
    salesperson: Salesperson
    customer_name: ShortText | None = None
    currency: Annotated[str, Chars(3)]
    total: Money
    drafted_at: Timestamp


class ContractSent(Message):
    """The drafted contract went to the customer for signature."""

    message_type = "contract.sent"

    contract_id: UUID
    contract_number: Id
    order_id: UUID
    revision: RevisionNo
    sent_at: Timestamp
    sent_by: Annotated[str, Chars(limits.ID)] | None = None


class ContractSigned(Message):
    message_type = "contract.signed"

    contract_id: UUID
    contract_number: Id
    order_id: UUID
    revision: RevisionNo
    signed_at: Timestamp
    signed_copy_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="SHA-256 of the signed copy the customer returned"
    )


class ContractVoided(Message):
    """The contract will not be signed; the reason says why."""

    message_type = "contract.voided"

    contract_id: UUID
    contract_number: Id
    order_id: UUID
    revision: RevisionNo
    voided_at: Timestamp
    reason: Text
    voided_by: Annotated[str, Chars(limits.ID)] | None = None


class NotificationDelivered(Message):
    message_type = "notification.delivered"

    notification_id: UUID
    order_id: UUID | None = None
    recipient: ShortText
    channel: Id
    event_type: Id
    delivered_at: Timestamp


class NotificationFailed(Message):
    message_type = "notification.failed"

    notification_id: UUID
    order_id: UUID | None = None
    recipient: ShortText
    channel: Id
    event_type: Id
    error: Text
    failed_at: Timestamp
