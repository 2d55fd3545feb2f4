"""What departments send about a review: verdicts, annotations, reassignments, and what
each does to its round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Protocol
from uuid import UUID

from orderflow import refusals
from orderflow.messages import (
    Annotation,
    Decision,
    DepartmentFeedback,
    Problem,
    VerdictGiven,
)

from ..policy import Completion
from .rounds import (
    Request,
    RequestStatus,
    Round,
    RoundStatus,
    VerdictOutcome,
    advance,
    cancel_pending,
    next_stage,
)

_ANSWERED = {RequestStatus.APPROVED, RequestStatus.CHANGES_REQUESTED}


class ReviewMessage(Protocol):
    """What every department message names: the review and whose it is."""

    message_type: ClassVar[str]

    @property
    def review_id(self) -> UUID: ...
    @property
    def order_id(self) -> UUID: ...
    @property
    def revision(self) -> int: ...
    @property
    def department(self) -> str: ...


class VerdictMismatch(Exception):
    """The message names a review but disagrees with it: it can never be applied. `code` is
    its refusal code (`orderflow.refusals`)."""

    def __init__(
        self, reason: str, problems: Sequence[Problem], *, code: str = refusals.REVIEW_MISMATCH
    ) -> None:
        super().__init__(reason)
        self.problems = list(problems)
        self.code = code


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
    # pending reviews this verdict made pointless (`fail_fast`)
    cancelled: tuple[Request, ...] = ()
    # set when the round was decided (approved or changes_requested)
    decision: RoundStatus | None = None
    feedback: tuple[DepartmentFeedback, ...] = ()

    @property
    def annotations(self) -> list[Annotation]:
        return [a for f in self.feedback for a in f.annotations]


def check(round_: Round, message: ReviewMessage) -> Request:
    """The request the message is about; VerdictMismatch when it names something else."""
    request = round_.request(message.review_id)
    if request is None:
        raise VerdictMismatch(
            f"review {message.review_id} is not part of round {round_.id}",
            [Problem(pointer="/review_id", detail="unknown review")],
            code=refusals.UNKNOWN_REVIEW,
        )
    problems = []
    if message.order_id != round_.order_id:
        problems.append(
            Problem(
                pointer="/order_id",
                detail=f"review {message.review_id} is for order {round_.order_id}",
            )
        )
    if message.revision != round_.revision:
        problems.append(
            Problem(
                pointer="/revision",
                detail=f"review {message.review_id} is for revision {round_.revision}",
            )
        )
    if message.department != request.department:
        problems.append(
            Problem(
                pointer="/department",
                detail=f"review {message.review_id} was asked of {request.department}",
            )
        )
    if problems:
        fields = ", ".join(p.pointer.lstrip("/") for p in problems)
        raise VerdictMismatch(
            f"{message.message_type} does not match review {message.review_id}: {fields}",
            problems,
        )
    return request


def _ignored(round_: Round, request: Request) -> VerdictOutcome | None:
    """Why a message changes nothing; the round's fate first, then the review's."""
    if round_.status == RoundStatus.SUPERSEDED:
        return VerdictOutcome.STALE
    if request.status == RequestStatus.PENDING and round_.status == RoundStatus.CHANGES_REQUESTED:
        # still pending on a decided round: `all` lets the department finish
        return None
    if round_.status != RoundStatus.OPEN:
        return VerdictOutcome.ROUND_CLOSED
    if request.status == RequestStatus.NOT_SENT:
        return VerdictOutcome.NOT_REQUESTED
    if request.status in _ANSWERED:
        return VerdictOutcome.DUPLICATE
    if request.status != RequestStatus.PENDING:
        return VerdictOutcome.ROUND_CLOSED
    return None


def _replace_request(round_: Round, request: Request) -> Round:
    return replace(
        round_,
        requests=tuple(request if r.review_id == request.review_id else r for r in round_.requests),
    )


def apply_verdict(round_: Round, verdict: VerdictGiven) -> Step:
    """Record a verdict; open the next stage, or decide the round, as the stage's completion
    mode says (see `policy.Completion`)."""
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
    updated = _replace_request(round_, answered)
    if round_.status != RoundStatus.OPEN:
        return Step(outcome=VerdictOutcome.AFTER_DECISION, round=updated, answered=answered)

    return _decide_stage(updated, answered, verdict.decision)


def _decide_stage(updated: Round, answered: Request, decision: Decision) -> Step:
    """What an accepted verdict does to its open round's current stage, as the stage's
    completion mode says: wait for the others, decide changes requested, open the next
    stage, or approve the round after the last one."""
    stage = updated.current_stage
    mode = updated.completion(stage)
    current = [r for r in updated.requests if r.stage == stage]
    changes = RoundStatus.CHANGES_REQUESTED
    if decision == Decision.REQUEST_CHANGES and mode != Completion.COLLECT:
        cancelled: tuple[Request, ...] = ()
        if mode == Completion.FAIL_FAST:
            updated, cancelled_list = cancel_pending(updated)
            cancelled = tuple(cancelled_list)
        decided = replace(updated, status=changes)
        return Step(
            outcome=VerdictOutcome.ACCEPTED,
            round=decided,
            answered=answered,
            cancelled=cancelled,
            decision=changes,
            feedback=decided.feedback(),
        )
    if any(r.status == RequestStatus.PENDING for r in current):
        return Step(outcome=VerdictOutcome.ACCEPTED, round=updated, answered=answered)
    if any(r.status == RequestStatus.CHANGES_REQUESTED for r in current):
        decided = replace(updated, status=changes)
        return Step(
            outcome=VerdictOutcome.ACCEPTED,
            round=decided,
            answered=answered,
            decision=changes,
            feedback=decided.feedback(),
        )
    return _next(updated, answered, stage)


def _next(updated: Round, answered: Request, stage: int) -> Step:
    """The stage passed: open the next one that needs somebody, or approve the round."""
    following = next_stage(updated.requests, stage)
    if following is None:
        approved = replace(updated, status=RoundStatus.APPROVED)
        return Step(
            outcome=VerdictOutcome.ACCEPTED,
            round=approved,
            answered=answered,
            decision=RoundStatus.APPROVED,
            feedback=approved.feedback(),
        )
    advanced, opened, decision = advance(updated, following)
    return Step(
        outcome=VerdictOutcome.ACCEPTED,
        round=advanced,
        answered=answered,
        opened=opened,
        decision=decision,
        feedback=advanced.feedback() if decision is not None else (),
    )


@dataclass(frozen=True)
class Noted:
    """The result of a department's annotations on its round."""

    outcome: VerdictOutcome
    request: Request
    round: Round = field(repr=False)


def apply_annotations(
    round_: Round, message: ReviewMessage, annotations: Sequence[Annotation]
) -> Noted:
    """Annotations count while the department's review is pending: they go to the
    salesperson with the change request. Later ones are kept for the record only."""
    request = check(round_, message)
    ignored = _ignored(round_, request)
    if ignored is not None:
        return Noted(outcome=ignored, request=request, round=round_)
    noted = replace(request, notes=(*request.notes, *annotations))
    outcome = (
        VerdictOutcome.ACCEPTED
        if round_.status == RoundStatus.OPEN
        else VerdictOutcome.AFTER_DECISION
    )
    return Noted(outcome=outcome, request=noted, round=_replace_request(round_, noted))


def reassignment(round_: Round, message: ReviewMessage) -> tuple[VerdictOutcome, Request]:
    """A review can be handed over while it is pending."""
    request = check(round_, message)
    ignored = _ignored(round_, request)
    return ignored or VerdictOutcome.ACCEPTED, request
