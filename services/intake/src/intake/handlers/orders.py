"""Orders created, edited, submitted and withdrawn, in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from uuid import UUID

import structlog

from orderflow import times
from orderflow.db import Connection
from orderflow.messages import (
    AttachmentRef,
    FieldChange,
    OrderDocument,
    OrderSubmitted,
    OrderWithdrawalRequested,
    Salesperson,
    Totals,
)

from .. import domain
from ..adapters import repository
from ..adapters.blobs import BlobStore
from ..adapters.order_store import OrderStore, PostgresOrderStore
from ..domain import Status
from .common import (
    Actor,
    IdempotencyKeyReused,
    Outcome,
    Permits,
    attachment_ref,
    document_json,
    files_of,
    fingerprint,
    run_self_check,
    salesperson_of,
    totals_json,
)
from .files import NewFile, pending_refs, store_files
from .projection import apply_pending_events
from .revisions import locked_order

log = structlog.get_logger(__name__)


def _orders(conn: Connection, orders: OrderStore | None) -> OrderStore:
    # the handlers' callers pass a connection; the unit tests pass a fake store
    return orders if orders is not None else PostgresOrderStore(conn)


async def _changes_since_submitted(
    orders: OrderStore,
    *,
    order_id: UUID,
    revision: int,
    document: OrderDocument,
    attachments: list[AttachmentRef],
) -> tuple[int | None, list[FieldChange]]:
    """The revision submitted before this one (None for the first) and what changed since."""
    if revision <= 1:
        return None, []
    previous = await orders.previous_submitted(order_id, before=revision)
    if previous is None:
        return None, []
    before = await orders.get_revision(order_id, previous)
    assert before is not None
    old_files = await orders.revision_attachments(order_id, previous)
    return previous, domain.revision_changes(
        old_document=before["document"],
        old_attachments=[attachment_ref(r) for r in old_files],
        new_document=document_json(document),
        new_attachments=attachments,
    )


async def submit_revision(
    conn: Connection,
    *,
    order_id: UUID,
    revision: int,
    document: OrderDocument,
    attachments: list[AttachmentRef],
    channel: str,
    actor: Actor,
    created: bool = False,
    orders: OrderStore | None = None,
) -> None:
    """Freeze a revision that passed the self-check, files included, and announce it to the
    departments with what changed since the revision submitted before it."""
    orders = _orders(conn, orders)
    now = datetime.now(UTC)
    previous, changes = await _changes_since_submitted(
        orders, order_id=order_id, revision=revision, document=document, attachments=attachments
    )
    message_id = await orders.publish_event(
        OrderSubmitted(
            order_id=order_id,
            revision=revision,
            order=document,
            totals=Totals.of(document),
            channel=channel,
            submitted_at=now,
            attachments=attachments,
            previous_revision=previous,
            changes=changes,
        ),
        correlation_id=order_id,
    )
    # frozen, and who caused its order.submitted, in one round trip
    await orders.mark_submitted_by(
        order_id,
        revision,
        submitted_at=now,
        message_id=message_id,
        actor=actor,
    )
    # one line per order: an order created and submitted at once says so here
    log.info(
        "order created and submitted" if created else "order submitted",
        order_id=str(order_id),
        revision=revision,
        channel=channel,
        files=len(attachments),
        changes=len(changes),
    )


async def _duplicates_of(
    conn: Connection,
    *,
    order_id: UUID,
    document: OrderDocument,
    created_before: datetime | None = None,
    creating: bool = False,
    orders: OrderStore | None = None,
) -> tuple[str | None, list[UUID]]:
    """The order's duplicate key and the other orders with it, under the key's lock;
    `creating`: the new order's id is locked in the same round trip (`lock_for_creation`)."""
    orders = _orders(conn, orders)
    key = domain.duplicate_key(
        customer_name=document.customer.name, external_ref=document.external_ref
    )
    if creating:
        await orders.lock_for_creation(order_id, key)
    if key is None:
        return None, []
    if not creating:
        await orders.lock_duplicate_key(key)
    found = await orders.find_duplicates(key, exclude=order_id, created_before=created_before)
    if found:
        log.info(
            "possible duplicate",
            order_id=str(order_id),
            external_ref=document.external_ref,
            of=[str(i) for i in found],
        )
    return key, found


