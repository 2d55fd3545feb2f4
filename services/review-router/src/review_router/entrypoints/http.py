"""Review rounds, review requests with their history, department work lists and the review
policy over HTTP (read only: departments act on the bus, authenticated by their RabbitMQ
user, so no route here changes anything and none needs a write rule).

Who sees what: a round or review belongs to the salesperson on the order it reviews (the
submitted document the round stored); they, their sales manager and systems reading orders
see it, as does any reviewer (a round) or the reviewer of its department (a review), and
systems holding reviews:read. Anyone else gets the same 404 as for a missing one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from orderflow import limits, times
from orderflow.auth import AUTH_RESPONSES, Caller, CallerDep, forbidden, require
from orderflow.auth.identity import (
    ORDERS_READ,
    ORDERS_WRITE,
    REVIEWER_PREFIX,
    REVIEWS_READ,
    SALES_MANAGER,
    SALESPERSON,
)
from orderflow.db import Pool
from orderflow.http import PROBLEM_RESPONSES, ProblemDetails
from orderflow.http import Problem as HttpProblem
from orderflow.messages import (
    Annotation,
    AttachmentRef,
    Decision,
    FieldChange,
    OrderDocument,
    Reviewer,
    Timestamp,
    Totals,
)

from .. import domain
from ..adapters import reads
from ..handlers import Rules
from ..policy import Completion

DepartmentName = Annotated[
    str,
    Path(
        pattern=r"^[a-z][a-z0-9_]{1,40}$",
        description="A department, e.g. finance",
        examples=["finance"],
    ),
]

OUTCOME = Field(
    description="accepted, or why it changed nothing: stale (a superseded revision), "
    "round_closed (the round was already decided or withdrawn), not_requested (the "
    "review's stage was not asked yet), duplicate (the review was already answered), "
    "after_decision (recorded after another department's request for changes decided the "
    "round under `all`)"
)


class StageView(BaseModel):
    number: int
    name: str = ""
    completion: Completion = Completion.COLLECT
    departments: list[str]


class VerdictView(BaseModel):
    id: UUID
    message_id: str
    review_id: UUID
    department: str
    decision: Decision
    reviewer: Reviewer
    on_behalf_of: Reviewer | None = None
    comment: str | None
    annotations: list[Annotation]
    outcome: domain.VerdictOutcome = OUTCOME
    user_id: str | None = Field(default=None, description="The RabbitMQ user that sent it")
    received_at: Timestamp


class AnnotationsView(BaseModel):
    id: UUID
    message_id: str
    reviewer: Reviewer
    on_behalf_of: Reviewer | None = None
    annotations: list[Annotation]
    outcome: domain.VerdictOutcome = OUTCOME
    user_id: str | None = None
    received_at: Timestamp


class AssignmentView(BaseModel):
    id: UUID
    message_id: str
    assigned_by: Reviewer
    assignee: Reviewer
    reason: str | None = None
    outcome: domain.VerdictOutcome = OUTCOME
    user_id: str | None = None
    received_at: Timestamp


class TimerView(BaseModel):
    kind: Literal["overdue", "escalate"]
    due_at: Timestamp
    fire_at: Timestamp
    fired_at: Timestamp | None
    outcome: str | None = Field(description="sent, or why nothing was sent")


class HistoryEntry(BaseModel):
    at: Timestamp
    kind: Literal[
        "kept",
        "requested",
        "annotated",
        "reassigned",
        "verdict",
        "overdue",
        "escalated",
        "cancelled",
    ]
    actor: Reviewer | None = Field(default=None, description="Who did it")
    on_behalf_of: Reviewer | None = Field(default=None, description="For whom, when delegated")
    detail: dict[str, Any] = Field(default_factory=dict)


class ReviewRequestView(BaseModel):
    review_id: UUID
    round_id: UUID
    order_id: UUID
    revision: int
    department: str
    stage: int
    status: domain.RequestStatus
    requested_at: Timestamp | None
    answered_at: Timestamp | None
    cancelled_at: Timestamp | None
    due_at: Timestamp | None = None
    assignee: Reviewer | None = Field(default=None, description="Whom the review was handed to")
    carried_from: UUID | None = Field(
        default=None, description="The review of the previous revision whose approval it kept"
    )


class ReviewView(ReviewRequestView):
    round_status: domain.RoundStatus
    policy_version: str | None
    order: OrderDocument
    totals: Totals
    attachments: list[AttachmentRef]
    previous_revision: int | None
    changes: list[FieldChange]
    verdicts: list[VerdictView]
    annotations: list[AnnotationsView]
    assignments: list[AssignmentView]
    timers: list[TimerView]
    history: list[HistoryEntry] = Field(description="Everything that happened to it, in order")


class RoundView(BaseModel):
    id: UUID
    order_id: UUID
    revision: int
    status: domain.RoundStatus
    policy_version: str | None
    current_stage: int
    plan: list[StageView]
    totals: Totals
    previous_revision: int | None
    changes: list[FieldChange]
    opened_at: Timestamp
    decided_at: Timestamp | None
    decision: dict[str, Any] | None = Field(
        description="The feedback and annotations that decided the round, or why it was closed"
    )
    requests: list[ReviewRequestView]
    verdicts: list[VerdictView]


class RoundList(BaseModel):
    order_id: UUID
    items: list[RoundView]


class PendingPage(BaseModel):
    department: str
    items: list[ReviewRequestView]
    total: int
    limit: int
    offset: int


class PolicyView(BaseModel):
    version: str
    description: str | None
    document: dict[str, Any] = Field(description="The policy as the router read it")


def _pool(request: Request) -> Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


def _rules(request: Request) -> Rules:
    return request.app.state.rules  # type: ignore[no-any-return]


def _now() -> datetime:
    return datetime.now(UTC)


PoolDep = Annotated[Pool, Depends(_pool)]
RulesDep = Annotated[Rules, Depends(_rules)]
Now = Annotated[datetime, Depends(_now)]


class NotFound(HttpProblem):
    """404, answered by the app's problem handler (as for anything a caller may not see)."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(404, f"{what} not found", detail, type_="urn:orderflow:problem:not-found")


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemDetails, "description": "No such review or round"},
}

