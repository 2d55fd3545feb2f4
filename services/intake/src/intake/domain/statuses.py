"""The order's statuses, and what may be edited and submitted in each."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orderflow.messages import (
    Problem,
)


class Status(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    IN_REVIEW = "in_review"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    CONTRACT_DRAFTED = "contract_drafted"
    CONTRACT_SIGNED = "contract_signed"
    # asked of the review-router, which decides it against the round's decision
    WITHDRAWAL_REQUESTED = "withdrawal_requested"
    WITHDRAWN = "withdrawn"


#: The salesperson may change the order only before the first submission, or when the
#: departments sent it back; everything else belongs to the review or the contract.
EDITABLE: frozenset[Status] = frozenset({Status.DRAFT, Status.CHANGES_REQUESTED})

#: Before the round decides: the order is still open to the review.
BEFORE_DECISION: frozenset[Status] = frozenset({Status.DRAFT, Status.SUBMITTED, Status.IN_REVIEW})


class RuleViolation(Exception):
    """An operation the order's state does not allow."""


class NotEditable(RuleViolation):
    def __init__(self, status: Status, action: str = "edited") -> None:
        self.status = status
        super().__init__(
            f"the order is {status.value}; it can be {action} only while it is "
            f"{' or '.join(s.value for s in sorted(EDITABLE))}"
        )


class AlreadySubmitted(RuleViolation):
    def __init__(self, revision: int) -> None:
        self.revision = revision
        super().__init__(
            f"revision {revision} is already submitted and has not changed since; "
            "edit the order to make a new revision before submitting again"
        )


class SelfCheckFailed(RuleViolation):
    """The document is refused: every problem, each with its field. `invalid` counts those
    that are type errors (a field that is not what it must be), listed first."""

    def __init__(self, problems: list[Problem], *, invalid: int = 0) -> None:
        self.problems = problems
        self.invalid = invalid
        typed = f" ({invalid} a field of the wrong type)" if invalid == 1 else ""
        typed = typed or (f" ({invalid} fields of the wrong type)" if invalid else "")
        super().__init__(f"self-check failed: {len(problems)} problem(s){typed}")


def check_editable(status: Status) -> None:
    if status not in EDITABLE:
        raise NotEditable(status)


@dataclass(frozen=True)
class EditTarget:
    """Where an edit goes: the open revision is replaced, a submitted one is never touched."""

    revision: int
    replace: bool


def edit_target(*, status: Status, current_revision: int, submitted: bool) -> EditTarget:
    check_editable(status)
    if submitted:
        # the departments reviewed that revision; their verdicts must keep pointing at it
        return EditTarget(revision=current_revision + 1, replace=False)
    return EditTarget(revision=current_revision, replace=True)


def check_submittable(*, status: Status, current_revision: int, submitted: bool) -> None:
    if status not in EDITABLE:
        raise NotEditable(status, "submitted")
    if submitted:
        raise AlreadySubmitted(current_revision)