async def _replayed(conn: Connection, key: str, request: str, *, order_id: UUID) -> Outcome | None:
    """The order an earlier request with this Idempotency-Key created (None: the key is
    claimed now, for `order_id`); IdempotencyKeyReused when that request was another."""
    if await repository.claim_idempotency_key(
        conn, key=key, fingerprint=request, order_id=order_id
    ):
        return None
    earlier = await repository.find_idempotency_key(conn, key=key)
    assert earlier is not None  # the claim lost to a committed row
    if earlier["fingerprint"] != request:
        raise IdempotencyKeyReused(key, earlier["order_id"])
    order = await repository.get_order(conn, order_id=earlier["order_id"])
    assert order is not None
    return Outcome(
        order_id=order.id,
        revision=order.current_revision,
        status=Status(order.status),
        created=False,
        possible_duplicate_of=list(order.possible_duplicate_of),
    )


async def _insert_draft(
    orders: OrderStore,
    *,
    order_id: UUID,
    document: OrderDocument,
    channel: str,
    actor: Actor,
    key: str | None,
    duplicates: list[UUID],
    submit: bool,
    now: datetime,
) -> None:
    """The order's row, its revision 1 and the timeline's `order.created`, in one
    statement."""
    await orders.insert_draft(
        order_id=order_id,
        salesperson_id=document.salesperson.id,
        external_ref=document.external_ref,
        customer_name=document.customer.name,
        channel=channel,
        duplicate_key=key,
        possible_duplicate_of=duplicates,
        created_by=actor,
        document=document_json(document),
        totals=totals_json(document),
        activity={
            "channel": channel,
            "submit": submit,
            "salesperson": salesperson_of(document),
            "possible_duplicate_of": [str(d) for d in duplicates],
        },
        occurred_at=now,
    )


# Longer than 60 lines: one transaction's steps in the order they must happen (claim the
# key, check, lock, insert, store files, submit, apply kept events), read top to bottom.
async def create_order(
    conn: Connection,
    *,
    document: OrderDocument,
    channel: str,
    submit: bool,
    today: date,
    actor: Actor,
    idempotency_key: str | None = None,
    files: Sequence[NewFile] = (),
    store: BlobStore | None = None,
    orders: OrderStore | None = None,
) -> Outcome:
    """A new order (revision 1), as a draft or submitted at once; `files` (fetched for an
    `order.submit`, checked) are stored with revision 1 before it is submitted."""
    orders = _orders(conn, orders)
    order_id = uuid.uuid4()
    if idempotency_key is not None:
        replayed = await _replayed(
            conn, idempotency_key, fingerprint(document, submit=submit), order_id=order_id
        )
        if replayed is not None:
            return replayed
    if submit:
        # checked before anything is written, so a refused order leaves nothing behind;
        # created and submitted in one step, it has no files: the rules that need one
        # refuse it as they would refuse a draft without them (or with only the files the
        # command named by URL)
        run_self_check(document, today=today, attachments=pending_refs(order_id, files))
    now = datetime.now(UTC)
    key, duplicates = await _duplicates_of(
        conn, order_id=order_id, document=document, creating=True, orders=orders
    )
    await _insert_draft(
        orders,
        order_id=order_id,
        document=document,
        channel=channel,
        actor=actor,
        key=key,
        duplicates=duplicates,
        submit=submit,
        now=now,
    )
    stored: list[AttachmentRef] = []
    if files:
        assert store is not None, "files are stored in a blob store"
        stored = await store_files(
            conn, store, order_id=order_id, revision=1, files=files, document=document, actor=actor
        )
    if submit:
        await submit_revision(
            conn,
            order_id=order_id,
            revision=1,
            document=document,
            attachments=stored,
            channel=channel,
            actor=actor,
            created=True,
            orders=orders,
        )
    # made in this transaction at revision 1: read again only if events were kept for it
    await apply_pending_events(conn, order_id=order_id, revision=1, store=orders.projection)
    if not submit:  # a submitted one was logged as created and submitted
        log.info("order created", order_id=str(order_id), channel=channel, submitted=False)
    return Outcome(
        order_id=order_id,
        revision=1,
        status=Status.SUBMITTED if submit else Status.DRAFT,
        possible_duplicate_of=duplicates,
    )


async def _recheck_duplicates(
    conn: Connection, *, order: repository.LockedOrder, document: OrderDocument
) -> None:
    """An edit that changed the order's reference: its possible duplicates found again."""
    key = domain.duplicate_key(
        customer_name=document.customer.name, external_ref=document.external_ref
    )
    if key == order.duplicate_key:
        return
    # another reference: compared with the orders that came before this one only, so
    # the later of two orders is the one marked, whichever was edited
    key, duplicates = await _duplicates_of(
        conn, order_id=order.id, document=document, created_before=order.created_at
    )
    await repository.set_duplicates(
        conn, order_id=order.id, key=key, possible_duplicate_of=duplicates
    )


