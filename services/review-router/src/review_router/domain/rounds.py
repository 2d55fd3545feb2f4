"""Review rounds: who reviews an order, in which order, and when a stage opens.

A round belongs to one revision of one order; its plan (from the review policy) is a list
of stages, each a list of departments that review in parallel and a completion mode. A
stage's review requests go out only when every department of the stage before it
approved."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from uuid import UUID

from orderflow.messages import (
    Annotation,
    DepartmentFeedback,
)

from .. import policy as policies
from ..policy import Completion, Deadline


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
    """What a received verdict (or annotation, or reassignment) did; each is kept with it."""

    ACCEPTED = "accepted"
    STALE = "stale"
    NOT_REQUESTED = "not_requested"
    DUPLICATE = "duplicate"
    ROUND_CLOSED = "round_closed"
    # under `all`, the round was decided by another department's request for changes while
    # this review was still running: recorded, and kept for the next revision if an approval
    AFTER_DECISION = "after_decision"


@dataclass(frozen=True)
class Stage:
    """Departments that review at the same time; `number` is the stage's place in the
    policy, counting from 1."""

    number: int
    departments: tuple[str, ...]
    completion: Completion = Completion.COLLECT
    name: str = ""


@dataclass(frozen=True)
class ReviewPlan:
    """The ordered stages of a round."""

    stages: tuple[Stage, ...]

    @property
    def departments(self) -> list[str]:
        return [d for stage in self.stages for d in stage.departments]


@dataclass(frozen=True)
class PlannedRound:
    plan: ReviewPlan
    deadlines: Mapping[str, Deadline]
    policy_version: str


def review_plan(policy: policies.Policy, facts: policies.OrderFacts) -> PlannedRound:
    planned = policies.plan(policy, facts)
    return PlannedRound(
        plan=ReviewPlan(
            tuple(Stage(s.number, s.departments, s.completion, s.name) for s in planned)
        ),
        deadlines={d: dl for s in planned for d, dl in s.deadlines.items()},
        policy_version=policy.version,
    )


@dataclass(frozen=True)
class Request:
    """One department's review request in a round, with the verdict that answered it."""

    review_id: UUID
    department: str
    stage: int
    status: RequestStatus
    feedback: DepartmentFeedback | None = None
    # annotations the department posted while reviewing, before its verdict
    notes: tuple[Annotation, ...] = ()
    # the review of the previous revision whose approval this one keeps
    carried_from: UUID | None = None
    deadline: Deadline | None = None

    def remarks(self) -> DepartmentFeedback | None:
        """The verdict with every annotation of the department: those posted while
        reviewing first, then the verdict's own (a repeated one once)."""
        if self.feedback is None:
            return None
        merged: list[Annotation] = []
        for annotation in (*self.notes, *self.feedback.annotations):
            if annotation not in merged:
                merged.append(annotation)
        return self.feedback.model_copy(update={"annotations": merged})


@dataclass(frozen=True)
class Round:
    id: UUID
    order_id: UUID
    revision: int
    status: RoundStatus
    current_stage: int
    requests: tuple[Request, ...]
    stages: tuple[Stage, ...] = ()

    def request(self, review_id: UUID) -> Request | None:
        return next((r for r in self.requests if r.review_id == review_id), None)

    def of(self, department: str) -> Request | None:
        return next((r for r in self.requests if r.department == department), None)

    def pending(self) -> list[Request]:
        return [r for r in self.requests if r.status == RequestStatus.PENDING]

    def completion(self, stage: int) -> Completion:
        found = next((s for s in self.stages if s.number == stage), None)
        return found.completion if found is not None else Completion.COLLECT

    def feedback(self) -> tuple[DepartmentFeedback, ...]:
        return tuple(f for r in self.requests if (f := r.remarks()) is not None)


@dataclass(frozen=True)
class Kept:
    """An approval of the previous revision that stands for this one."""

    review_id: UUID
    feedback: DepartmentFeedback


def next_stage(requests: Sequence[Request], after: int) -> int | None:
    later = sorted({r.stage for r in requests if r.stage > after})
    return later[0] if later else None


def advance(
    round_: Round, from_stage: int
) -> tuple[Round, tuple[Request, ...], RoundStatus | None]:
    """Open the next stage that still needs somebody (a stage whose every department kept
    its approval passes at once), or approve the round after the last one."""
    stage: int | None = from_stage
    requests = round_.requests
    while stage is not None:
        current = [r for r in requests if r.stage == stage]
        if any(r.status != RequestStatus.APPROVED for r in current):
            opened = tuple(
                replace(r, status=RequestStatus.PENDING)
                for r in current
                if r.status == RequestStatus.NOT_SENT
            )
            reopened = {r.review_id: r for r in opened}
            requests = tuple(reopened.get(r.review_id, r) for r in requests)
            return replace(round_, current_stage=stage, requests=requests), opened, None
        stage = next_stage(requests, stage)
    return replace(round_, status=RoundStatus.APPROVED), (), RoundStatus.APPROVED


def open_round(
    *,
    round_id: UUID,
    order_id: UUID,
    revision: int,
    review_plan: ReviewPlan,
    new_review_id: Callable[[], UUID],
    deadlines: Mapping[str, Deadline] | None = None,
    kept: Mapping[str, Kept] | None = None,
) -> Round:
    """A new round: the first stage that needs somebody asked, the later stages planned but
    not yet sent. Departments in `kept` start approved; when every department kept its
    approval the round is approved at once."""
    if not review_plan.stages:
        raise ValueError("a review plan needs at least one stage")
    kept = kept or {}
    deadlines = deadlines or {}
    requests = tuple(
        Request(
            review_id=new_review_id(),
            department=department,
            stage=stage.number,
            status=RequestStatus.APPROVED if department in kept else RequestStatus.NOT_SENT,
            feedback=kept[department].feedback if department in kept else None,
            carried_from=kept[department].review_id if department in kept else None,
            deadline=deadlines.get(department),
        )
        for stage in review_plan.stages
        for department in stage.departments
    )
    first = review_plan.stages[0].number
    planned = Round(
        id=round_id,
        order_id=order_id,
        revision=revision,
        status=RoundStatus.OPEN,
        current_stage=first,
        requests=requests,
        stages=review_plan.stages,
    )
    opened, _, _ = advance(planned, first)
    return opened


def lingering(existing: Sequence[Round]) -> list[Round]:
    """Decided rounds whose departments are still reviewing (under `all`): a new revision
    or a withdrawal stops them."""
    return [r for r in existing if r.status != RoundStatus.OPEN and r.pending()]


def cancel_pending(round_: Round) -> tuple[Round, list[Request]]:
    cancelled = round_.pending()
    requests = tuple(
        replace(r, status=RequestStatus.CANCELLED) if r.status == RequestStatus.PENDING else r
        for r in round_.requests
    )
    return replace(round_, requests=requests), cancelled


def close(round_: Round, status: RoundStatus) -> tuple[Round, list[Request]]:
    """Close a round that will never be decided; returns it and the requests to cancel."""
    if status not in (RoundStatus.SUPERSEDED, RoundStatus.WITHDRAWN):
        raise ValueError(f"a round is closed as superseded or withdrawn, not {status}")
    closed, cancelled = cancel_pending(round_)
    return replace(closed, status=status), cancelled
