"""Review rounds: who reviews an order, in which order, and when a round is decided.

Pure rules, no I/O. A round belongs to one revision of one order; its plan is a list of
stages, each a list of departments that review in parallel. A stage's review requests go
out only when every department of the stage before it approved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from uuid import UUID

from orderflow.messages import (
    Annotation,
    Decision,
    DepartmentFeedback,
    OrderDocument,
    OrderType,
    Problem,
    VerdictGiven,
)

SUPERVISOR = "supervisor"
PRODUCTION = "production"
SERVICE_DELIVERY = "service_delivery"
FINANCE = "finance"
TECHNICAL = "technical"


class RoundStatus(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    CHANGES_REQUESTED = "changes_requested"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    CHANGES_REQUESTED = "changes_requested"
    CANCELLED = "cancelled"
    # a department of a later stage that was never asked, because the round was decided
    # (or closed) before its stage opened
    NOT_SENT = "not_sent"


class VerdictOutcome(StrEnum):
    """What a received verdict did; every verdict is kept with its outcome."""

    ACCEPTED = "accepted"
    STALE = "stale"
    NOT_REQUESTED = "not_requested"
    DUPLICATE = "duplicate"
    ROUND_CLOSED = "round_closed"


_ANSWERED = {RequestStatus.APPROVED, RequestStatus.CHANGES_REQUESTED}


@dataclass(frozen=True)
class Stage:
    """Departments that review at the same time; `number` counts from 1."""

    number: int
    departments: tuple[str, ...]


@dataclass(frozen=True)
class ReviewPlan:
    """The ordered stages of a round."""

    stages: tuple[Stage, ...]

    @property
    def departments(self) -> list[str]:
        return [d for stage in self.stages for d in stage.departments]


def plan(order: OrderDocument) -> list[Stage]:
    """Process section 3.2: the business supervisor first; then production (or, for a service
    order, service delivery), finance and, when the order has technical requirements,
    technical, in parallel."""
    delivery = SERVICE_DELIVERY if order.order_type == OrderType.SERVICE else PRODUCTION
    second = [delivery, FINANCE]
    if order.has_technical_requirements:
        second.append(TECHNICAL)
    return [Stage(1, (SUPERVISOR,)), Stage(2, tuple(second))]


def review_plan(order: OrderDocument) -> ReviewPlan:
    return ReviewPlan(tuple(plan(order)))


@dataclass(frozen=True)
class Request:
    """One department's review request in a round, with the verdict that answered it."""

    review_id: UUID
    department: str
    stage: int
    status: RequestStatus
    feedback: DepartmentFeedback | None = None


@dataclass(frozen=True)
class Round:
    id: UUID
    order_id: UUID
    revision: int
    status: RoundStatus
    current_stage: int
    requests: tuple[Request, ...]

    def request(self, review_id: UUID) -> Request | None:
        return next((r for r in self.requests if r.review_id == review_id), None)

    def pending(self) -> list[Request]:
        return [r for r in self.requests if r.status == RequestStatus.PENDING]


def open_round(
    *,
    round_id: UUID,
    order_id: UUID,
    revision: int,
    review_plan: ReviewPlan,
    new_review_id: Callable[[], UUID],
) -> Round:
    """A new round: the first stage asked, the later stages planned but not yet sent."""
    first = review_plan.stages[0].number
    requests = tuple(
        Request(
            review_id=new_review_id(),
            department=department,
            stage=stage.number,
            status=RequestStatus.PENDING if stage.number == first else RequestStatus.NOT_SENT,
        )
        for stage in review_plan.stages
        for department in stage.departments
    )
    return Round(
        id=round_id,
        order_id=order_id,
        revision=revision,
        status=RoundStatus.OPEN,
        current_stage=first,
        requests=requests,
    )


@dataclass(frozen=True)
class Submission:
    """What a submitted revision does to the order's rounds."""

    opens: bool
    supersede: tuple[Round, ...] = ()
    ignored_because: str | None = None


def submission(existing: Sequence[Round], revision: int) -> Submission:
    """A newer revision replaces the open round of an older one. A revision that already has
    a round (a re-sent event) or that is older than one with a round opens nothing."""
    if any(r.revision == revision for r in existing):
        return Submission(opens=False, ignored_because=f"revision {revision} already has a round")
    newer = [r.revision for r in existing if r.revision > revision]
    if newer:
        return Submission(
            opens=False,
            ignored_because=f"revision {revision} is older than revision {max(newer)}",
        )
    return Submission(
        opens=True,
        supersede=tuple(
            r for r in existing if r.status == RoundStatus.OPEN and r.revision < revision
        ),
    )


def withdrawal(existing: Sequence[Round], revision: int) -> list[Round]:
    """The open rounds a withdrawal of `revision` closes (an order has at most one)."""
    return [r for r in existing if r.status == RoundStatus.OPEN and r.revision <= revision]


def close(round_: Round, status: RoundStatus) -> tuple[Round, list[Request]]:
    """Close a round that will never be decided; returns it and the requests to cancel."""
    if status not in (RoundStatus.SUPERSEDED, RoundStatus.WITHDRAWN):
        raise ValueError(f"a round is closed as superseded or withdrawn, not {status}")
    cancelled = round_.pending()
    requests = tuple(
        replace(r, status=RequestStatus.CANCELLED) if r.status == RequestStatus.PENDING else r
        for r in round_.requests
    )
    return replace(round_, status=status, requests=requests), cancelled


