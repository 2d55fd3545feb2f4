"""Orders over HTTP: create, edit, self-check and submit, follow the review."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field

from orderflow.db import Pool, transaction
from orderflow.http import PROBLEM_RESPONSES, Problem, ProblemDetails
from orderflow.messages import Annotation, DepartmentFeedback, OrderDocument, Totals

from .. import domain, handlers
from ..adapters import repository
from ..domain import Status


class ChangeRequest(BaseModel):
    """The departments' answer to the last revision sent back: every verdict and remark."""

    revision: int
    feedback: list[DepartmentFeedback]
    annotations: list[Annotation] = Field(description="Every annotation, as one checklist")
    decided_at: datetime


class ContractReference(BaseModel):
    contract_id: UUID
    contract_number: str
    signed_at: datetime | None = None


class Order(BaseModel):
    id: UUID
    status: Status
    channel: str = Field(description="Where the order came from: api, console or bus")
    salesperson_id: str
    external_ref: str | None
    current_revision: int = Field(description="The revision being edited or reviewed")
    submitted_revision: int | None = Field(description="The latest revision sent to review")
    submitted_at: datetime | None = Field(description="When the current revision was submitted")
    document: OrderDocument
    totals: Totals
    change_request: ChangeRequest | None = None
    approved_at: datetime | None = None
    contract: ContractReference | None = None
    withdrawn_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class OrderSummary(BaseModel):
    id: UUID
    status: Status
    channel: str
    salesperson_id: str
    external_ref: str | None
    customer_name: str | None
    current_revision: int
    submitted_revision: int | None
    totals: Totals
    created_at: datetime
    updated_at: datetime


class OrderPage(BaseModel):
    items: list[OrderSummary]
    total: int
    limit: int
    offset: int


class Revision(BaseModel):
    order_id: UUID
    revision: int
    document: OrderDocument
    totals: Totals
    channel: str
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = Field(description="Set once submitted; then it never changes")


def _pool(request: Request) -> Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


def _today(request: Request) -> date:
    today: Callable[[], date] = request.app.state.today
    return today()


def _order(row: dict[str, Any]) -> Order:
    contract = None
    if row["contract_id"] is not None:
        contract = ContractReference(
            contract_id=row["contract_id"],
            contract_number=row["contract_number"],
            signed_at=row["contract_signed_at"],
        )
    return Order(
        id=row["id"],
        status=Status(row["status"]),
        channel=row["channel"],
        salesperson_id=row["salesperson_id"],
        external_ref=row["external_ref"],
        current_revision=row["current_revision"],
        submitted_revision=row["submitted_revision"],
        submitted_at=row["submitted_at"],
        document=OrderDocument.model_validate(row["document"]),
        totals=Totals.model_validate(row["totals"]),
        change_request=(
            ChangeRequest.model_validate(row["change_request"]) if row["change_request"] else None
        ),
        approved_at=row["approved_at"],
        contract=contract,
        withdrawn_at=row["withdrawn_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _load(pool: Pool, order_id: UUID) -> Order:
    row = await repository.get_order(pool, order_id=order_id)
    if row is None:
        raise _not_found(order_id)
    return _order(row)


def _not_found(order_id: UUID) -> Problem:
    return Problem(
        404,
        "Order not found",
        f"there is no order {order_id}",
        type_="urn:orderflow:problem:order-not-found",
    )


def _rule_problem(exc: domain.RuleViolation) -> Problem:
    if isinstance(exc, domain.SelfCheckFailed):
        return Problem(
            422,
            "The order did not pass the self-check",
            f"{len(exc.problems)} problem(s) to fix before the order can be submitted",
            type_="urn:orderflow:problem:self-check-failed",
            errors=exc.problems,
        )
    extra: dict[str, Any] = {}
    if isinstance(exc, domain.NotEditable):
        extra["current_status"] = exc.status.value
    if isinstance(exc, domain.AlreadySubmitted):
        extra["revision"] = exc.revision
    return Problem(
        409,
        "Not allowed in the order's current state",
        str(exc),
        type_="urn:orderflow:problem:order-state",
        extra=extra,
    )


PROBLEMS: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    404: {"model": ProblemDetails, "description": "No such order"},
    409: {"model": ProblemDetails, "description": "Not allowed in the order's current state"},
}

OrderId = Annotated[UUID, Path(description="The order's id (a UUID)")]

router = APIRouter(prefix="/api/v1", tags=["orders"], responses=PROBLEMS)


@router.post("/orders", status_code=201, response_model=Order)
async def create_order(
    request: Request,
    response: Response,
    document: OrderDocument,
    submit: Annotated[
        bool, Query(description="Self-check and submit at once; nothing is stored on problems")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Retrying with the same key and body returns the same order",
        ),
    ] = None,
) -> Order:
    """Create an order as a draft, or submit it at once with `submit=true`."""
    pool = _pool(request)
    try:
        async with transaction(pool) as conn:
            outcome = await handlers.create_order(
                conn,
                document=document,
                channel=handlers.API,
                submit=submit,
                today=_today(request),
                idempotency_key=idempotency_key,
            )
    except domain.RuleViolation as exc:
        raise _rule_problem(exc) from exc
    except handlers.IdempotencyKeyReused as exc:
        raise Problem(
            409,
            "Idempotency-Key already used for another request",
            str(exc),
            type_="urn:orderflow:problem:idempotency-key-reused",
            extra={"order_id": str(exc.order_id)},
        ) from exc
    if not outcome.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = str(
        request.app.url_path_for("get_order", order_id=str(outcome.order_id))
    )
    return await _load(pool, outcome.order_id)


