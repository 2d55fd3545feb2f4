"""The in-app inbox, and deliveries for operators, over HTTP.

An inbox is its recipient's alone: another person asking for it gets the 404 of an empty
address, a system with notifications:read may read any inbox but mark none read. Deliveries
(every channel, with addresses and errors) are for ops."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from orderflow import limits
from orderflow.auth import AUTH_RESPONSES, Caller, CallerDep, forbidden, require
from orderflow.auth.identity import NOTIFICATIONS_READ, OPS
from orderflow.db import Pool
from orderflow.http import PROBLEM_RESPONSES, Problem, problem_response
from orderflow.messages.base import Timestamp

from .. import handlers, records
from ..adapters import repository

Status = Literal["pending", "sending", "delivered", "failed"]


class Notification(BaseModel):
    id: UUID
    event_type: str
    order_id: UUID | None
    title: str = Field(description="The event's label, the same in every language")
    subject: str = Field(description="The headline, in the person's language")
    body: str
    link: str = Field(description="The order in the console")
    language: str
    data: dict[str, Any]
    created_at: Timestamp
    read_at: Timestamp | None


class InboxPage(BaseModel):
    items: list[Notification]
    total: int
    unread: int
    limit: int
    offset: int


class UnreadCount(BaseModel):
    total: int
    unread: int


class MarkedRead(BaseModel):
    marked: int = Field(description="How many were unread and are now read")


class Delivery(BaseModel):
    id: UUID
    event_id: str
    event_type: str
    recipient: str
    channel: str = Field(description="inbox, email or webhook:<robot>")
    address: str | None = Field(description="The email address or the robot's name")
    order_id: UUID | None
    subject: str
    link: str
    language: str
    status: Status
    attempts: int
    next_attempt_at: Timestamp | None = Field(description="When pending: when it is next tried")
    last_error: str | None
    created_at: Timestamp
    updated_at: Timestamp
    delivered_at: Timestamp | None
    failed_at: Timestamp | None

    @classmethod
    def of(cls, delivery: records.Delivery) -> Delivery:
        # when it is next tried means something only while it waits
        next_attempt_at = delivery.next_attempt_at if delivery.waiting else None
        return cls.model_validate({**vars(delivery), "next_attempt_at": next_attempt_at})


class DeliveryPage(BaseModel):
    items: list[Delivery]
    total: int
    limit: int
    offset: int


def database(request: Request) -> Pool:
    """The service's database pool, opened by the runtime's lifespan."""
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


PoolDep = Annotated[Pool, Depends(database)]

router = APIRouter(prefix="/api/v1", responses={**PROBLEM_RESPONSES, **AUTH_RESPONSES})


def install(app: FastAPI) -> None:
    """The routes, and the answers to the handlers' refusals, once for the whole app."""
    app.include_router(router)

    @app.exception_handler(handlers.NotRetriable)
    async def _not_retriable(request: Request, exc: handlers.NotRetriable) -> JSONResponse:
        problem = Problem(
            409,
            "Delivery is not failed",
            f"{exc.delivery_id} is {exc.status}; only a failed delivery can be retried",
            type_="urn:orderflow:problem:not-retriable",
        )
        return problem_response(problem, request)


def _delivery_not_found(delivery_id: UUID) -> Problem:
    return Problem(404, "Delivery not found", str(delivery_id))


Recipient = Annotated[str, Path(min_length=1, max_length=100)]
Operator = Annotated[Caller, Depends(require(OPS))]


def _inbox_not_found(recipient: str) -> Problem:
    return Problem(
        404, "Inbox not found", f"no inbox {recipient}", type_="urn:orderflow:problem:not-found"
    )


def _reader(caller: CallerDep, recipient: Recipient) -> Caller:
    """Any person may ask (for their own inbox); a system needs notifications:read."""
    if caller.kind == "system" and not caller.has(NOTIFICATIONS_READ):
        raise forbidden(f"reading inboxes needs the scope {NOTIFICATIONS_READ}")
    if caller.kind == "person" and recipient != caller.id:
        raise _inbox_not_found(recipient)
    return caller