router = APIRouter(
    prefix="/api/v1", tags=["reviews"], responses={**PROBLEM_RESPONSES, **AUTH_RESPONSES}
)

ANY_REVIEWER = f"{REVIEWER_PREFIX}*"
# everyone who could see some round or review: the order's side and the reviewers' side
Reader = Annotated[
    Caller,
    Depends(
        require(SALESPERSON, SALES_MANAGER, ORDERS_READ, ORDERS_WRITE, ANY_REVIEWER, REVIEWS_READ)
    ),
]
DepartmentReader = Annotated[Caller, Depends(require(ANY_REVIEWER, REVIEWS_READ))]


def _sees_round(caller: Caller, salesperson_id: str | None) -> bool:
    return caller.has(REVIEWS_READ, ANY_REVIEWER) or _owner_side(caller, salesperson_id)


def _sees_review(caller: Caller, department: str, salesperson_id: str | None) -> bool:
    return (
        caller.has(REVIEWS_READ)
        or caller.reviews_for(department)
        or _owner_side(caller, salesperson_id)
    )


def _owner_side(caller: Caller, salesperson_id: str | None) -> bool:
    return salesperson_id is not None and caller.acts_for(salesperson_id)


@router.get("/rounds", responses=NOT_FOUND)
async def list_rounds(
    pool: PoolDep,
    caller: Reader,
    order_id: Annotated[UUID, Query(description="The order whose rounds to list")],
) -> RoundList:
    """An order's review rounds, oldest revision first, with their requests and verdicts.
    404 for a caller who may see none of them (as for an order they do not have)."""
    rounds = await reads.rounds_with_details(pool, order_id=order_id)
    seen = [r for r in rounds if _sees_round(caller, r.salesperson_id)]
    if not seen and not caller.has(REVIEWS_READ, ANY_REVIEWER):
        raise NotFound("Rounds", f"no review rounds of order {order_id}")
    return RoundList(
        order_id=order_id,
        items=[RoundView.model_validate(r, from_attributes=True) for r in seen],
    )


@router.get("/rounds/{round_id}", responses=NOT_FOUND)
async def get_round(pool: PoolDep, caller: Reader, round_id: UUID) -> RoundView:
    """One review round: its status, plan, requests and verdicts."""
    found = await reads.round_with_details(pool, round_id=round_id)
    if found is None or not _sees_round(caller, found.salesperson_id):
        raise NotFound("Round", f"no round {round_id}")
    return RoundView.model_validate(found, from_attributes=True)


