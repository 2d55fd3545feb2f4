"""The read model: events of the other services move the order and go on its timeline;
those that arrive before their order or revision are kept until it comes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from prometheus_client import Counter, Gauge

from orderflow import times
from orderflow.db import Connection
from orderflow.messages import (
    EVENTS,
    ContractDrafted,
    ContractSigned,
    Message,
    OrderApproved,
    OrderChangesRequested,
    OrderWithdrawalRefused,
    OrderWithdrawn,
)

from .. import domain
from ..adapters import repository
from ..domain import Status

log = structlog.get_logger(__name__)


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
        payload=domain.timeline_payload(message_type, payload),
        occurred_at=occurred_at,
        outcome=projection.outcome,
    )
    # one line per event of every order: at INFO it cost more than the projection itself
    log.debug(
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
