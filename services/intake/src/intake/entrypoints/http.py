"""Orders over HTTP: create, edit, self-check and submit, withdraw, follow the review, read
revisions, their differences and the timeline. Files and bulk imports have their own
modules beside this one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field

from orderflow import limits
from orderflow.db import Pool, transaction
from orderflow.http import PROBLEM_RESPONSES, Problem, ProblemDetails
from orderflow.messages import (
    Annotation,
    AttachmentRef,
    DepartmentFeedback,
    FieldChange,
    OrderDocument,
    Totals,
)
from orderflow.messages import Problem as FieldProblem

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
    possible_duplicate_of: list[UUID] = Field(
        default_factory=list,
        description="Earlier orders with the same customer purchase-order reference, from "
        "any channel: this one may be a duplicate of them (accepted, not merged)",
    )
    etag: str = Field(description="The ETag: send it as If-Match with the next change")
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
    possible_duplicate_of: list[UUID] = Field(default_factory=list)
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
    attachments: list[AttachmentRef] = Field(
        description="The revision's files; a submitted revision's, as they were submitted"
    )


class RevisionSummary(BaseModel):
    revision: int
    channel: str
    totals: Totals
    attachments: int = Field(description="How many files the revision has")
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None


class RevisionList(BaseModel):
    order_id: UUID
    current_revision: int
    items: list[RevisionSummary]


class RevisionDiff(BaseModel):
    order_id: UUID
    from_revision: int
    to_revision: int
    changes: list[FieldChange] = Field(
        description="Every field that differs, as a JSON pointer into the order document with "
        "the old and the new value; files as /attachments/<id>. Added: old is null; removed: "
        "new is null"
    )


class Actor(BaseModel):
    kind: str = Field(description="salesperson, reviewer or system")
    id: str
    name: str | None = None
    department: str | None = None


class TimelineEntry(BaseModel):
    at: datetime
    type: str = Field(
        description="order.created, order.revised, attachment.added, attachment.removed "
        "(intake's own), or the event's type: order.submitted, review.round_opened, "
        "review.verdict_recorded, order.changes_requested, order.approved, contract.drafted, "
        "contract.signed, notification.delivered, order.withdrawn, ..."
    )
    revision: int | None
    source: str = Field(description="intake (its own action) or bus (an event it consumed)")
    actor: Actor | None = Field(description="Who did it")
    summary: str
    details: dict[str, Any]


class Timeline(BaseModel):
    order_id: UUID
    items: list[TimelineEntry]


class Withdrawal(BaseModel):
    reason: str | None = Field(default=None, max_length=1000, description="Why, for the record")


def _pool(request: Request) -> Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


def _today(request: Request) -> date:
    today: Callable[[], date] = request.app.state.today
    return today()


def _etag(row: dict[str, Any]) -> str:
    return domain.etag(revision=row["current_revision"], version=row["version"])


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
        possible_duplicate_of=list(row["possible_duplicate_of"]),
        etag=_etag(row),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _load(pool: Pool, order_id: UUID, response: Response | None = None) -> Order:
    """The order as it is now; its ETag on the response too."""
    row = await repository.get_order(pool, order_id=order_id)
    if row is None:
        raise _not_found(order_id)
    order = _order(row)
    if response is not None:
        response.headers["ETag"] = order.etag
    return order


def if_match_required(if_match: str | None) -> str:
    if if_match is None or not if_match.strip():
        raise Problem(
            428,
            "If-Match required",
            "send the order's ETag (from GET /api/v1/orders/{id}) in If-Match, so a change "
            "made meanwhile by someone else is never overwritten unseen",
            type_="urn:orderflow:problem:precondition-required",
            errors=[_header_problem("If-Match is required")],
        )
    if if_match.strip() == "*":
        raise Problem(
            428,
            "If-Match required",
            "If-Match: * would overwrite whatever the order is now; send its ETag instead",
            type_="urn:orderflow:problem:precondition-required",
            errors=[_header_problem("send the ETag, not *")],
        )
    return if_match


def _header_problem(detail: str) -> FieldProblem:
    return FieldProblem(pointer="header:/If-Match", detail=detail)


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
    if isinstance(exc, domain.StaleVersion):
        return Problem(
            409,
            "The order changed since it was read",
            str(exc),
            type_="urn:orderflow:problem:stale-revision",
            headers={"ETag": exc.current},
            extra={"current_revision": exc.revision, "current_etag": exc.current},
        )
    if isinstance(exc, domain.FileRefused):
        return Problem(
            exc.status,
            "File not accepted" if exc.status == 415 else "File does not match its type",
            str(exc),
            type_="urn:orderflow:problem:file-refused",
            errors=exc.problems,
        )
    extra: dict[str, Any] = {}
    if isinstance(exc, domain.NotEditable | domain.NotWithdrawable):
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
    409: {
        "model": ProblemDetails,
        "description": "Not allowed in the order's current state, or the order changed since "
        "it was read (If-Match); the current revision and ETag are in the body",
    },
}
IF_MATCH_DOC = (
    "The order's ETag as last read; a change made since is refused with 409 and the "
    "current revision, never overwritten"
)
IfMatchOptional = Annotated[str | None, Header(alias="If-Match", description=IF_MATCH_DOC)]

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
    return await _load(pool, outcome.order_id, response)


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
    duplicate: Annotated[
        bool | None,
        Query(description="true: only orders flagged as possible duplicates; false: only others"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
) -> OrderPage:
    """Orders, newest first, with the total matching the filters."""
    rows, total = await repository.list_orders(
        _pool(request),
        status=status.value if status else None,
        salesperson_id=salesperson,
        external_ref=external_ref,
        duplicate=duplicate,
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
async def get_order(request: Request, response: Response, order_id: OrderId) -> Order:
    """The order: status, current revision, document, totals, the departments' feedback;
    its ETag in the header."""
    return await _load(_pool(request), order_id, response)


@router.put(
    "/orders/{order_id}",
    response_model=Order,
    responses={428: {"model": ProblemDetails, "description": "If-Match missing"}},
)
async def update_order(
    request: Request,
    response: Response,
    order_id: OrderId,
    document: OrderDocument,
    if_match: Annotated[
        str | None, Header(alias="If-Match", description=f"Required. {IF_MATCH_DOC}")
    ] = None,
) -> Order:
    """Replace the document of a draft, or revise an order sent back (a new revision)."""
    expected = if_match_required(if_match)
    pool = _pool(request)
    try:
        async with transaction(pool) as conn:
            await handlers.update_order(
                conn,
                order_id=order_id,
                document=document,
                channel=handlers.API,
                if_match=expected,
            )
    except handlers.OrderNotFound as exc:
        raise _not_found(order_id) from exc
    except domain.RuleViolation as exc:
        raise _rule_problem(exc) from exc
    return await _load(pool, order_id, response)


@router.post("/orders/{order_id}/submit", response_model=Order)
async def submit_order(
    request: Request, response: Response, order_id: OrderId, if_match: IfMatchOptional = None
) -> Order:
    """Self-check the current revision with its files and send it to review; 422 lists
    every problem."""
    pool = _pool(request)
    try:
        async with transaction(pool) as conn:
            await handlers.submit_order(
                conn,
                order_id=order_id,
                channel=handlers.API,
                today=_today(request),
                if_match=if_match,
            )
    except handlers.OrderNotFound as exc:
        raise _not_found(order_id) from exc
    except domain.RuleViolation as exc:
        raise _rule_problem(exc) from exc
    return await _load(pool, order_id, response)


@router.post("/orders/{order_id}/withdraw", response_model=Order)
async def withdraw_order(
    request: Request,
    response: Response,
    order_id: OrderId,
    withdrawal: Annotated[Withdrawal | None, Body()] = None,
    if_match: IfMatchOptional = None,
) -> Order:
    """Withdraw the order before it is approved; departments still reviewing it are told to
    stop. 409 once it is approved."""
    pool = _pool(request)
    try:
        async with transaction(pool) as conn:
            await handlers.withdraw_order(
                conn,
                order_id=order_id,
                reason=withdrawal.reason if withdrawal else None,
                if_match=if_match,
            )
    except handlers.OrderNotFound as exc:
        raise _not_found(order_id) from exc
    except domain.RuleViolation as exc:
        raise _rule_problem(exc) from exc
    return await _load(pool, order_id, response)


def _revision_not_found(exc: handlers.RevisionNotFound) -> Problem:
    return Problem(
        404,
        "Revision not found",
        str(exc),
        type_="urn:orderflow:problem:revision-not-found",
        extra={"revision": exc.revision},
    )


RevisionNumber = Annotated[
    int, Path(ge=1, le=limits.MAX_REVISION, description="A revision number, from 1")
]


@router.get("/orders/{order_id}/revisions", response_model=RevisionList)
async def list_revisions(request: Request, order_id: OrderId) -> RevisionList:
    """Every revision of the order, oldest first: when it was made and submitted."""
    pool = _pool(request)
    order = await repository.get_order(pool, order_id=order_id)
    if order is None:
        raise _not_found(order_id)
    rows = await repository.list_revisions(pool, order_id=order_id)
    return RevisionList(
        order_id=order_id,
        current_revision=order["current_revision"],
        items=[RevisionSummary.model_validate(r) for r in rows],
    )


@router.get("/orders/{order_id}/revisions/{revision}", response_model=Revision)
async def get_revision(request: Request, order_id: OrderId, revision: RevisionNumber) -> Revision:
    """One revision of the order with its files, exactly as it was stored (and, once
    submitted, reviewed)."""
    try:
        row = await handlers.revision_with_files(
            _pool(request), order_id=order_id, revision=revision
        )
    except handlers.RevisionNotFound as exc:
        raise _revision_not_found(exc) from exc
    return Revision.model_validate(row)


@router.get("/orders/{order_id}/revisions/{from_revision}/diff/{to_revision}")
async def diff_revisions(
    request: Request,
    order_id: OrderId,
    from_revision: RevisionNumber,
    to_revision: RevisionNumber,
) -> RevisionDiff:
    """What changed from one revision to another, field by field (JSON pointer, old, new)."""
    try:
        changes = await handlers.revision_diff(
            _pool(request), order_id=order_id, old=from_revision, new=to_revision
        )
    except handlers.RevisionNotFound as exc:
        raise _revision_not_found(exc) from exc
    return RevisionDiff(
        order_id=order_id, from_revision=from_revision, to_revision=to_revision, changes=changes
    )


@router.get("/orders/{order_id}/timeline")
async def get_timeline(request: Request, order_id: OrderId) -> Timeline:
    """Everything that happened to the order, in order, with who and when: its creation,
    edits and files, submissions, review rounds, each verdict, decisions, the contract,
    notifications, withdrawal."""
    try:
        entries = await handlers.timeline(_pool(request), order_id=order_id)
    except handlers.OrderNotFound as exc:
        raise _not_found(order_id) from exc
    return Timeline(order_id=order_id, items=[TimelineEntry.model_validate(e) for e in entries])