class VerdictMismatch(Exception):
    """The verdict names a review but disagrees with it: it can never be applied."""

    def __init__(self, reason: str, problems: Sequence[Problem]) -> None:
        super().__init__(reason)
        self.problems = list(problems)


def feedback_of(verdict: VerdictGiven) -> DepartmentFeedback:
    return DepartmentFeedback(
        department=verdict.department,
        decision=verdict.decision,
        reviewer=verdict.reviewer,
        comment=verdict.comment,
        annotations=verdict.annotations,
    )


@dataclass(frozen=True)
class Step:
    """The result of one verdict on its round."""

    outcome: VerdictOutcome
    round: Round
    answered: Request | None = None
    # the stage this verdict completed opened the next one: these requests go out now
    opened: tuple[Request, ...] = ()
    # set when the round was decided (approved or changes_requested)
    decision: RoundStatus | None = None
    feedback: tuple[DepartmentFeedback, ...] = ()

    @property
    def annotations(self) -> list[Annotation]:
        return [a for f in self.feedback for a in f.annotations]


def check(round_: Round, verdict: VerdictGiven) -> Request:
    """The request the verdict answers; VerdictMismatch when it names something else."""
    request = round_.request(verdict.review_id)
    if request is None:
        raise VerdictMismatch(
            f"review {verdict.review_id} is not part of round {round_.id}",
            [Problem(pointer="/review_id", detail="unknown review")],
        )
    problems = []
    if verdict.order_id != round_.order_id:
        problems.append(
            Problem(
                pointer="/order_id",
                detail=f"review {verdict.review_id} is for order {round_.order_id}",
            )
        )
    if verdict.revision != round_.revision:
        problems.append(
            Problem(
                pointer="/revision",
                detail=f"review {verdict.review_id} is for revision {round_.revision}",
            )
        )
    if verdict.department != request.department:
        problems.append(
            Problem(
                pointer="/department",
                detail=f"review {verdict.review_id} was asked of {request.department}",
            )
        )
    if problems:
        fields = ", ".join(p.pointer.lstrip("/") for p in problems)
        raise VerdictMismatch(
            f"verdict does not match review {verdict.review_id}: {fields}", problems
        )
    return request


def _ignored(round_: Round, request: Request) -> VerdictOutcome | None:
    """Why a verdict changes nothing; the round's fate first, then the review's."""
    if round_.status == RoundStatus.SUPERSEDED:
        return VerdictOutcome.STALE
    if round_.status != RoundStatus.OPEN:
        return VerdictOutcome.ROUND_CLOSED
    if request.status == RequestStatus.NOT_SENT:
        return VerdictOutcome.NOT_REQUESTED
    if request.status in _ANSWERED:
        return VerdictOutcome.DUPLICATE
    if request.status != RequestStatus.PENDING:
        return VerdictOutcome.ROUND_CLOSED
    return None


def apply_verdict(round_: Round, verdict: VerdictGiven) -> Step:
    """Record a verdict; open the next stage, or decide the round, when its stage is complete.

    A department asking for changes does not end the round at once: the other departments
    of its stage still answer, so the salesperson gets every remark of the stage together.
    Later stages are then never asked.
    """
    request = check(round_, verdict)
    ignored = _ignored(round_, request)
    if ignored is not None:
        return Step(outcome=ignored, round=round_)

    answered = replace(
        request,
        status=(
            RequestStatus.APPROVED
            if verdict.decision == Decision.APPROVE
            else RequestStatus.CHANGES_REQUESTED
        ),
        feedback=feedback_of(verdict),
    )
    requests = tuple(answered if r.review_id == request.review_id else r for r in round_.requests)
    current = [r for r in requests if r.stage == round_.current_stage]
    updated = replace(round_, requests=requests)
    if any(r.status == RequestStatus.PENDING for r in current):
        return Step(outcome=VerdictOutcome.ACCEPTED, round=updated, answered=answered)

    feedback = tuple(r.feedback for r in requests if r.feedback is not None)
    if any(r.status == RequestStatus.CHANGES_REQUESTED for r in current):
        return Step(
            outcome=VerdictOutcome.ACCEPTED,
            round=replace(updated, status=RoundStatus.CHANGES_REQUESTED),
            answered=answered,
            decision=RoundStatus.CHANGES_REQUESTED,
            feedback=feedback,
        )

    later = sorted({r.stage for r in requests if r.stage > round_.current_stage})
    if not later:
        return Step(
            outcome=VerdictOutcome.ACCEPTED,
            round=replace(updated, status=RoundStatus.APPROVED),
            answered=answered,
            decision=RoundStatus.APPROVED,
            feedback=feedback,
        )

    following = later[0]
    opened = tuple(
        replace(r, status=RequestStatus.PENDING) for r in requests if r.stage == following
    )
    reopened = {r.review_id: r for r in opened}
    return Step(
        outcome=VerdictOutcome.ACCEPTED,
        round=replace(
            updated,
            current_stage=following,
            requests=tuple(reopened.get(r.review_id, r) for r in requests),
        ),
        answered=answered,
        opened=opened,
    )
