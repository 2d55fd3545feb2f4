"""Orders over HTTP: create, edit, self-check and submit, withdraw, follow the review, read
revisions, their differences and the timeline. Files and bulk imports have their own
modules beside this one; who may do what is in `access`."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from orderflow import limits
from orderflow.auth.hardening import enforce
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
from orderflow.messages.base import Timestamp

from .. import domain, handlers
from ..adapters import repository
from ..domain import Status
from .access import (
    RESPONSES,
    Db,
    Lister,
    OrderId,
    ReadOrders,
    Today,
    WriteOrders,
    Writer,
    check_salesperson,
    order_not_found,
)


class ChangeRequest(BaseModel):
    """The departments' answer to the last revision sent back: every verdict and remark."""

    revision: int
    feedback: list[DepartmentFeedback]
    annotations: list[Annotation] = Field(description="Every annotation, as one checklist")
    decided_at: Timestamp


class Actor(BaseModel):
    """Who did it: the signed-in caller of the request (person or system, how they signed
    in, from which address), the broker user that sent a command, or whom an event names."""

    kind: str = Field(
        description="person or system (a signed-in caller or a broker user); for events "
        "recorded before sign-in or from other services: salesperson, reviewer or system"
    )
    id: str = Field(description="The username, `key:<name>` for an API key, the broker user")
    name: str | None = None
    department: str | None = None
    via: str | None = Field(
        default=None, description="How the caller signed in: api_key, session, oidc; amqp"
    )
    source: str | None = Field(default=None, description="The client address of the request")


class ContractReference(BaseModel):
    contract_id: UUID
    contract_number: str
    signed_at: Timestamp | None = None


class Order(BaseModel):
    id: UUID
    status: Status
    channel: str = Field(description="Where the order came from: api, console or bus")
    salesperson_id: str
    external_ref: str | None
    current_revision: int = Field(description="The revision being edited or reviewed")
    submitted_revision: int | None = Field(description="The latest revision sent to review")
    submitted_at: Timestamp | None = Field(description="When the current revision was submitted")
    document: OrderDocument
    totals: Totals
    change_request: ChangeRequest | None = None
    approved_at: Timestamp | None = None
    contract: ContractReference | None = None
    withdrawn_at: Timestamp | None = None
    withdrawn_by: Actor | None = None
    withdrawal: WithdrawalState | None = Field(
        default=None, description="The latest withdrawal asked for, and its answer"
    )
    created_by: Actor | None = Field(
        default=None, description="Who created the order (unknown for orders from before sign-in)"
    )
    possible_duplicate_of: list[UUID] = Field(
        default_factory=list,
        description="Earlier orders with the same customer purchase-order reference, from "
        "any channel: this one may be a duplicate of them (accepted, not merged)",
    )
    etag: str = Field(description="The ETag: send it as If-Match with the next change")
    created_at: Timestamp
    updated_at: Timestamp


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
    created_at: Timestamp
    updated_at: Timestamp


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
    created_at: Timestamp
    updated_at: Timestamp
    submitted_at: Timestamp | None = Field(description="Set once submitted; then it never changes")
    attachments: list[AttachmentRef] = Field(
        description="The revision's files; a submitted revision's, as they were submitted"
    )


class RevisionSummary(BaseModel):
    revision: int
    channel: str
    totals: Totals
    attachments: int = Field(description="How many files the revision has")
    created_at: Timestamp
    updated_at: Timestamp
    submitted_at: Timestamp | None


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


class TimelineEntry(BaseModel):
    at: Timestamp
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
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    reason: str | None = Field(default=None, max_length=1000, description="Why, for the record")


class WithdrawalState(BaseModel):
    """The latest withdrawal asked for and the review-router's answer to it."""

    requested_at: Timestamp
    requested_by: Actor | None = None
    reason: str | None = None
    outcome: str = Field(
        description="pending (the order is withdrawal_requested), withdrawn, or refused (the "
        "order was approved before the withdrawal arrived; it stays approved)"
    )
    refusal: str | None = Field(default=None, description="Why it was refused")
    answered_at: Timestamp | None = None


def _etag(row: repository.StoredOrder) -> str:
    return domain.etag(revision=row.current_revision, version=row.version)