@router.get("/orders", response_model=OrderPage)
async def list_orders(
    request: Request,
    status: Annotated[Status | None, Query(description="Only orders in this status")] = None,
    salesperson: Annotated[
        str | None, Query(min_length=1, max_length=100, description="Only this salesperson's")
    ] = None,
    external_ref: Annotated[
        str | None, Query(min_length=1, max_length=100, description="The source system's ref")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> OrderPage:
    """Orders, newest first, with the total matching the filters."""
    rows, total = await repository.list_orders(
        _pool(request),
        status=status.value if status else None,
        salesperson_id=salesperson,
        external_ref=external_ref,
        limit=limit,
        offset=offset,
    )
    return OrderPage(
        items=[OrderSummary.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/orders/{order_id}", response_model=Order)
async def get_order(request: Request, order_id: OrderId) -> Order:
    """The order: status, current revision, document, totals, the departments' feedback."""
    return await _load(_pool(request), order_id)


@router.put("/orders/{order_id}", response_model=Order)
async def update_order(request: Request, order_id: OrderId, document: OrderDocument) -> Order:
    """Replace the document of a draft, or revise an order sent back (a new revision)."""
    pool = _pool(request)
    try:
        async with transaction(pool) as conn:
            await handlers.update_order(
                conn, order_id=order_id, document=document, channel=handlers.API
            )
    except handlers.OrderNotFound as exc:
        raise _not_found(order_id) from exc
    except domain.RuleViolation as exc:
        raise _rule_problem(exc) from exc
    return await _load(pool, order_id)


@router.post("/orders/{order_id}/submit", response_model=Order)
async def submit_order(request: Request, order_id: OrderId) -> Order:
    """Self-check the current revision and send it to review; 422 lists every problem."""
    pool = _pool(request)
    try:
        async with transaction(pool) as conn:
            await handlers.submit_order(
                conn, order_id=order_id, channel=handlers.API, today=_today(request)
            )
    except handlers.OrderNotFound as exc:
        raise _not_found(order_id) from exc
    except domain.RuleViolation as exc:
        raise _rule_problem(exc) from exc
    return await _load(pool, order_id)


@router.get("/orders/{order_id}/revisions/{revision}", response_model=Revision)
async def get_revision(
    request: Request, order_id: OrderId, revision: Annotated[int, Path(ge=1)]
) -> Revision:
    """One revision of the order, exactly as it was stored (and, once submitted, reviewed)."""
    row = await repository.get_revision(_pool(request), order_id=order_id, revision=revision)
    if row is None:
        raise Problem(
            404,
            "Revision not found",
            f"order {order_id} has no revision {revision}",
            type_="urn:orderflow:problem:revision-not-found",
        )
    return Revision.model_validate(row)
