"""One function per request, command or event: the order's changes and the messages they
cause, all in the caller's transaction (file uploads and bulk imports, which own their
transactions, take the pool)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import structlog
from prometheus_client import Counter, Gauge
from pydantic import TypeAdapter, ValidationError

from orderflow import outbox, refusals, times, topology
from orderflow.db import Connection, Pool, transaction
from orderflow.messages import (
    EVENTS,
    AttachmentKind,
    AttachmentRef,
    ContractDrafted,
    ContractSigned,
    FieldChange,
    Message,
    OrderApproved,
    OrderChangesRequested,
    OrderDocument,
    OrderSubmitted,
    OrderWithdrawalRefused,
    OrderWithdrawalRequested,
    OrderWithdrawn,
    Problem,
    Salesperson,
    SubmitOrder,
    SubmitOrderReply,
    Totals,
)

from . import domain
from .adapters import repository
from .adapters.blobs import BlobStore
from .domain import Status

log = structlog.get_logger(__name__)

T = TypeVar("T")

API = "api"
BUS = "bus"
IMPORT = "import"


class OrderNotFound(Exception):
    def __init__(self, order_id: UUID) -> None:
        self.order_id = order_id
        super().__init__(f"order {order_id} does not exist")


class RevisionNotFound(Exception):
    def __init__(self, order_id: UUID, revision: int) -> None:
        self.order_id = order_id
        self.revision = revision
        super().__init__(f"order {order_id} has no revision {revision}")


class AttachmentNotFound(Exception):
    def __init__(self, order_id: UUID, attachment_id: UUID, where: str = "") -> None:
        self.order_id = order_id
        self.attachment_id = attachment_id
        super().__init__(f"order {order_id} has no file {attachment_id}{where}")


class NotPermitted(Exception):
    """The caller may not change this salesperson's order (checked under the order's lock:
    its salesperson may have changed since the request was let in)."""

    def __init__(self, order_id: UUID) -> None:
        self.order_id = order_id
        super().__init__(f"you may not change order {order_id}")


#: Who did something, as the timeline keeps it: `Caller.audit()` for an HTTP request (id,
#: kind, via, source address), `bus_actor` for a command from the bus.
Actor = dict[str, Any]
#: Whether the caller may change the orders of a salesperson (by id).
Permits = Callable[[str], bool]


def bus_actor(user_id: str | None) -> Actor:
    """The broker user that published a command (RabbitMQ checks `user_id` against the
    connection's user), as a system actor."""
    return {"id": user_id or "(no user_id)", "kind": "system", "via": "amqp"}


class IdempotencyKeyReused(Exception):
    def __init__(self, key: str, order_id: UUID) -> None:
        self.key = key
        self.order_id = order_id
        super().__init__(
            f"Idempotency-Key {key!r} was already used for a different request (order "
            f"{order_id}); send the same body again, or use a new key for a new order"
        )


@dataclass(frozen=True)
class Outcome:
    order_id: UUID
    revision: int
    status: Status
    created: bool = True
    possible_duplicate_of: list[UUID] = field(default_factory=list)


def fingerprint(document: OrderDocument, *, submit: bool) -> str:
    """The request a key stands for: the parsed document (so formatting does not matter)
    and whether it was submitted at once."""
    canonical = json.dumps(
        {"document": document.model_dump(mode="json"), "submit": submit},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _document(document: OrderDocument) -> dict[str, Any]:
    return document.model_dump(mode="json")


def _totals(document: OrderDocument) -> dict[str, Any]:
    return Totals.of(document).model_dump(mode="json")


def _salesperson(document: OrderDocument | dict[str, Any]) -> dict[str, Any]:
    if isinstance(document, OrderDocument):
        return document.salesperson.model_dump(mode="json")
    return dict(document.get("salesperson") or {})


def attachment_ref(row: dict[str, Any]) -> AttachmentRef:
    return AttachmentRef(
        id=row["id"],
        name=row["name"],
        kind=AttachmentKind(row["kind"]),
        content_type=row["content_type"],
        size=row["size"],
        sha256=row["sha256"],
        download_path=domain.download_path(row["order_id"], row["id"]),
    )


async def _files(conn: Connection | Pool, order_id: UUID, revision: int) -> list[AttachmentRef]:
    rows = await repository.revision_attachments(conn, order_id=order_id, revision=revision)
    return [attachment_ref(r) for r in rows]


def _check(document: OrderDocument, *, today: date, attachments: Sequence[AttachmentRef]) -> None:
    problems = domain.self_check(document, today=today, attachments=attachments)
    if problems:
        raise domain.SelfCheckFailed(problems)


def parsed_document(raw: Any, *, today: date, submit: bool) -> OrderDocument:
    """A document as it arrived over HTTP or in an import: the order when every field has
    its type, or SelfCheckFailed with every problem at once (to be submitted at once, the
    self-check's rules over the rest too). A well-typed order's rules are checked where it
    is submitted, after the caller was found to be allowed to."""
    checked = domain.check_document(raw, today=today, attachments=[] if submit else None)
    if checked.document is None:
        checked.refuse()
    assert checked.document is not None
    return checked.document


async def _submit(
    conn: Connection,
    *,
    order_id: UUID,
    revision: int,
    document: OrderDocument,
    attachments: list[AttachmentRef],
    channel: str,
    actor: Actor,
) -> None:
    """Freeze a revision that passed the self-check, files included, and announce it to the
    departments with what changed since the revision submitted before it."""
    now = datetime.now(UTC)
    previous = None
    if revision > 1:
        previous = await repository.previous_submitted(conn, order_id=order_id, before=revision)
    changes = []
    if previous is not None:
        before = await repository.get_revision(conn, order_id=order_id, revision=previous)
        assert before is not None
        changes = domain.revision_changes(
            old_document=before["document"],
            old_attachments=await _files(conn, order_id, previous),
            new_document=_document(document),
            new_attachments=attachments,
        )
    await repository.mark_submitted(conn, order_id=order_id, revision=revision, submitted_at=now)
    message_id = await outbox.enqueue(
        conn,
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
        exchange=topology.EVENTS,
        correlation_id=order_id,
    )
    await repository.record_publisher(conn, message_id=message_id, actor=actor)
    log.info(
        "order submitted",
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
) -> tuple[str | None, list[UUID]]:
    key = domain.duplicate_key(
        customer_name=document.customer.name, external_ref=document.external_ref
    )
    if key is None:
        return None, []
    await repository.lock_duplicate_key(conn, key=key)
    found = await repository.find_duplicates(
        conn, key=key, exclude=order_id, created_before=created_before
    )
    if found:
        log.info(
            "possible duplicate",
            order_id=str(order_id),
            external_ref=document.external_ref,
            of=[str(i) for i in found],
        )
    return key, found


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
) -> Outcome:
    """A new order (revision 1), as a draft or submitted at once; `files` (fetched for an
    `order.submit`, checked) are stored with revision 1 before it is submitted."""
    order_id = uuid.uuid4()
    if idempotency_key is not None:
        request = fingerprint(document, submit=submit)
        if not await repository.claim_idempotency_key(
            conn, key=idempotency_key, fingerprint=request, order_id=order_id
        ):
            earlier = await repository.find_idempotency_key(conn, key=idempotency_key)
            assert earlier is not None  # the claim lost to a committed row
            if earlier["fingerprint"] != request:
                raise IdempotencyKeyReused(idempotency_key, earlier["order_id"])
            order = await repository.get_order(conn, order_id=earlier["order_id"])
            assert order is not None
            return Outcome(
                order_id=order["id"],
                revision=order["current_revision"],
                status=Status(order["status"]),
                created=False,
                possible_duplicate_of=list(order["possible_duplicate_of"]),
            )
    if submit:
        # checked before anything is written, so a refused order leaves nothing behind;
        # created and submitted in one step, it has no files: the rules that need one
        # refuse it as they would refuse a draft without them (or with only the files the
        # command named by URL)
        _check(document, today=today, attachments=pending_refs(order_id, files))
    now = datetime.now(UTC)
    key, duplicates = await _duplicates_of(conn, order_id=order_id, document=document)
    await repository.lock_order_id(conn, order_id=order_id)
    await repository.insert_order(
        conn,
        order_id=order_id,
        status=Status.DRAFT.value,
        salesperson_id=document.salesperson.id,
        external_ref=document.external_ref,
        customer_name=document.customer.name,
        channel=channel,
        duplicate_key=key,
        possible_duplicate_of=duplicates,
        created_by=actor,
    )
    await repository.insert_revision(
        conn,
        order_id=order_id,
        revision=1,
        document=_document(document),
        totals=_totals(document),
        channel=channel,
    )
    await repository.add_activity(
        conn,
        order_id=order_id,
        activity="order.created",
        revision=1,
        payload={
            "channel": channel,
            "submit": submit,
            "salesperson": _salesperson(document),
            "possible_duplicate_of": [str(d) for d in duplicates],
        },
        occurred_at=now,
        actor=actor,
    )
    stored: list[AttachmentRef] = []
    if files:
        assert store is not None, "files are stored in a blob store"
        stored = await store_files(
            conn, store, order_id=order_id, revision=1, files=files, document=document, actor=actor
        )
    if submit:
        await _submit(
            conn,
            order_id=order_id,
            revision=1,
            document=document,
            attachments=stored,
            channel=channel,
            actor=actor,
        )
    await apply_pending_events(conn, order_id=order_id)
    log.info("order created", order_id=str(order_id), channel=channel, submitted=submit)
    return Outcome(
        order_id=order_id,
        revision=1,
        status=Status.SUBMITTED if submit else Status.DRAFT,
        possible_duplicate_of=duplicates,
    )


async def _locked(
    conn: Connection,
    order_id: UUID,
    *,
    if_match: str | None = None,
    permits: Permits | None = None,
) -> dict[str, Any]:
    order = await repository.lock_order(conn, order_id=order_id)
    if order is None:
        raise OrderNotFound(order_id)
    if permits is not None and not permits(order["salesperson_id"]):
        raise NotPermitted(order_id)
    # compared under the lock, so two writers with the same ETag cannot both pass
    domain.check_version(if_match, revision=order["current_revision"], version=order["version"])
    return order


async def _open_draft(conn: Connection, *, order: dict[str, Any], channel: str) -> int:
    """The revision that takes a file: the open one, or a new one made from the revision
    the departments sent back (its document and files), which stays as they reviewed it."""
    target = domain.edit_target(
        status=Status(order["status"]),
        current_revision=order["current_revision"],
        submitted=order["current_submitted"],
    )
    if target.replace:
        return target.revision
    reviewed = await repository.get_revision(
        conn, order_id=order["id"], revision=order["current_revision"]
    )
    assert reviewed is not None
    await repository.insert_revision(
        conn,
        order_id=order["id"],
        revision=target.revision,
        document=reviewed["document"],
        totals=reviewed["totals"],
        channel=channel,
    )
    await repository.copy_attachments(
        conn,
        order_id=order["id"],
        from_revision=order["current_revision"],
        to_revision=target.revision,
    )
    await repository.set_current_revision(conn, order_id=order["id"], revision=target.revision)
    await apply_pending_events(conn, order_id=order["id"])
    return target.revision


async def _write(
    conn: Connection,
    *,
    order: dict[str, Any],
    document: OrderDocument,
    channel: str,
    actor: Actor,
) -> int:
    target = domain.edit_target(
        status=Status(order["status"]),
        current_revision=order["current_revision"],
        submitted=order["current_submitted"],
    )
    write = repository.replace_revision if target.replace else repository.insert_revision
    await write(
        conn,
        order_id=order["id"],
        revision=target.revision,
        document=_document(document),
        totals=_totals(document),
        channel=channel,
    )
    if not target.replace:
        await repository.copy_attachments(
            conn,
            order_id=order["id"],
            from_revision=order["current_revision"],
            to_revision=target.revision,
        )
    await repository.update_header(
        conn,
        order_id=order["id"],
        current_revision=target.revision,
        salesperson_id=document.salesperson.id,
        external_ref=document.external_ref,
        customer_name=document.customer.name,
    )
    if not target.replace:
        await apply_pending_events(conn, order_id=order["id"])
    key = domain.duplicate_key(
        customer_name=document.customer.name, external_ref=document.external_ref
    )
    if key != order["duplicate_key"]:
        # another reference: compared with the orders that came before this one only, so
        # the later of two orders is the one marked, whichever was edited
        key, duplicates = await _duplicates_of(
            conn, order_id=order["id"], document=document, created_before=order["created_at"]
        )
        await repository.set_duplicates(
            conn, order_id=order["id"], key=key, possible_duplicate_of=duplicates
        )
    await repository.add_activity(
        conn,
        order_id=order["id"],
        activity="order.revised",
        revision=target.revision,
        payload={
            "revision": target.revision,
            "new_revision": not target.replace,
            "channel": channel,
            "salesperson": _salesperson(document),
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
    order = await _locked(conn, order_id, if_match=if_match, permits=permits)
    # under review, the departments may have sent it back without intake having heard yet
    domain.check_decided(Status(order["status"]), current_revision=order["current_revision"])
    revision = await _write(conn, order=order, document=document, channel=channel, actor=actor)
    return Outcome(order_id=order_id, revision=revision, status=Status(order["status"]))


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
    order = await _locked(conn, order_id, if_match=if_match, permits=permits)
    domain.check_submittable(
        status=Status(order["status"]),
        current_revision=order["current_revision"],
        submitted=order["current_submitted"],
    )
    revision = order["current_revision"]
    stored = await repository.get_revision(conn, order_id=order_id, revision=revision)
    assert stored is not None
    files = await _files(conn, order_id, revision)
    checked = domain.check_document(stored["document"], today=today, attachments=files)
    checked.refuse()
    document = checked.document
    assert document is not None
    await _submit(
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
) -> Outcome:
    """Ask for the order to be withdrawn before approval. The review-router decides it
    against the round's decision, under one lock, and answers `order.withdrawn` or
    `order.withdrawal_refused`; until then the order is `withdrawal_requested`. Asking
    again meanwhile changes nothing."""
    order = await _locked(conn, order_id, if_match=if_match, permits=permits)
    status = Status(order["status"])
    revision = order["current_revision"]
    if domain.withdrawal_pending(status):
        log.info("withdrawal already requested", order_id=str(order_id))
        return Outcome(order_id=order_id, revision=revision, status=status)
    domain.check_withdrawable(status)
    now = datetime.now(UTC)
    stored = await repository.get_revision(conn, order_id=order_id, revision=revision)
    assert stored is not None
    await repository.request_withdrawal(
        conn,
        order_id=order_id,
        held_status=status.value,
        withdrawal={
            "requested_at": times.format_time(now),
            "requested_by": actor,
            "reason": reason,
            "outcome": "pending",
        },
        at=now,
    )
    message_id = await outbox.enqueue(
        conn,
        OrderWithdrawalRequested(
            order_id=order_id,
            revision=revision,
            reason=reason,
            requested_by=actor["id"],
            requested_at=now,
            salesperson=Salesperson.model_validate(stored["document"]["salesperson"]),
        ),
        exchange=topology.EVENTS,
        correlation_id=order_id,
    )
    await repository.record_publisher(conn, message_id=message_id, actor=actor)
    log.info("withdrawal requested", order_id=str(order_id), status=status.value)
    return Outcome(order_id=order_id, revision=revision, status=Status.WITHDRAWAL_REQUESTED)


_COMMAND_ID: TypeAdapter[UUID | None] = TypeAdapter(UUID | None)
#: The fields of `order.submit` that are not the order document's.
_COMMAND_FIELDS = ("order_id", "revises", "attachments")


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
            kept = await _files(conn, order_id, order["current_revision"])
    kept += pending_refs(order_id or uuid.uuid4(), files)
    checked = domain.check_document(document, today=today, attachments=kept)
    raise domain.SelfCheckFailed(invalid + checked.problems, invalid=len(invalid) + checked.invalid)


def _check_revisable(order: dict[str, Any], *, revises: int | None) -> None:
    """Whether a revision sent over the bus can follow the order's current revision: never
    after the decision (permanent); a conflict when another revision came first (the
    sender's `revises` is older) or while the departments are deciding (it waits)."""
    status = Status(order["status"])
    if status not in domain.EDITABLE and status not in domain.DECIDING:
        raise domain.NotEditable(status)
    domain.check_revises(revises, status=status, current_revision=order["current_revision"])
    domain.check_decided(status, current_revision=order["current_revision"])


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
) -> Outcome:
    """`order.submit` from another system: a new order, or a new revision of one sent back;
    the broker user that published it is its actor. `files` are the ones the command named
    by URL, fetched and checked: stored with the revision, then self-checked with it."""
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
        )
    else:
        order = await _locked(conn, command.order_id)
        _check_revisable(order, revises=command.revises)
        # the new revision keeps the files of the one it replaces or follows
        files_kept = await _files(conn, command.order_id, order["current_revision"])
        _check(
            document,
            today=today,
            attachments=files_kept + pending_refs(command.order_id, files),
        )
        revision = await _write(conn, order=order, document=document, channel=BUS, actor=actor)
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
        files_now = await _files(conn, command.order_id, revision)
        await _submit(
            conn,
            order_id=command.order_id,
            revision=revision,
            document=document,
            attachments=files_now,
            channel=BUS,
            actor=actor,
        )
        outcome = Outcome(order_id=command.order_id, revision=revision, status=Status.SUBMITTED)
    if reply_to:
        await outbox.enqueue(
            conn,
            SubmitOrderReply(
                accepted=True,
                order_id=outcome.order_id,
                revision=outcome.revision,
                status=outcome.status.value,
            ),
            exchange="",
            routing_key=reply_to,
            # the sender may have gone; the order is accepted whether it hears or not
            mandatory=False,
            correlation_id=correlation_id,
        )
    return outcome


# ---------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True)
class NewFile:
    """A file that arrived whole and passed the checks, ready to be stored."""

    kind: AttachmentKind
    name: str
    content_type: str
    size: int
    sha256: str
    chunks: Callable[[], Iterable[bytes]]
    #: the id it is stored under; a new one when None
    attachment_id: UUID | None = None


def pending_refs(order_id: UUID, files: Sequence[NewFile]) -> list[AttachmentRef]:
    """The files as they will be once stored (each with its id), for the self-check that
    runs before they are."""
    return [
        AttachmentRef(
            id=f.attachment_id,
            name=f.name,
            kind=f.kind,
            content_type=f.content_type,
            size=f.size,
            sha256=f.sha256,
            download_path=domain.download_path(order_id, f.attachment_id),
        )
        for f in files
        if f.attachment_id is not None
    ]


async def check_new_ids(conn: Connection, files: Sequence[NewFile]) -> None:
    """The ids a command chose for its files are new: refused naming `/attachments/<n>/id`."""
    chosen = [f.attachment_id for f in files if f.attachment_id is not None]
    taken = await repository.attachment_ids_in_use(conn, ids=chosen) if chosen else set()
    problems = [
        Problem(
            pointer=f"/attachments/{n}/id",
            detail=f"{f.attachment_id} is the id of a file stored already; choose a new one "
            "(a revision keeps the files of the one it follows: send only new files)",
        )
        for n, f in enumerate(files)
        if f.attachment_id in taken
    ]
    if problems:
        raise domain.SelfCheckFailed(problems, invalid=len(problems))


async def _store_file(
    conn: Connection,
    store: BlobStore,
    *,
    order_id: UUID,
    revision: int,
    file: NewFile,
    salesperson: dict[str, Any],
    actor: Actor,
) -> AttachmentRef:
    """The bytes (once per SHA-256), the attachment on the revision, its timeline entry."""
    await store.put(conn, sha256=file.sha256, size=file.size, chunks=file.chunks())
    row = await repository.insert_attachment(
        conn,
        attachment_id=file.attachment_id or uuid.uuid4(),
        order_id=order_id,
        revision=revision,
        kind=file.kind.value,
        name=file.name,
        content_type=file.content_type,
        size=file.size,
        sha256=file.sha256,
    )
    ref = attachment_ref(row)
    await repository.add_activity(
        conn,
        order_id=order_id,
        activity="attachment.added",
        revision=revision,
        payload={"attachment": ref.model_dump(mode="json"), "salesperson": salesperson},
        occurred_at=datetime.now(UTC),
        actor=actor,
    )
    return ref


async def store_files(
    conn: Connection,
    store: BlobStore,
    *,
    order_id: UUID,
    revision: int,
    files: Sequence[NewFile],
    document: OrderDocument,
    actor: Actor,
) -> list[AttachmentRef]:
    """Files a command named by URL, on the revision it writes, in its transaction."""
    stored = [
        await _store_file(
            conn,
            store,
            order_id=order_id,
            revision=revision,
            file=f,
            salesperson=_salesperson(document),
            actor=actor,
        )
        for f in files
    ]
    for ref in stored:
        log.info(
            "file attached from a URL",
            order_id=str(order_id),
            revision=revision,
            kind=ref.kind.value,
            size=ref.size,
            content_type=ref.content_type,
        )
    return stored


def check_attachable(order: dict[str, Any]) -> None:
    """Before an upload is read: the order takes files (checked again, under its lock, when
    the file is stored). Under review, the decision may be on its way: it is waited for
    once the file is read."""
    status = Status(order["status"])
    if status not in domain.DECIDING:
        domain.check_editable(status)


async def add_attachment(
    pool: Pool,
    store: BlobStore,
    *,
    order_id: UUID,
    file: NewFile,
    channel: str,
    actor: Actor,
    if_match: str | None = None,
    permits: Permits | None = None,
) -> tuple[AttachmentRef, int]:
    """Store a file on the order's open revision; the file and the revision's new version
    commit together or not at all. Returns the file and the revision it joined."""
    for attempt in (1, 2):
        try:
            async with transaction(pool) as conn:
                order = await _locked(conn, order_id, if_match=if_match, permits=permits)
                domain.check_decided(
                    Status(order["status"]), current_revision=order["current_revision"]
                )
                revision = await _open_draft(conn, order=order, channel=channel)
                await repository.bump_version(conn, order_id=order_id)
                current = await repository.get_revision(conn, order_id=order_id, revision=revision)
                assert current is not None
                ref = await _store_file(
                    conn,
                    store,
                    order_id=order_id,
                    revision=revision,
                    file=file,
                    salesperson=_salesperson(current["document"]),
                    actor=actor,
                )
        except asyncpg.ForeignKeyViolationError:
            # the same bytes were discarded by a deletion that committed between finding
            # them stored and referring to them: store them again
            if attempt == 2:
                raise
            continue
        log.info(
            "file attached",
            order_id=str(order_id),
            revision=revision,
            kind=file.kind.value,
            size=file.size,
            content_type=file.content_type,
        )
        return ref, revision
    raise AssertionError("unreachable")


async def remove_attachment(
    pool: Pool,
    store: BlobStore,
    *,
    order_id: UUID,
    attachment_id: UUID,
    channel: str,
    actor: Actor,
    if_match: str | None = None,
    permits: Permits | None = None,
) -> int:
    """Take a file off the order's open revision; a submitted revision keeps it. The bytes
    go when no revision of any order holds them any more. Returns the open revision."""
    async with transaction(pool) as conn:
        order = await _locked(conn, order_id, if_match=if_match, permits=permits)
        domain.check_decided(Status(order["status"]), current_revision=order["current_revision"])
        domain.check_editable(Status(order["status"]))
        files = {f.id: f for f in await _files(conn, order_id, order["current_revision"])}
        ref = files.get(attachment_id)
        if ref is None:
            raise AttachmentNotFound(order_id, attachment_id, " on its current revision")
        revision = await _open_draft(conn, order=order, channel=channel)
        await repository.unlink_attachment(
            conn, order_id=order_id, revision=revision, attachment_id=attachment_id
        )
        forgotten = await repository.delete_attachment_if_unused(conn, attachment_id=attachment_id)
        await repository.bump_version(conn, order_id=order_id)
        current = await repository.get_revision(conn, order_id=order_id, revision=revision)
        assert current is not None
        await repository.add_activity(
            conn,
            order_id=order_id,
            activity="attachment.removed",
            revision=revision,
            payload={
                "attachment": ref.model_dump(mode="json"),
                "salesperson": _salesperson(current["document"]),
            },
            occurred_at=datetime.now(UTC),
            actor=actor,
        )
    if forgotten:
        # after the commit: had it rolled back, the bytes would still be needed
        await store.discard_if_unused(pool, sha256=ref.sha256)
    return revision


async def attachments_of(
    pool: Pool, *, order_id: UUID, revision: int | None
) -> tuple[int, list[AttachmentRef]]:
    """The files of a revision (the current one by default)."""
    order = await repository.get_order(pool, order_id=order_id)
    if order is None:
        raise OrderNotFound(order_id)
    wanted = order["current_revision"] if revision is None else revision
    if wanted > order["current_revision"]:
        raise RevisionNotFound(order_id, wanted)
    return wanted, await _files(pool, order_id, wanted)


async def attachment(pool: Pool, *, order_id: UUID, attachment_id: UUID) -> AttachmentRef:
    row = await repository.get_attachment(pool, order_id=order_id, attachment_id=attachment_id)
    if row is None:
        raise AttachmentNotFound(order_id, attachment_id)
    return attachment_ref(row)


# ---------------------------------------------------------------------------------------
# Revisions and the timeline


async def revision_with_files(pool: Pool, *, order_id: UUID, revision: int) -> dict[str, Any]:
    """A stored revision and its files."""
    row = await repository.get_revision(pool, order_id=order_id, revision=revision)
    if row is None:
        raise RevisionNotFound(order_id, revision)
    return {**row, "attachments": await _files(pool, order_id, revision)}


async def revision_diff(pool: Pool, *, order_id: UUID, old: int, new: int) -> list[FieldChange]:
    """Field by field, what changed from revision `old` to revision `new`."""
    before = await revision_with_files(pool, order_id=order_id, revision=old)
    after = await revision_with_files(pool, order_id=order_id, revision=new)
    return domain.revision_changes(
        old_document=before["document"],
        old_attachments=before["attachments"],
        new_document=after["document"],
        new_attachments=after["attachments"],
    )


async def timeline(pool: Pool, *, order_id: UUID) -> list[dict[str, Any]]:
    """Every event of the order in the order it happened, who did it and what it meant."""
    order = await repository.get_order(pool, order_id=order_id)
    if order is None:
        raise OrderNotFound(order_id)
    salesperson = _salesperson(order["document"])
    entries = []
    for row in await repository.timeline(pool, order_id=order_id):
        described = domain.describe(row["type"], row["payload"], salesperson=salesperson)
        entries.append(
            {
                "at": row["occurred_at"],
                "type": row["type"],
                "revision": row["revision"],
                "source": row["source"],
                # who was signed in (or the broker user) when recorded; otherwise who the
                # event itself names (a reviewer, a service)
                "actor": row["actor"] or described.actor,
                "summary": described.summary,
                "details": described.details,
            }
        )
    return entries


# ---------------------------------------------------------------------------------------
# Bulk intake


async def import_order(
    pool: Pool, *, document: OrderDocument, today: date, actor: Actor
) -> Outcome | list[Problem]:
    """One order of a bulk import, created and submitted in its own transaction, so a
    refused order never takes an accepted one with it; its problems when refused."""
    try:
        async with transaction(pool) as conn:
            return await create_order(
                conn, document=document, channel=IMPORT, submit=True, today=today, actor=actor
            )
    except domain.SelfCheckFailed as exc:
        return exc.problems


def _occurred_at(event: Message, fallback: datetime | None) -> datetime:
    # every event names its moment in its first `*_at` field (submitted_at, decided_at, ...)
    for name, value in event:
        if name.endswith("_at") and isinstance(value, datetime):
            return value
    return fallback or datetime.now(UTC)


def _details(event: Message) -> dict[str, Any]:
    """What the read model keeps of an event that moved the order."""
    if isinstance(event, OrderChangesRequested):
        return {
            "change_request": {
                "revision": event.revision,
                "feedback": [f.model_dump(mode="json") for f in event.feedback],
                "annotations": [a.model_dump(mode="json") for a in event.annotations],
                "decided_at": times.format_time(event.decided_at),
            }
        }
    if isinstance(event, OrderApproved):
        return {"approved_at": event.approved_at}
    if isinstance(event, ContractDrafted):
        return {"contract_id": event.contract_id, "contract_number": event.contract_number}
    if isinstance(event, ContractSigned):
        return {
            "contract_id": event.contract_id,
            "contract_number": event.contract_number,
            "contract_signed_at": event.signed_at,
        }
    if isinstance(event, OrderWithdrawn):
        return {"withdrawn_at": event.withdrawn_at}
    return {}


def _answer(event: Message) -> dict[str, Any] | None:
    """The router's answer to a withdrawal, as the order's `withdrawal` keeps it."""
    if isinstance(event, OrderWithdrawn):
        return {"outcome": "withdrawn", "answered_at": times.format_time(event.withdrawn_at)}
    if isinstance(event, OrderWithdrawalRefused):
        return {
            "outcome": "refused",
            "refusal": event.reason,
            "answered_at": times.format_time(event.refused_at),
        }
    return None


async def on_event(
    conn: Connection, *, event: Message, message_id: str, sent_at: datetime | None
) -> str | None:
    """Record an event in its order's timeline and move the order's status; returns what it
    did, or None for an event about an order that was not placed here."""
    order_id = getattr(event, "order_id", None)
    if not isinstance(order_id, UUID):
        log.info("event without an order, ignored", message_type=event.message_type)
        return None
    # taken before looking: the order's creation holds it until it commits
    await repository.lock_order_id(conn, order_id=order_id)
    order = await repository.lock_order(conn, order_id=order_id)
    revision = getattr(event, "revision", None)
    revision = revision if isinstance(revision, int) else None
    occurred_at = _occurred_at(event, sent_at)
    if order is None or (revision is not None and revision > order["current_revision"]):
        # before its order or its revision: kept, and applied when that appears
        await _keep_pending(
            conn,
            order_id=order_id,
            event=event,
            message_id=message_id,
            revision=revision,
            occurred_at=occurred_at,
            known=order is not None,
        )
        return "pending"
    return await _project(
        conn,
        order=order,
        message_type=event.message_type,
        message_id=message_id,
        revision=revision,
        payload=event.model_dump(mode="json"),
        event=event,
        occurred_at=occurred_at,
    )


async def _project(
    conn: Connection,
    *,
    order: dict[str, Any],
    message_type: str,
    message_id: str,
    revision: int | None,
    payload: dict[str, Any],
    event: Message | None,
    occurred_at: datetime,
) -> str:
    """Move the locked order's status for the event and put it on the timeline."""
    order_id = order["id"]
    status = Status(order["status"])
    details = _details(event) if event is not None else {}
    projection = domain.project(
        status=status,
        current_revision=order["current_revision"],
        event_type=message_type,
        event_revision=revision,
        held=Status(order["held_status"]) if order["held_status"] else None,
    )
    answer = _answer(event) if event is not None else None
    if projection.status is not None and status is Status.WITHDRAWAL_REQUESTED and answer:
        await repository.answer_withdrawal(
            conn, order_id=order_id, status=projection.status.value, answer=answer
        )
    if projection.status is not None:
        await repository.set_status(
            conn, order_id=order_id, status=projection.status.value, **details
        )
    elif projection.details:
        # held while a withdrawal waits, or the status is the event's already
        await repository.set_status(
            conn,
            order_id=order_id,
            status=status.value,
            held_status=projection.held.value if projection.held else None,
            **details,
        )
    await repository.append_event(
        conn,
        order_id=order_id,
        message_id=message_id,
        message_type=message_type,
        revision=revision,
        payload=payload,
        occurred_at=occurred_at,
        outcome=projection.outcome,
    )
    log.info(
        "event projected",
        order_id=str(order_id),
        message_type=message_type,
        outcome=projection.outcome,
    )
    return projection.outcome


# ---------------------------------------------------------------------------------------
# Events that arrive before their order or revision

#: How long, and how many, events of orders that never appear here are kept: another
#: system may place orders on the same bus, and their events are not intake's.
PENDING_KEPT_FOR = timedelta(days=7)
PENDING_KEPT_AT_MOST = 10_000

PENDING_EVENTS = Gauge(
    "orderflow_intake_pending_events",
    "Events kept for an order or revision not here yet, as last counted by this replica",
)
PENDING_DISCARDED = Counter(
    "orderflow_intake_pending_events_discarded_total",
    "Kept events forgotten because their order never appeared (too old, or too many)",
)


async def _keep_pending(
    conn: Connection,
    *,
    order_id: UUID,
    event: Message,
    message_id: str,
    revision: int | None,
    occurred_at: datetime,
    known: bool,
) -> None:
    await repository.keep_pending_event(
        conn,
        order_id=order_id,
        message_id=message_id,
        message_type=event.message_type,
        revision=revision,
        payload=event.model_dump(mode="json"),
        occurred_at=occurred_at,
    )
    discarded = await repository.discard_pending_events(
        conn,
        older_than=datetime.now(UTC) - PENDING_KEPT_FOR,
        keep_at_most=PENDING_KEPT_AT_MOST,
    )
    if discarded:
        PENDING_DISCARDED.inc(discarded)
        log.warning("kept events of orders that never appeared, forgotten", count=discarded)
    PENDING_EVENTS.set(await repository.count_pending_events(conn))
    log.info(
        "event for a revision not here yet, kept"
        if known
        else "event for an order not here (yet), kept",
        message_type=event.message_type,
        order_id=str(order_id),
        revision=revision,
    )


async def apply_pending_events(conn: Connection, *, order_id: UUID) -> int:
    """Project the kept events the order can take now (it was created, or its revision
    moved), in the order they happened, in the caller's transaction (which holds the
    order's lock); how many."""
    order = await repository.lock_order(conn, order_id=order_id)
    assert order is not None
    kept = await repository.take_pending_events(
        conn, order_id=order_id, up_to_revision=order["current_revision"]
    )
    for row in kept:
        model = EVENTS.get(row["type"])
        event = model.model_validate(row["payload"]) if model is not None else None
        await _project(
            conn,
            order=order,
            message_type=row["type"],
            message_id=row["message_id"],
            revision=row["revision"],
            payload=row["payload"],
            event=event,
            occurred_at=row["occurred_at"],
        )
        # the next one sees the status this one left
        order = await repository.lock_order(conn, order_id=order_id)
        assert order is not None
    if kept:
        PENDING_EVENTS.set(await repository.count_pending_events(conn))
        log.info("kept events applied", order_id=str(order_id), count=len(kept))
    return len(kept)
