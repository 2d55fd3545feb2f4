"""Who may do what with orders over HTTP: the roles each kind of route needs (checked
before anything else), and the order a route works on, loaded once the caller may see it
(404 otherwise, the answer for a missing order) or change it (403). Routes take
`ReadOrders` or `WriteOrders` and never look an order up themselves.

The order is loaded by the route (`await orders.readable(order_id)`), not by a dependency:
FastAPI validates a route's own parameters after its dependencies ran, and bad input
(422) must be answered before the order is looked for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Path, Request

from orderflow.auth import Caller, forbidden, require
from orderflow.auth.identity import (
    ORDERS_READ,
    ORDERS_WRITE,
    SALES_MANAGER,
    SALESPERSON,
    reviewer,
)
from orderflow.db import Pool
from orderflow.http import Problem, ProblemDetails
from orderflow.messages import Problem as FieldProblem

from ..adapters import repository
from ..handlers import Actor

ANY_REVIEWER = reviewer("*")
#: Read one order and what belongs to it (revisions, diff, timeline, files).
READ_ROLES = (SALESPERSON, SALES_MANAGER, ORDERS_READ, ORDERS_WRITE, ANY_REVIEWER)
#: List orders (reviewers find theirs through the review-router).
LIST_ROLES = (SALESPERSON, SALES_MANAGER, ORDERS_READ, ORDERS_WRITE)
#: Create, change, submit, withdraw, import, attach.
WRITE_ROLES = (SALESPERSON, SALES_MANAGER, ORDERS_WRITE)

Reader = Annotated[Caller, Depends(require(*READ_ROLES))]
Lister = Annotated[Caller, Depends(require(*LIST_ROLES))]
Writer = Annotated[Caller, Depends(require(*WRITE_ROLES))]

OrderId = Annotated[UUID, Path(description="The order's id (a UUID)")]

FORBIDDEN_TYPE = "urn:orderflow:problem:forbidden"
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ProblemDetails, "description": "Not signed in (no or an invalid credential)"},
    403: {
        "model": ProblemDetails,
        "description": "None of the roles this needs, or the order may be read but not changed",
    },
}


def pool(request: Request) -> Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


def business_day(request: Request) -> date:
    """Today where the business is, by the app's clock (replaceable in tests)."""
    today: Callable[[], date] = request.app.state.today
    return today()


#: The database pool, the business day: what a route needs besides the caller.
Db = Annotated[Pool, Depends(pool)]
Today = Annotated[date, Depends(business_day)]


def order_not_found(order_id: UUID) -> Problem:
    return Problem(
        404,
        "Order not found",
        f"there is no order {order_id}",
        type_="urn:orderflow:problem:order-not-found",
    )


def may_see(caller: Caller, order: repository.OrderRow) -> bool:
    """The salesperson's own side (`acts_for`), or a reviewer once the order was sent to
    review: reviewers need the order and its files to review it, never a draft."""
    if caller.acts_for(order.salesperson_id):
        return True
    return caller.has(ANY_REVIEWER) and order.submitted_revision is not None


@dataclass(frozen=True)
class Access:
    """The caller and the order (as read when the request came in) they were let at."""

    caller: Caller
    order: repository.StoredOrder

    @property
    def actor(self) -> Actor:
        return self.caller.audit()

    def permits(self, salesperson_id: str) -> bool:
        """Checked again under the order's lock: its salesperson may change meanwhile."""
        return self.caller.acts_for(salesperson_id, write=True)


@dataclass(frozen=True)
class Orders:
    """The caller's way to the order a route works on."""

    request: Request
    caller: Caller

    async def readable(self, order_id: UUID) -> Access:
        """The order, if the caller may see it; 404 otherwise."""
        row = await repository.get_order(pool(self.request), order_id=order_id)
        if row is None or not may_see(self.caller, row):
            raise order_not_found(order_id)
        return Access(self.caller, row)

    async def writable(self, order_id: UUID) -> Access:
        """The order, if the caller may change it; 404 unless they may see it, else 403."""
        access = await self.readable(order_id)
        if not self.caller.acts_for(access.order.salesperson_id, write=True):
            raise forbidden(f"you may read order {order_id} but not change it")
        return access


async def _reading(request: Request, caller: Reader) -> Orders:
    return Orders(request, caller)


async def _writing(request: Request, caller: Writer) -> Orders:
    return Orders(request, caller)


#: A caller with a role that reads orders, and their way to one.
ReadOrders = Annotated[Orders, Depends(_reading)]
#: A caller with a role that changes orders, and their way to one.
WriteOrders = Annotated[Orders, Depends(_writing)]


def salesperson_refusal(caller: Caller, salesperson_id: str) -> FieldProblem | None:
    """Why the caller may not place an order for this salesperson, naming the field."""
    if caller.acts_for(salesperson_id, write=True):
        return None
    return FieldProblem(
        pointer="/salesperson/id",
        detail=f"you may not place or change orders for salesperson {salesperson_id!r}",
    )


def check_salesperson(caller: Caller, salesperson_id: str) -> None:
    """403 naming /salesperson/id unless the caller may act for the document's salesperson."""
    refused = salesperson_refusal(caller, salesperson_id)
    if refused is not None:
        raise Problem(403, "Not allowed", refused.detail, type_=FORBIDDEN_TYPE, errors=[refused])


def not_permitted(order_id: UUID) -> Problem:
    """The order's salesperson changed between letting the request in and locking it."""
    return forbidden(f"you may not change order {order_id}: its salesperson changed")
