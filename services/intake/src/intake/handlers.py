"""One function per request, command or event: the order's changes and the messages they
cause, all in the caller's transaction."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import structlog

from orderflow import outbox, topology
from orderflow.db import Connection
from orderflow.messages import (
    ContractDrafted,
    ContractSigned,
    Message,
    OrderApproved,
    OrderChangesRequested,
    OrderDocument,
    OrderSubmitted,
    OrderWithdrawn,
    SubmitOrder,
    SubmitOrderReply,
    Totals,
)

from . import domain
from .adapters import repository
from .domain import Status

log = structlog.get_logger(__name__)

API = "api"
BUS = "bus"


class OrderNotFound(Exception):
    def __init__(self, order_id: UUID) -> None:
        self.order_id = order_id
        super().__init__(f"order {order_id} does not exist")


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


def _check(document: OrderDocument, *, today: date) -> None:
    problems = domain.self_check(document, today=today)
    if problems:
        raise domain.SelfCheckFailed(problems)


async def _submit(
    conn: Connection, *, order_id: UUID, revision: int, document: OrderDocument, channel: str
) -> None:
    """Freeze a revision that passed the self-check and announce it to the departments."""
    now = datetime.now(UTC)
    await repository.mark_submitted(conn, order_id=order_id, revision=revision, submitted_at=now)
    await outbox.enqueue(
        conn,
        OrderSubmitted(
            order_id=order_id,
            revision=revision,
            order=document,
            totals=Totals.of(document),
            channel=channel,
            submitted_at=now,
        ),
        exchange=topology.EVENTS,
        correlation_id=order_id,
    )
    log.info("order submitted", order_id=str(order_id), revision=revision, channel=channel)


async def create_order(
    conn: Connection,
    *,
    document: OrderDocument,
    channel: str,
    submit: bool,
    today: date,
    idempotency_key: str | None = None,
) -> Outcome:
    """A new order (revision 1), as a draft or submitted at once."""
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
            )
    if submit:
        # checked before anything is written, so a refused order leaves nothing behind
        _check(document, today=today)
    await repository.insert_order(
        conn,
        order_id=order_id,
        status=Status.DRAFT.value,
        salesperson_id=document.salesperson.id,
        external_ref=document.external_ref,
        customer_name=document.customer.name,
        channel=channel,
    )
    await repository.insert_revision(
        conn,
        order_id=order_id,
        revision=1,
        document=_document(document),
        totals=_totals(document),
        channel=channel,
    )
    if submit:
        await _submit(conn, order_id=order_id, revision=1, document=document, channel=channel)
    log.info("order created", order_id=str(order_id), channel=channel, submitted=submit)
    return Outcome(
        order_id=order_id, revision=1, status=Status.SUBMITTED if submit else Status.DRAFT
    )


async def _locked(conn: Connection, order_id: UUID) -> dict[str, Any]:
    order = await repository.lock_order(conn, order_id=order_id)
    if order is None:
        raise OrderNotFound(order_id)
    return order


async def _write(
    conn: Connection, *, order: dict[str, Any], document: OrderDocument, channel: str
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
    await repository.update_header(
        conn,
        order_id=order["id"],
        current_revision=target.revision,
        salesperson_id=document.salesperson.id,
        external_ref=document.external_ref,
        customer_name=document.customer.name,
    )
    return target.revision


async def update_order(
    conn: Connection, *, order_id: UUID, document: OrderDocument, channel: str
) -> Outcome:
    """Edit a draft, or revise an order the departments sent back (a new revision)."""
    order = await _locked(conn, order_id)
    revision = await _write(conn, order=order, document=document, channel=channel)
    return Outcome(order_id=order_id, revision=revision, status=Status(order["status"]))


async def submit_order(conn: Connection, *, order_id: UUID, channel: str, today: date) -> Outcome:
    """Self-check the current revision and send it to review."""
    order = await _locked(conn, order_id)
    domain.check_submittable(
        status=Status(order["status"]),
        current_revision=order["current_revision"],
        submitted=order["current_submitted"],
    )
    stored = await repository.get_revision(
        conn, order_id=order_id, revision=order["current_revision"]
    )
    assert stored is not None
    document = OrderDocument.model_validate(stored["document"])
    _check(document, today=today)
    await _submit(
        conn,
        order_id=order_id,
        revision=order["current_revision"],
        document=document,
        channel=channel,
    )
    return Outcome(order_id=order_id, revision=order["current_revision"], status=Status.SUBMITTED)


async def on_submit_command(
    conn: Connection,
    *,
    command: SubmitOrder,
    today: date,
    reply_to: str | None,
    correlation_id: str | None,
) -> Outcome:
    """`order.submit` from another system: a new order, or a new revision of one sent back."""
    document = OrderDocument.model_validate(command.model_dump(exclude={"order_id"}))
    if command.order_id is None:
        outcome = await create_order(conn, document=document, channel=BUS, submit=True, today=today)
    else:
        order = await _locked(conn, command.order_id)
        domain.check_editable(Status(order["status"]))
        _check(document, today=today)
        revision = await _write(conn, order=order, document=document, channel=BUS)
        await _submit(
            conn, order_id=command.order_id, revision=revision, document=document, channel=BUS
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
                "decided_at": event.decided_at.isoformat(),
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


async def on_event(
    conn: Connection, *, event: Message, message_id: str, sent_at: datetime | None
) -> str | None:
    """Record an event in its order's timeline and move the order's status; returns what it
    did, or None for an event about an order that was not placed here."""
    order_id = getattr(event, "order_id", None)
    if not isinstance(order_id, UUID):
        log.info("event without an order, ignored", message_type=event.message_type)
        return None
    order = await repository.lock_order(conn, order_id=order_id)
    if order is None:
        # another system may place orders on the same bus; nothing here to update
        log.info(
            "event for an unknown order, ignored",
            message_type=event.message_type,
            order_id=str(order_id),
        )
        return None
    revision = getattr(event, "revision", None)
    revision = revision if isinstance(revision, int) else None
    projection = domain.project(
        status=Status(order["status"]),
        current_revision=order["current_revision"],
        event_type=event.message_type,
        event_revision=revision,
    )
    if projection.status is not None:
        await repository.set_status(
            conn, order_id=order_id, status=projection.status.value, **_details(event)
        )
    await repository.append_event(
        conn,
        order_id=order_id,
        message_id=message_id,
        message_type=event.message_type,
        revision=revision,
        payload=event.model_dump(mode="json"),
        occurred_at=_occurred_at(event, sent_at),
        outcome=projection.outcome,
    )
    log.info(
        "event projected",
        order_id=str(order_id),
        message_type=event.message_type,
        outcome=projection.outcome,
    )
    return projection.outcome
