"""Review requests to department queues, and the verdicts departments send back."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import Field

from .. import limits
from .base import Chars, Document, Message, RevisionNo, Timestamp
from .order import AttachmentRef, FieldChange, OrderDocument, Totals

Department = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,40}$")]


class Decision(StrEnum):
    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"


class Severity(StrEnum):
    BLOCKER = "blocker"
    MAJOR = "major"
    MINOR = "minor"
    INFO = "info"


class Annotation(Document):
    """A department's remark on one field of the order."""

    field: Annotated[str, Chars(limits.POINTER), Field(pattern=r"^(/[^/]*)*$")] = Field(
        description="JSON pointer into the order document, e.g. /lines/0/unit_price"
    )
    message: Annotated[str, Chars(limits.REMARK, min_length=1, lines=True)]
    severity: Severity = Severity.MAJOR


class Reviewer(Document):
    id: Annotated[str, Chars(limits.ID, min_length=1)]
    name: Annotated[str, Chars(limits.PERSON_NAME)] | None = None


class ReviewRequested(Message):
    """Sent to `orderflow.reviews` with the department as routing key: please review."""

    message_type = "review.requested"

    review_id: UUID
    order_id: UUID
    revision: RevisionNo
    department: Department
    stage: Annotated[int, Field(ge=0, le=limits.MAX_STAGE)]
    order: OrderDocument
    totals: Totals
    requested_at: Timestamp
    due_at: Timestamp | None = None
    attachments: list[AttachmentRef] = Field(default_factory=list)
    previous_revision: RevisionNo | None = Field(
        default=None, description="The revision this department saw before, if any"
    )
    changes: list[FieldChange] = Field(
        default_factory=list, description="What changed since `previous_revision`"
    )


class ReviewCancelled(Message):
    """Sent to a department queue when a pending review is no longer needed."""

    message_type = "review.cancelled"

    review_id: UUID
    order_id: UUID
    revision: RevisionNo
    department: Department
    reason: Annotated[str, Chars(limits.TEXT, lines=True)]
    cancelled_at: Timestamp


class VerdictGiven(Message):
    """A department's verdict, published to `orderflow.verdicts` with the department as key."""

    message_type = "review.verdict"

    review_id: UUID
    order_id: UUID
    revision: RevisionNo
    department: Department
    decision: Decision
    reviewer: Reviewer
    comment: Annotated[str, Chars(limits.TEXT, lines=True)] | None = None
    annotations: list[Annotation] = Field(default_factory=list, max_length=limits.MAX_ANNOTATIONS)
    on_behalf_of: Reviewer | None = Field(
        default=None,
        description="The reviewer the review was assigned to, when `reviewer` decided for them",
    )


class ReviewAnnotated(Message):
    """Remarks on fields of the order while reviewing, before the verdict; published to
    `orderflow.verdicts` with the department as key, like a verdict."""

    message_type = "review.annotation"

    review_id: UUID
    order_id: UUID
    revision: RevisionNo
    department: Department
    reviewer: Reviewer
    on_behalf_of: Reviewer | None = None
    annotations: list[Annotation] = Field(min_length=1, max_length=limits.MAX_ANNOTATIONS)


class ReassignReview(Message):
    """Hand a pending review to another reviewer of the department; published to
    `orderflow.verdicts` with the department as key, like a verdict."""

    message_type = "review.reassign"

    review_id: UUID
    order_id: UUID
    revision: RevisionNo
    department: Department
    assigned_by: Reviewer = Field(description="Who hands the review over")
    assignee: Reviewer = Field(description="Who reviews from now on")
    reason: Annotated[str, Chars(limits.REMARK, lines=True)] | None = None