def _owner(caller: CallerDep, recipient: Recipient) -> Caller:
    """Only the recipient marks their notifications read."""
    if caller.kind == "system":
        raise forbidden("only the recipient marks notifications read")
    if recipient != caller.id:
        raise _inbox_not_found(recipient)
    return caller


InboxReader = Annotated[Caller, Depends(_reader)]
InboxOwner = Annotated[Caller, Depends(_owner)]


@router.get("/inbox/{recipient}", tags=["inbox"])
async def list_inbox(
    pool: PoolDep,
    caller: InboxReader,
    recipient: Recipient,
    unread: Annotated[bool, Query(description="Only unread notifications")] = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
) -> InboxPage:
    """A person's in-app notifications, newest first, with the unread count."""
    rows, total, unread_count = await repository.inbox(
        pool, recipient=recipient, unread_only=unread, limit=limit, offset=offset
    )
    return InboxPage(
        items=[Notification.model_validate(item, from_attributes=True) for item in rows],
        total=total,
        unread=unread_count,
        limit=limit,
        offset=offset,
    )


@router.get("/inbox/{recipient}/unread", tags=["inbox"])
async def unread_count(pool: PoolDep, caller: InboxReader, recipient: Recipient) -> UnreadCount:
    """How many in-app notifications a person has, and how many are unread (for a badge)."""
    total, unread = await repository.counts(pool, recipient=recipient)
    return UnreadCount(total=total, unread=unread)


@router.post("/inbox/{recipient}/read", tags=["inbox"])
async def mark_all_read(pool: PoolDep, caller: InboxOwner, recipient: Recipient) -> MarkedRead:
    """Mark every notification of a person read."""
    return MarkedRead(marked=await repository.mark_all_read(pool, recipient=recipient))


@router.post("/inbox/{recipient}/{notification_id}/read", status_code=204, tags=["inbox"])
async def mark_read(
    pool: PoolDep, caller: InboxOwner, recipient: Recipient, notification_id: UUID
) -> None:
    """Mark one notification read."""
    if not await repository.mark_read(pool, recipient=recipient, notification_id=notification_id):
        raise Problem(404, "Notification not found", f"{notification_id} for {recipient}")


@router.get("/deliveries", tags=["deliveries"])
async def list_deliveries(
    pool: PoolDep,
    caller: Operator,
    status: Annotated[Status | None, Query(description="e.g. failed")] = None,
    channel: Annotated[str | None, Query(max_length=100)] = None,
    recipient: Annotated[str | None, Query(max_length=100)] = None,
    order_id: UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
) -> DeliveryPage:
    """Deliveries on every channel, newest first; `status=failed` lists those to look at."""
    rows, total = await repository.deliveries(
        pool,
        status=status,
        channel=channel,
        recipient=recipient,
        order_id=order_id,
        limit=limit,
        offset=offset,
    )
    return DeliveryPage(
        items=[Delivery.of(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/deliveries/{delivery_id}", tags=["deliveries"])
async def get_delivery(pool: PoolDep, caller: Operator, delivery_id: UUID) -> Delivery:
    """One delivery, with its attempts and last error."""
    found = await repository.delivery(pool, delivery_id=delivery_id)
    if found is None:
        raise _delivery_not_found(delivery_id)
    return Delivery.of(found)


@router.post("/deliveries/{delivery_id}/retry", status_code=202, tags=["deliveries"])
async def retry_delivery(pool: PoolDep, caller: Operator, delivery_id: UUID) -> Delivery:
    """Send a failed delivery again, now, with a fresh set of attempts."""
    # one that is not failed is answered 409 by the handler `install` registers
    retried = await handlers.retry_delivery(pool, delivery_id=delivery_id)
    if retried is None:
        raise _delivery_not_found(delivery_id)
    return Delivery.of(retried)