async def write_revision(
    conn: Connection,
    *,
    order: repository.LockedOrder,
    document: OrderDocument,
    channel: str,
    actor: Actor,
) -> int:
    target = domain.edit_target(
        status=Status(order.status),
        current_revision=order.current_revision,
        submitted=order.current_submitted,
    )
    write = repository.replace_revision if target.replace else repository.insert_revision
    await write(
        conn,
        order_id=order.id,
        revision=target.revision,
        document=document_json(document),
        totals=totals_json(document),
        channel=channel,
    )
    if not target.replace:
        await repository.copy_attachments(
            conn,
            order_id=order.id,
            from_revision=order.current_revision,
            to_revision=target.revision,
        )
    await repository.update_header(
        conn,
        order_id=order.id,
        current_revision=target.revision,
        salesperson_id=document.salesperson.id,
        external_ref=document.external_ref,
        customer_name=document.customer.name,
    )
    if not target.replace:
        await apply_pending_events(conn, order_id=order.id)
    await _recheck_duplicates(conn, order=order, document=document)
    await repository.add_activity(
        conn,
        order_id=order.id,
        activity="order.revised",
        revision=target.revision,
        payload={
            "revision": target.revision,
            "new_revision": not target.replace,
            "channel": channel,
            "salesperson": salesperson_of(document),
        },
        occurred_at=datetime.now(UTC),
        actor=actor,
    )
    return target.revision


async def update_order(
    conn: Connection,
    *,
    order_id: UUID,
    document: OrderDocument,
    channel: str,
    if_match: str | None,
    actor: Actor,
    permits: Permits | None = None,
) -> Outcome:
    """Edit a draft, or revise an order the departments sent back (a new revision)."""
    order = await locked_order(conn, order_id, if_match=if_match, permits=permits)
    # under review, the departments may have sent it back without intake having heard yet
    domain.check_decided(Status(order.status), current_revision=order.current_revision)
    revision = await write_revision(
        conn, order=order, document=document, channel=channel, actor=actor
    )
    return Outcome(order_id=order_id, revision=revision, status=Status(order.status))


async def submit_order(
    conn: Connection,
    *,
    order_id: UUID,
    channel: str,
    today: date,
    actor: Actor,
    if_match: str | None = None,
    permits: Permits | None = None,
) -> Outcome:
    """Self-check the current revision with its files and send it to review."""
    order = await locked_order(conn, order_id, if_match=if_match, permits=permits)
    domain.check_submittable(
        status=Status(order.status),
        current_revision=order.current_revision,
        submitted=order.current_submitted,
    )
    revision = order.current_revision
    stored = await repository.get_revision(conn, order_id=order_id, revision=revision)
    assert stored is not None
    files = await files_of(conn, order_id, revision)
    checked = domain.check_document(stored["document"], today=today, attachments=files)
    checked.refuse()
    document = checked.document
    assert document is not None
    await submit_revision(
        conn,
        order_id=order_id,
        revision=revision,
        document=document,
        attachments=files,
        channel=channel,
        actor=actor,
    )
    return Outcome(order_id=order_id, revision=revision, status=Status.SUBMITTED)


async def withdraw_order(
    conn: Connection,
    *,
    order_id: UUID,
    reason: str | None,
    actor: Actor,
    if_match: str | None = None,
    permits: Permits | None = None,
    orders: OrderStore | None = None,
) -> Outcome:
    """Ask for the order to be withdrawn before approval. The review-router decides it
    against the round's decision, under one lock, and answers `order.withdrawn` or
    `order.withdrawal_refused`; until then the order is `withdrawal_requested`. Asking
    again meanwhile changes nothing."""
    orders = _orders(conn, orders)
    order = await locked_order(conn, order_id, if_match=if_match, permits=permits, orders=orders)
    status = Status(order.status)
    revision = order.current_revision
    if domain.withdrawal_pending(status):
        log.info("withdrawal already requested", order_id=str(order_id))
        return Outcome(order_id=order_id, revision=revision, status=status)
    domain.check_withdrawable(status)
    now = datetime.now(UTC)
    stored = await orders.get_revision(order_id, revision)
    assert stored is not None
    await orders.request_withdrawal(
        order_id,
        held_status=status.value,
        withdrawal={
            "requested_at": times.format_time(now),
            "requested_by": actor,
            "reason": reason,
            "outcome": "pending",
        },
        at=now,
    )
    message_id = await orders.publish_event(
        OrderWithdrawalRequested(
            order_id=order_id,
            revision=revision,
            reason=reason,
            requested_by=actor["id"],
            requested_at=now,
            salesperson=Salesperson.model_validate(stored["document"]["salesperson"]),
        ),
        correlation_id=order_id,
    )
    await orders.record_publisher(message_id, actor)
    log.info("withdrawal requested", order_id=str(order_id), status=status.value)
    return Outcome(order_id=order_id, revision=revision, status=Status.WITHDRAWAL_REQUESTED)