def _order(row: repository.StoredOrder, document: OrderDocument | None = None) -> Order:
    """The order as answered; `document`: the revision's document as already validated
    in this request (the one just stored), so it is not validated a second time."""
    contract = None
    if row.contract_id is not None:
        contract = ContractReference(
            contract_id=row.contract_id,
            contract_number=row.contract_number,
            signed_at=row.contract_signed_at,
        )
    return Order(
        id=row.id,
        status=Status(row.status),
        channel=row.channel,
        salesperson_id=row.salesperson_id,
        external_ref=row.external_ref,
        current_revision=row.current_revision,
        submitted_revision=row.submitted_revision,
        submitted_at=row.submitted_at,
        document=document if document is not None else OrderDocument.model_validate(row.document),
        totals=Totals.model_validate(row.totals),
        change_request=(
            ChangeRequest.model_validate(row.change_request) if row.change_request else None
        ),
        approved_at=row.approved_at,
        contract=contract,
        withdrawn_at=row.withdrawn_at,
        withdrawn_by=row.withdrawn_by,
        withdrawal=WithdrawalState.model_validate(row.withdrawal) if row.withdrawal else None,
        created_by=row.created_by,
        possible_duplicate_of=list(row.possible_duplicate_of),
        etag=_etag(row),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _answer(
    row: repository.StoredOrder,
    response: Response | None = None,
    document: OrderDocument | None = None,
) -> Order:
    """The order; its ETag on the response too."""
    order = _order(row, document)
    if response is not None:
        response.headers["ETag"] = order.etag
    return order


async def _load(pool: Pool, order_id: UUID, response: Response | None = None) -> Order:
    """The order as it is now (after a change); its ETag on the response too."""
    row = await repository.get_order(pool, order_id=order_id)
    if row is None:
        raise order_not_found(order_id)
    return _answer(row, response)


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


PROBLEMS: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    **RESPONSES,
    404: {"model": ProblemDetails, "description": "No such order, or not one the caller may see"},
    409: {
        "model": ProblemDetails,
        "description": "Not allowed in the order's current state, or the order changed since "
        "it was read (If-Match); the current revision and ETag are in the body. A revision "
        "of an order under review waits for the departments' decision to reach intake "
        "(`INTAKE_REVISION_DECISION_WAIT`); when it does not in time, 409 "
        "`urn:orderflow:problem:decision-pending` with Retry-After: send the same request "
        "again",
    },
}
IF_MATCH_DOC = (
    "The order's ETag as last read; a change made since is refused with 409 and the "
    "current revision, never overwritten"
)
IfMatchOptional = Annotated[str | None, Header(alias="If-Match", description=IF_MATCH_DOC)]

PreferWait = Annotated[
    str | None,
    Header(
        alias="Prefer",
        max_length=200,
        description="`wait=<seconds>` (RFC 7240): wait at most this long for the departments' "
        "decision to reach intake, when shorter than the service's setting",
    ),
]
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,6})\"?", re.IGNORECASE)


def decision_wait(setting: float, prefer: str | None) -> float:
    """The service's bound, or the caller's `Prefer: wait=` when shorter."""
    found = _PREFER_WAIT.search(prefer or "")
    return min(setting, float(found.group(1))) if found else setting


router = APIRouter(prefix="/api/v1", tags=["orders"], responses=PROBLEMS)

#: The order document, read by the route itself (not by the framework), so that a type
#: error and the rules the rest of the document breaks are answered together.
ORDER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OrderDocument"}}},
    }
}


def _invalid_body(detail: str) -> Problem:
    return Problem(
        422,
        "Invalid request",
        detail,
        type_="urn:orderflow:problem:invalid-request",
        errors=[FieldProblem(pointer="/", detail=detail)],
    )


