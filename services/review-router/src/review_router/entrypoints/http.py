"""Review rounds, review requests and department work lists over HTTP (read only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from orderflow.db import Pool
from orderflow.http import PROBLEM_RESPONSES, ProblemDetails
from orderflow.http import Problem as HttpProblem
from orderflow.messages import Annotation, Decision, OrderDocument, Reviewer, Totals

from .. import domain
from ..adapters import repository

DepartmentName = Annotated[
    str,
    Path(
        pattern=r"^[a-z][a-z0-9_]{1,40}$",
        description="A department, e.g. finance",
        examples=["finance"],
    ),
]


class StageView(BaseModel):
    number: int
    departments: list[str]


class VerdictView(BaseModel):
    id: UUID
    message_id: str
    review_id: UUID
    department: str
    decision: Decision
    reviewer: Reviewer
    comment: str | None
    annotations: list[Annotation]
    outcome: domain.VerdictOutcome = Field(
        description="accepted, or why it changed nothing: stale (a superseded revision), "
        "round_closed (the round was already decided or withdrawn), not_requested (the "
        "review's stage was not asked yet), duplicate (the review was already answered)"
    )
    received_at: datetime


class ReviewRequestView(BaseModel):
    review_id: UUID
    round_id: UUID
    order_id: UUID
    revision: int
    department: str
    stage: int
    status: domain.RequestStatus
    requested_at: datetime | None
    answered_at: datetime | None
    cancelled_at: datetime | None


class ReviewView(ReviewRequestView):
    round_status: domain.RoundStatus
    order: OrderDocument
    totals: Totals
    verdicts: list[VerdictView]


class RoundView(BaseModel):
    id: UUID
    order_id: UUID
    revision: int
    status: domain.RoundStatus
    current_stage: int
    plan: list[StageView]
    totals: Totals
    opened_at: datetime
    decided_at: datetime | None
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


def _pool(request: Request) -> Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemDetails, "description": "No such review"},
}

router = APIRouter(prefix="/api/v1", tags=["reviews"], responses=PROBLEM_RESPONSES)


@router.get("/rounds")
async def list_rounds(
    request: Request,
    order_id: Annotated[UUID, Query(description="The order whose rounds to list")],
) -> RoundList:
    """An order's review rounds, oldest revision first, with their requests and verdicts."""
    rounds = await repository.rounds_with_details(_pool(request), order_id=order_id)
    return RoundList(order_id=order_id, items=[RoundView.model_validate(r) for r in rounds])


@router.get("/reviews/{review_id}", responses=NOT_FOUND)
async def get_review(request: Request, review_id: UUID) -> ReviewView:
    """One review request, with the order as submitted and every verdict given for it."""
    review = await repository.review_with_details(_pool(request), review_id=review_id)
    if review is None:
        raise HttpProblem(
            404,
            "Review not found",
            f"no review {review_id}",
            type_="urn:orderflow:problem:not-found",
        )
    review["order"] = review.pop("order_document")
    return ReviewView.model_validate(review)


@router.get("/departments/{department}/pending")
async def list_pending(
    request: Request,
    department: DepartmentName,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PendingPage:
    """A department's review requests still waiting for a verdict, oldest first."""
    rows, total = await repository.pending_for(
        _pool(request), department=department, limit=limit, offset=offset
    )
    return PendingPage(
        department=department,
        items=[ReviewRequestView.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )
