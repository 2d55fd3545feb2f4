"""Review rounds: who reviews an order, in which order, and when a round is decided.

Pure rules, no I/O. A round belongs to one revision of one order; its plan (from the review
policy) is a list of stages, each a list of departments that review in parallel and a
completion mode. A stage's review requests go out only when every department of the stage
before it approved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import ClassVar, Protocol
from uuid import UUID

from orderflow import refusals
from orderflow.messages import (
    Annotation,
    Decision,
    DepartmentFeedback,
    FieldChange,
    OrderDocument,
    Problem,
    VerdictGiven,
)

from . import policy as policies
from .policy import Completion, Deadline


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


_ANSWERED = {RequestStatus.APPROVED, RequestStatus.CHANGES_REQUESTED}


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


def _next_stage(requests: Sequence[Request], after: int) -> int | None:
    later = sorted({r.stage for r in requests if r.stage > after})
    return later[0] if later else None


def _advance(
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
        stage = _next_stage(requests, stage)
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
    opened, _, _ = _advance(planned, first)
    return opened


# --- resubmission: what changed, and whose approval stands ------------------------------


def _normal(order: OrderDocument) -> dict[str, object]:
    return order.model_dump(mode="json", exclude_none=True)


def changes_between(previous: OrderDocument, current: OrderDocument) -> list[FieldChange]:
    """Every field that differs between two revisions; the router's own diff, from the
    documents it stored, is what decides who reviews again."""
    return [
        FieldChange(pointer=pointer, old=old, new=new)
        for pointer, old, new in policies.diff(_normal(previous), _normal(current))
    ]


def changed_fields(computed: Iterable[FieldChange], announced: Iterable[FieldChange]) -> list[str]:
    """The pointers of both diffs: what the submitter announced can only add reviews."""
    pointers: list[str] = []
    for change in (*computed, *announced):
        if change.pointer not in pointers:
            pointers.append(change.pointer)
    return pointers


def kept_approvals(
    *,
    previous: Round | None,
    plan: ReviewPlan,
    policy: policies.Policy,
    changed: Sequence[str],
) -> dict[str, Kept]:
    """The departments of `plan` whose approval of the previous revision stands: the policy
    lets them keep it, they approved (or kept an approval of) that revision, and no change
    touches a field they own or a field nobody owns."""
    if previous is None:
        return {}
    owned = policy.owned()
    kept: dict[str, Kept] = {}
    for department in plan.departments:
        before = previous.of(department)
        if (
            before is None
            or before.status != RequestStatus.APPROVED
            or before.feedback is None
            or not policy.keeps_approval(department)
            or not policies.untouched(department, changed, owned)
        ):
            continue
        kept[department] = Kept(review_id=before.review_id, feedback=before.feedback)
    return kept


@dataclass(frozen=True)
class Submission:
    """What a submitted revision does to the order's rounds."""

    opens: bool
    supersede: tuple[Round, ...] = ()
    ignored_because: str | None = None
    previous: Round | None = None


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
        previous=max(existing, key=lambda r: r.revision, default=None),
    )


class WithdrawalOutcome(StrEnum):
    WITHDRAWN = "withdrawn"
    REFUSED = "refused"


#: What the salesperson is told when the approval came first.
APPROVED_FIRST = "the order was approved before the withdrawal arrived"


@dataclass(frozen=True)
class WithdrawalDecision:
    """What a withdrawal does, decided under the order's lock against its rounds: it wins
    unless the order's latest round is approved (then the approval stands)."""

    outcome: WithdrawalOutcome
    close: tuple[Round, ...] = ()
    decided: Round | None = None

    @property
    def reason(self) -> str | None:
        return APPROVED_FIRST if self.outcome is WithdrawalOutcome.REFUSED else None


