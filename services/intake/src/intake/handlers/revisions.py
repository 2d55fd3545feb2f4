"""The order under its lock, and the revision an edit goes to."""

from __future__ import annotations

from uuid import UUID

from orderflow.db import Connection

from .. import domain
from ..adapters import repository
from ..adapters.order_store import OrderStore
from ..domain import Status
from .common import NotPermitted, OrderNotFound, Permits
from .projection import apply_pending_events


async def locked_order(
    conn: Connection,
    order_id: UUID,
    *,
    if_match: str | None = None,
    permits: Permits | None = None,
    orders: OrderStore | None = None,
) -> repository.LockedOrder:
    order = await (
        orders.lock_order(order_id)
        if orders is not None
        else repository.lock_order(conn, order_id=order_id)
    )
    if order is None:
        raise OrderNotFound(order_id)
    if permits is not None and not permits(order.salesperson_id):
        raise NotPermitted(order_id)
    # compared under the lock, so two writers with the same ETag cannot both pass
    domain.check_version(if_match, revision=order.current_revision, version=order.version)
    return order


async def open_draft(conn: Connection, *, order: repository.LockedOrder, channel: str) -> int:
    """The revision that takes a file: the open one, or a new one made from the revision
    the departments sent back (its document and files), which stays as they reviewed it."""
    target = domain.edit_target(
        status=Status(order.status),
        current_revision=order.current_revision,
        submitted=order.current_submitted,
    )
    if target.replace:
        return target.revision
    reviewed = await repository.get_revision(
        conn, order_id=order.id, revision=order.current_revision
    )
    assert reviewed is not None
    await repository.insert_revision(
        conn,
        order_id=order.id,
        revision=target.revision,
        document=reviewed["document"],
        totals=reviewed["totals"],
        channel=channel,
    )
    await repository.copy_attachments(
        conn,
        order_id=order.id,
        from_revision=order.current_revision,
        to_revision=target.revision,
    )
    await repository.set_current_revision(conn, order_id=order.id, revision=target.revision)
    await apply_pending_events(conn, order_id=order.id)
    return target.revision