async def _json_body(request: Request) -> Any:
    """The JSON body as it arrived, not yet checked against the order document."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise _invalid_body(f"the body must be JSON (application/json), not {media}")
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _invalid_body(f"the body is not JSON: {exc}") from exc


@router.post(
    "/orders",
    status_code=201,
    response_model=Order,
    openapi_extra=ORDER_BODY,
    responses={
        403: {"model": ProblemDetails, "description": "Not the caller's salesperson"},
        429: {"model": ProblemDetails, "description": "Too many orders created by this caller"},
    },
)
async def create_order(
    request: Request,
    response: Response,
    caller: Writer,
    pool: Db,
    today: Today,
    submit: Annotated[
        bool,
        Query(
            description="Self-check and submit at once, by the same rules as "
            "POST /orders/{id}/submit (an order that needs a file is refused: save it as a "
            "draft, upload, submit); nothing is stored on problems"
        ),
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
    """Create an order as a draft, or submit it at once with `submit=true`. A salesperson
    places their own orders, a sales manager their own and their team's (403 naming
    /salesperson/id otherwise); `orders:write` anyone's. Each caller may create
    `ORDERFLOW_AUTH_ORDER_CREATE_RATE` orders (429 beyond). A refusal (422) lists every
    problem at once: fields of the wrong type and, with `submit=true`, the self-check's."""
    # a refusal (the type errors and, to submit at once, the self-check's) is 422
    document = handlers.parsed_document(await _json_body(request), today=today, submit=submit)
    check_salesperson(caller, document.salesperson.id)
    limit = request.app.state.auth_settings.order_create_rate
    enforce("order creation", limit, caller.id, limiter=request.app.state.rate_limiter)
    async with transaction(pool) as conn:
        outcome = await handlers.create_order(
            conn,
            document=document,
            channel=handlers.API,
            submit=submit,
            today=today,
            actor=caller.audit(),
            idempotency_key=idempotency_key,
        )
        # read back on the same connection, as it commits: no second trip to the pool
        row = await repository.get_order(conn, order_id=outcome.order_id)
    if row is None:
        raise order_not_found(outcome.order_id)
    if not outcome.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = str(
        request.app.url_path_for("get_order", order_id=str(outcome.order_id))
    )
    # a new order's revision 1 is the document just parsed; a replay's may have moved on
    return _answer(row, response, document if outcome.created else None)