def decide_withdrawal(existing: Sequence[Round]) -> WithdrawalDecision:
    """Withdrawal against the round's decision. Not yet reviewed (no round yet: the
    submission may still be on its way), under review (an open round) or sent back for
    changes: the withdrawal wins and every open round closes. Approved: the approval came
    first and the withdrawal is refused, so nothing said about the approval is taken back."""
    latest = max(existing, key=lambda r: r.revision, default=None)
    if latest is not None and latest.status == RoundStatus.APPROVED:
        return WithdrawalDecision(WithdrawalOutcome.REFUSED, decided=latest)
    return WithdrawalDecision(
        WithdrawalOutcome.WITHDRAWN,
        close=tuple(r for r in existing if r.status == RoundStatus.OPEN),
        decided=latest,
    )


def withdrawn_before(revision: int, withdrawn_revision: int | None) -> bool:
    """Whether a submitted revision arrives after its order was withdrawn (the submission
    and the withdrawal travel in separate queues): it must open no review."""
    return withdrawn_revision is not None and revision <= withdrawn_revision


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


# --- what departments send: verdicts, annotations, reassignments --------------------------


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
    following = _next_stage(updated.requests, stage)
    if following is None:
        approved = replace(updated, status=RoundStatus.APPROVED)
        return Step(
            outcome=VerdictOutcome.ACCEPTED,
            round=approved,
            answered=answered,
            decision=RoundStatus.APPROVED,
            feedback=approved.feedback(),
        )
    advanced, opened, decision = _advance(updated, following)
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


# --- who may speak for a department ------------------------------------------------------


@dataclass(frozen=True)
class VerdictAccess:
    """Which RabbitMQ users speak for which department.

    RabbitMQ checks a message's `user_id` against the user of the connection that published
    it, but only when it is set: a message without one proves nothing and is refused.
    """

    required: bool
    users: Mapping[str, str]  # RabbitMQ user -> department
    acting: frozenset[str] = frozenset()  # users that act for any department (the console)


class Unauthorized(Exception):
    """The sender may not speak for the department; `code` is its refusal code."""

    def __init__(self, reason: str, problems: Sequence[Problem], *, code: str) -> None:
        super().__init__(reason)
        self.problems = list(problems)
        self.code = code


def authorize(
    access: VerdictAccess,
    *,
    user_id: str | None,
    department: str,
    routing_key: str | None,
    kind: str = "verdict",
) -> None:
    """Unauthorized unless the validated `user_id` may speak for `department`."""
    if routing_key is not None and routing_key != department:
        raise Unauthorized(
            f"{kind} for {department} published with routing key {routing_key!r}",
            [Problem(pointer="/department", detail=f"the routing key is {routing_key!r}")],
            code=refusals.WRONG_ROUTING_KEY,
        )
    if not access.required:
        return
    if not user_id:
        raise Unauthorized(
            f"{kind} without user_id refused: set the AMQP user_id property to the "
            "RabbitMQ user you connect as, so the broker vouches for the sender",
            [Problem(pointer="", detail="the AMQP user_id property is missing")],
            code=refusals.MISSING_USER_ID,
        )
    if user_id in access.acting:
        return
    allowed = access.users.get(user_id)
    if allowed is None:
        raise Unauthorized(
            f"{kind} refused: RabbitMQ user {user_id!r} speaks for no department",
            [Problem(pointer="", detail=f"user {user_id!r} is not a department's user")],
            code=refusals.NOT_A_DEPARTMENT_USER,
        )
    if allowed != department:
        raise Unauthorized(
            f"{kind} refused: RabbitMQ user {user_id!r} speaks for {allowed}, not {department}",
            [Problem(pointer="/department", detail=f"user {user_id!r} may act for {allowed} only")],
            code=refusals.WRONG_DEPARTMENT,
        )


def department_users(
    departments: Iterable[str], *, pattern: str, explicit: Mapping[str, str]
) -> dict[str, str]:
    """RabbitMQ user -> department: the naming convention for every department, then the
    explicit mapping (which wins)."""
    users = {pattern.format(department=d): d for d in departments}
    users.update(explicit)
    return users