def _history(review: reads.ReviewRecord) -> list[HistoryEntry]:
    """Everything that happened to a review, in order: its own moments, then what its
    department sent and what its timers did, sorted by time."""
    entries: list[HistoryEntry] = []
    if review.carried_from is not None and review.answered_at is not None:
        entries.append(
            HistoryEntry(
                at=review.answered_at,
                kind="kept",
                detail={"carried_from": str(review.carried_from)},
            )
        )
    if review.requested_at is not None:
        entries.append(
            HistoryEntry(
                at=review.requested_at, kind="requested", detail={"due_at": _time(review.due_at)}
            )
        )
    entries.extend(_sent(review))
    for t in review.timers:
        if t.fired_at is not None and t.outcome == "sent":
            kind = "overdue" if t.kind == "overdue" else "escalated"
            entries.append(
                HistoryEntry(at=t.fired_at, kind=kind, detail={"due_at": _time(t.due_at)})
            )
    if review.cancelled_at is not None:
        entries.append(HistoryEntry(at=review.cancelled_at, kind="cancelled"))
    return sorted(entries, key=lambda e: e.at)


def _sent(review: reads.ReviewRecord) -> list[HistoryEntry]:
    """What the department sent about the review: annotations, reassignments, verdicts."""
    entries = [
        HistoryEntry(
            at=a.received_at,
            kind="annotated",
            actor=a.reviewer,
            on_behalf_of=a.on_behalf_of,
            detail={"annotations": a.annotations, "outcome": a.outcome},
        )
        for a in review.annotations
    ]
    entries.extend(
        HistoryEntry(
            at=a.received_at,
            kind="reassigned",
            actor=a.assigned_by,
            detail={"assignee": a.assignee, "reason": a.reason, "outcome": a.outcome},
        )
        for a in review.assignments
    )
    entries.extend(
        HistoryEntry(
            at=v.received_at,
            kind="verdict",
            actor=v.reviewer,
            on_behalf_of=v.on_behalf_of,
            detail={
                "decision": v.decision,
                "comment": v.comment,
                "annotations": v.annotations,
                "outcome": v.outcome,
            },
        )
        for v in review.verdicts
    )
    return entries


def _time(value: datetime | None) -> str | None:
    # `detail` is free-form JSON: its times are written as every other time is
    return None if value is None else times.format_time(value)


@router.get("/reviews/{review_id}", responses=NOT_FOUND)
async def get_review(pool: PoolDep, caller: Reader, review_id: UUID) -> ReviewView:
    """One review request with the order as submitted and its whole history: annotations,
    reassignments, verdicts (who decided, for whom), reminders and escalations."""
    review = await reads.review_with_details(pool, review_id=review_id)
    if review is None or not _sees_review(caller, review.department, review.salesperson_id):
        raise NotFound("Review", f"no review {review_id}")
    return ReviewView.model_validate(
        {**vars(review), "history": _history(review)}, from_attributes=True
    )


@router.get("/departments/{department}/pending")
async def list_pending(
    pool: PoolDep,
    caller: DepartmentReader,
    now: Now,
    department: DepartmentName,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
    assignee: Annotated[
        str | None, Query(max_length=100, description="Only reviews handed to this reviewer id")
    ] = None,
    overdue: Annotated[bool, Query(description="Only reviews past their due time")] = False,
) -> PendingPage:
    """A department's review requests still waiting for a verdict, oldest first (for the
    department's reviewers and reviews:read)."""
    if not (caller.has(REVIEWS_READ) or caller.reviews_for(department)):
        raise forbidden(f"the pending reviews of {department} are for its reviewers")
    rows, total = await reads.pending_for(
        pool,
        department=department,
        limit=limit,
        offset=offset,
        assignee=assignee,
        overdue_at=now if overdue else None,
    )
    return PendingPage(
        department=department,
        items=[ReviewRequestView.model_validate(r, from_attributes=True) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/policy")
async def get_policy(rules: RulesDep, caller: CallerDep) -> PolicyView:
    """The review policy the router plans rounds with."""
    return PolicyView(
        version=rules.policy.version,
        description=rules.policy.description,
        document=rules.policy.model_dump(mode="json", exclude_none=True),
    )
