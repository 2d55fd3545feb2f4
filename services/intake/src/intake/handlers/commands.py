"""Another system's `order.submit`: the command, its reply, and the wait for a decision."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from typing import Any
from uuid import UUID

import structlog
from pydantic import TypeAdapter, ValidationError

from orderflow import outbox, refusals
from orderflow.db import Connection, Pool
from orderflow.messages import (
    AttachmentRef,
    OrderDocument,
    Problem,
    SubmitOrder,
    SubmitOrderReply,
)

from .. import domain
from ..adapters import repository
from ..adapters.blobs import BlobStore
from ..adapters.order_store import OrderStore, PostgresOrderStore
from ..domain import Status
from .common import BUS, Actor, Outcome, T, bus_actor, files_of, run_self_check
from .files import NewFile, check_new_ids, pending_refs, store_files
from .orders import create_order, submit_revision, write_revision
from .revisions import locked_order

_COMMAND_ID: TypeAdapter[UUID | None] = TypeAdapter(UUID | None)
#: The fields of `order.submit` that are not the order document's.
_COMMAND_FIELDS = ("order_id", "revises", "attachments")

log = structlog.get_logger(__name__)


def command_order_id(body: Any) -> UUID | None:
    """The order an `order.submit` body names, when it names one well; None otherwise."""
    try:
        return _COMMAND_ID.validate_python(body.get("order_id") if isinstance(body, dict) else None)
    except ValidationError:
        return None


async def submit_command(
    conn: Connection, *, body: Any, today: date, files: Sequence[NewFile] = ()
) -> SubmitOrder:
    """An `order.submit` body as it arrived: the command, or SelfCheckFailed with every
    problem at once, the type errors and the rules over the parts that did parse (for a
    revision, with the files of the order's current revision; with the files the command
    named by URL, when they were fetched)."""
    try:
        command = SubmitOrder.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
    else:
        await check_new_ids(conn, files)
        return command
    if not isinstance(body, dict):
        domain.check_document(body, today=today, attachments=None).refuse()
        raise AssertionError("unreachable: a body that is not an object is refused")
    invalid = [
        Problem(pointer=domain.pointer_of(e["loc"]), detail=str(e["msg"]))
        for e in errors
        if not e["loc"] or e["loc"][0] in _COMMAND_FIELDS
    ]
    document = {k: v for k, v in body.items() if k not in _COMMAND_FIELDS}
    kept: list[AttachmentRef] = []
    order_id = command_order_id(body)
    if order_id is not None:
        order = await repository.get_order(conn, order_id=order_id)
        if order is not None:
            kept = await files_of(conn, order_id, order.current_revision)
    kept += pending_refs(order_id or uuid.uuid4(), files)
    checked = domain.check_document(document, today=today, attachments=kept)
    raise domain.SelfCheckFailed(invalid + checked.problems, invalid=len(invalid) + checked.invalid)


def _check_revisable(order: repository.OrderRow, *, revises: int | None) -> None:
    """Whether a revision sent over the bus can follow the order's current revision: never
    after the decision (permanent); a conflict when another revision came first (the
    sender's `revises` is older) or while the departments are deciding (it waits)."""
    status = Status(order.status)
    if status not in domain.EDITABLE and status not in domain.DECIDING:
        raise domain.NotEditable(status)
    domain.check_revises(revises, status=status, current_revision=order.current_revision)
    domain.check_decided(status, current_revision=order.current_revision)


#: How often a waiting revision looks at the order's status: quickly at first (the decision
#: is usually a moment behind), then at most every half second.
_FIRST_LOOK = 0.02
_LONGEST_LOOK = 0.5


async def wait_for_decision(
    pool: Pool, *, order_id: UUID, pending: domain.DecisionPending, seconds: float
) -> bool:
    """Until the order leaves the state the revision found it in (the departments' decision
    reached intake, or another revision came): True, or False after `seconds`. Looks at the
    status in short steps; no connection is held in between."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    step = _FIRST_LOOK
    while True:
        state = await repository.order_state(pool, order_id=order_id)
        if domain.decision_arrived(state, status=pending.status, revision=pending.revision):
            return True
        left = deadline - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(step, left))
        step = min(step * 1.5, _LONGEST_LOOK)


async def when_decided(
    pool: Pool,
    *,
    order_id: UUID,
    seconds: float,
    attempt: Callable[[], Awaitable[T]],
) -> T:
    """Run `attempt` (which owns its transaction); while it finds the order under review,
    wait for the decision and run it again, up to `seconds` in all. Then the last
    `DecisionPending` is raised with how long was waited: a conflict, retryable."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            return await attempt()
        except domain.DecisionPending as exc:
            left = deadline - loop.time()
            if left > 0 and await wait_for_decision(
                pool, order_id=order_id, pending=exc, seconds=left
            ):
                log.info("decision arrived, revising", order_id=str(order_id))
                continue
            log.info(
                "no decision in time, revision refused as a conflict",
                order_id=str(order_id),
                status=exc.status.value,
                waited=seconds,
            )
            raise domain.DecisionPending(
                status=exc.status, revision=exc.revision, waited=seconds
            ) from exc


async def reply_conflict(
    conn: Connection,
    *,
    conflict: domain.Conflict,
    order_id: UUID | None,
    reply_to: str | None,
    correlation_id: str | None,
) -> None:
    """Tell the sender of a revision that met a conflict, through the outbox: not accepted,
    retryable, with the order's current revision and status."""
    log.info(
        "revision not accepted: conflict",
        order_id=str(order_id),
        reason=str(conflict),
        replied=bool(reply_to),
    )
    if not reply_to:
        return
    stale = isinstance(conflict, domain.StaleRevision)
    pointer = "/revises" if stale else "/order_id"
    await outbox.enqueue(
        conn,
        SubmitOrderReply(
            accepted=False,
            retryable=True,
            code=refusals.STALE_REVISION if stale else refusals.DECISION_PENDING,
            reason=f"conflict: {conflict}",
            order_id=order_id,
            revision=conflict.revision,
            status=conflict.status.value,
            problems=[Problem(pointer=pointer, detail=str(conflict))],
        ),
        exchange="",
        routing_key=reply_to,
        mandatory=False,
        correlation_id=correlation_id,
    )


async def _revise(
    conn: Connection,
    *,
    command: SubmitOrder,
    document: OrderDocument,
    today: date,
    actor: Actor,
    files: Sequence[NewFile],
    store: BlobStore | None,
    orders: OrderStore,
) -> Outcome:
    """A new revision of the order the command names, its files stored with it, submitted."""
    assert command.order_id is not None
    order = await locked_order(conn, command.order_id, orders=orders)
    _check_revisable(order, revises=command.revises)
    # the new revision keeps the files of the one it replaces or follows
    files_kept = await files_of(conn, command.order_id, order.current_revision)
    run_self_check(
        document,
        today=today,
        attachments=files_kept + pending_refs(command.order_id, files),
    )
    revision = await write_revision(conn, order=order, document=document, channel=BUS, actor=actor)
    if files:
        assert store is not None, "files are stored in a blob store"
        await store_files(
            conn,
            store,
            order_id=command.order_id,
            revision=revision,
            files=files,
            document=document,
            actor=actor,
        )
    files_now = await files_of(conn, command.order_id, revision)
    await submit_revision(
        conn,
        order_id=command.order_id,
        revision=revision,
        document=document,
        attachments=files_now,
        channel=BUS,
        actor=actor,
        orders=orders,
    )
    return Outcome(order_id=command.order_id, revision=revision, status=Status.SUBMITTED)


async def on_submit_command(
    conn: Connection,
    *,
    command: SubmitOrder,
    today: date,
    reply_to: str | None,
    correlation_id: str | None,
    user_id: str | None,
    files: Sequence[NewFile] = (),
    store: BlobStore | None = None,
    orders: OrderStore | None = None,
) -> Outcome:
    """`order.submit` from another system: a new order, or a new revision of one sent back;
    the broker user that published it is its actor. `files` are the ones the command named
    by URL, fetched and checked: stored with the revision, then self-checked with it."""
    orders = orders if orders is not None else PostgresOrderStore(conn)
    actor = bus_actor(user_id)
    document = OrderDocument.model_validate(
        command.model_dump(exclude={"order_id", "revises", "attachments"})
    )
    if command.order_id is None:
        outcome = await create_order(
            conn,
            document=document,
            channel=BUS,
            submit=True,
            today=today,
            actor=actor,
            files=files,
            store=store,
            orders=orders,
        )
    else:
        outcome = await _revise(
            conn,
            command=command,
            document=document,
            today=today,
            actor=actor,
            files=files,
            store=store,
            orders=orders,
        )
    if reply_to:
        # the sender may have gone; the order is accepted whether it hears or not
        await orders.reply(
            SubmitOrderReply(
                accepted=True,
                order_id=outcome.order_id,
                revision=outcome.revision,
                status=outcome.status.value,
            ),
            reply_to=reply_to,
            correlation_id=correlation_id,
        )
    return outcome