@router.get("/orders", response_model=OrderPage)
async def list_orders(
    caller: Lister,
    pool: Db,
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
    """Orders, newest first, with the total matching the filters: a salesperson's own, a
    sales manager's own and their team's, every order for `orders:read` and `orders:write`."""
    among = caller.sees_team()
    if among is not None and salesperson is not None and salesperson not in among:
        return OrderPage(items=[], total=0, limit=limit, offset=offset)
    rows, total = await repository.list_orders(
        pool,
        status=status.value if status else None,
        salesperson_id=salesperson,
        external_ref=external_ref,
        duplicate=duplicate,
        limit=limit,
        offset=offset,
        among=among,
    )
    return OrderPage(
        items=[OrderSummary.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/orders/{order_id}", response_model=Order)
async def get_order(response: Response, orders: ReadOrders, order_id: OrderId) -> Order:
    """The order: status, current revision, document, totals, the departments' feedback;
    its ETag in the header. For its salesperson's side, and reviewers once submitted."""
    return _answer((await orders.readable(order_id)).order, response)


#: `If-Match` on `PUT /orders/{id}`, as the OpenAPI document states it: required. It is read
#: from the request by hand (not as a FastAPI header parameter), so a missing one is answered
#: with the 428 problem of `if_match_required`, not with a 422 validation error.
IF_MATCH_REQUIRED: dict[str, Any] = {
    "name": "If-Match",
    "in": "header",
    "required": True,
    "description": f"{IF_MATCH_DOC}. Missing (or `*`): 428 "
    "`urn:orderflow:problem:precondition-required`",
    "schema": {"type": "string", "title": "If-Match", "example": '"r1.1"'},
}


@router.put(
    "/orders/{order_id}",
    response_model=Order,
    openapi_extra={**ORDER_BODY, "parameters": [IF_MATCH_REQUIRED]},
    responses={428: {"model": ProblemDetails, "description": "If-Match missing, empty or `*`"}},
)
async def update_order(
    request: Request,
    response: Response,
    orders: WriteOrders,
    order_id: OrderId,
    pool: Db,
    today: Today,
    prefer: PreferWait = None,
) -> Order:
    """Replace the document of a draft, or revise an order sent back (a new revision). The
    new document's salesperson must be one the caller may act for. Sent while the order is
    still under review here (the departments' decision may be on its way), the revision
    waits for the decision, up to `INTAKE_REVISION_DECISION_WAIT` seconds (or the
    `Prefer: wait=` given, if shorter); then 409 with Retry-After."""
    document = handlers.parsed_document(await _json_body(request), today=today, submit=False)
    expected = if_match_required(request.headers.get("If-Match"))
    access = await orders.writable(order_id)
    check_salesperson(access.caller, document.salesperson.id)
    wait = decision_wait(request.app.state.settings.revision_decision_wait, prefer)

    async def attempt() -> None:
        async with transaction(pool) as conn:
            await handlers.update_order(
                conn,
                order_id=order_id,
                document=document,
                channel=handlers.API,
                if_match=expected,
                actor=access.actor,
                permits=access.permits,
            )

    # under review, the departments' decision may be on its way: waited for, bounded
    await handlers.when_decided(
        pool,
        order_id=order_id,
        seconds=wait,
        attempt=attempt,
    )
    return await _load(pool, order_id, response)


@router.post("/orders/{order_id}/submit", response_model=Order)
async def submit_order(
    response: Response,
    orders: WriteOrders,
    order_id: OrderId,
    pool: Db,
    today: Today,
    if_match: IfMatchOptional = None,
) -> Order:
    """Self-check the current revision with its files and send it to review; 422 lists
    every problem."""
    access = await orders.writable(order_id)
    async with transaction(pool) as conn:
        await handlers.submit_order(
            conn,
            order_id=order_id,
            channel=handlers.API,
            today=today,
            actor=access.actor,
            if_match=if_match,
            permits=access.permits,
        )
    return await _load(pool, order_id, response)


@router.post(
    "/orders/{order_id}/withdraw",
    response_model=Order,
    status_code=202,
    responses={
        409: {
            "model": ProblemDetails,
            "description": "The order is approved (or further), or withdrawn already",
        }
    },
)
async def withdraw_order(
    response: Response,
    orders: WriteOrders,
    order_id: OrderId,
    pool: Db,
    withdrawal: Annotated[Withdrawal | None, Body()] = None,
    if_match: IfMatchOptional = None,
) -> Order:
    """Ask to withdraw the order before it is approved: 202 with status
    `withdrawal_requested`. The review-router decides it against the review's decision:
    the order becomes `withdrawn` (the departments still reviewing are told to stop), or,
    when the approval came first, goes back to `approved` with `withdrawal.outcome`
    `refused` and the reason; the timeline shows which. Asking again while the answer is
    pending answers 202 again and changes nothing. 409 once it is approved or withdrawn."""
    access = await orders.writable(order_id)
    async with transaction(pool) as conn:
        await handlers.withdraw_order(
            conn,
            order_id=order_id,
            reason=withdrawal.reason if withdrawal else None,
            actor=access.actor,
            if_match=if_match,
            permits=access.permits,
        )
    return await _load(pool, order_id, response)


RevisionNumber = Annotated[
    int, Path(ge=1, le=limits.MAX_REVISION, description="A revision number, from 1")
]


@router.get("/orders/{order_id}/revisions", response_model=RevisionList)
async def list_revisions(orders: ReadOrders, order_id: OrderId, pool: Db) -> RevisionList:
    """Every revision of the order, oldest first: when it was made and submitted."""
    access = await orders.readable(order_id)
    rows = await repository.list_revisions(pool, order_id=order_id)
    return RevisionList(
        order_id=order_id,
        current_revision=access.order.current_revision,
        items=[RevisionSummary.model_validate(r) for r in rows],
    )


@router.get("/orders/{order_id}/revisions/{revision}", response_model=Revision)
async def get_revision(
    orders: ReadOrders, order_id: OrderId, revision: RevisionNumber, pool: Db
) -> Revision:
    """One revision of the order with its files, exactly as it was stored (and, once
    submitted, reviewed)."""
    await orders.readable(order_id)
    row = await handlers.revision_with_files(pool, order_id=order_id, revision=revision)
    return Revision.model_validate(row)


@router.get("/orders/{order_id}/revisions/{from_revision}/diff/{to_revision}")
async def diff_revisions(
    orders: ReadOrders,
    pool: Db,
    order_id: OrderId,
    from_revision: RevisionNumber,
    to_revision: RevisionNumber,
) -> RevisionDiff:
    """What changed from one revision to another, field by field (JSON pointer, old, new)."""
    await orders.readable(order_id)
    changes = await handlers.revision_diff(
        pool, order_id=order_id, old=from_revision, new=to_revision
    )
    return RevisionDiff(
        order_id=order_id, from_revision=from_revision, to_revision=to_revision, changes=changes
    )


@router.get("/orders/{order_id}/timeline")
async def get_timeline(orders: ReadOrders, order_id: OrderId, pool: Db) -> Timeline:
    """Everything that happened to the order, in order, with who and when: its creation,
    edits and files, submissions, review rounds, each verdict, decisions, the contract,
    notifications, withdrawal. Intake's own actions name the signed-in caller (or the
    broker user of a command) with how they signed in and their address."""
    await orders.readable(order_id)
    entries = await handlers.timeline(pool, order_id=order_id)
    return Timeline(order_id=order_id, items=[TimelineEntry.model_validate(e) for e in entries])
