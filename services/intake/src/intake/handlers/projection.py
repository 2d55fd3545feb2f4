"""The read model: events of the other services move the order and go on its timeline;
those that arrive before their order or revision are kept until it comes."""

from __future__ import annotations

from dataclasses import replace
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
from ..adapters.projection_store import (
    KeptEvent,
    PostgresProjectionStore,
    ProjectedOrder,
    ProjectionStore,
)
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


def _store(conn: Connection, store: ProjectionStore | None) -> ProjectionStore:
    return store if store is not None else PostgresProjectionStore(conn)


async def on_event(
    conn: Connection,
    *,
    event: Message,
    message_id: str,
    sent_at: datetime | None,
    store: ProjectionStore | None = None,
) -> str | None:
    """Record an event in its order's timeline and move the order's status; returns what it
    did, or None for an event about an order that was not placed here. `store` is the
    connection's PostgreSQL unless another is given (a fake, in the unit tests)."""
    order_id = getattr(event, "order_id", None)
    if not isinstance(order_id, UUID):
        log.info("event without an order, ignored", message_type=event.message_type)
        return None
    store = _store(conn, store)
    order = await store.lock(order_id)
    revision = getattr(event, "revision", None)
    kept = KeptEvent(
        message_id=message_id,
        type=event.message_type,
        revision=revision if isinstance(revision, int) else None,
        payload=event.model_dump(mode="json"),
        occurred_at=_occurred_at(event, sent_at),
    )
    if order is None or (kept.revision is not None and kept.revision > order.current_revision):
        # before its order or its revision: kept, and applied when that appears
        await _keep_pending(store, order_id=order_id, event=kept, known=order is not None)
        return "pending"
    return await _project(store, order=order, kept=kept, event=event)


async def _project(
    store: ProjectionStore, *, order: ProjectedOrder, kept: KeptEvent, event: Message | None
) -> str:
    """Move the locked order's status for the event and put it on the timeline."""
    status = Status(order.status)
    details = _details(event) if event is not None else {}
    projection = domain.project(
        status=status,
        current_revision=order.current_revision,
        event_type=kept.type,
        event_revision=kept.revision,
        held=Status(order.held_status) if order.held_status else None,
    )
    answer = _answer(event) if event is not None else None
    if projection.status is not None and status is Status.WITHDRAWAL_REQUESTED and answer:
        await store.answer_withdrawal(order.id, projection.status.value, answer)
    if projection.status is not None:
        await store.set_status(order.id, projection.status.value, **details)
    elif projection.details:
        # held while a withdrawal waits, or the status is the event's already
        held = projection.held.value if projection.held else None
        await store.set_status(order.id, status.value, held_status=held, **details)
    timeline = domain.timeline_payload(kept.type, kept.payload)
    await store.append_event(order.id, replace(kept, payload=timeline), projection.outcome)
    # one line per event of every order: at INFO it cost more than the projection itself
    log.debug(
        "event projected",
        order_id=str(order.id),
        message_type=kept.type,
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
    store: ProjectionStore, *, order_id: UUID, event: KeptEvent, known: bool
) -> None:
    await store.keep_pending(order_id, event)
    discarded = await store.discard_pending(
        older_than=datetime.now(UTC) - PENDING_KEPT_FOR, keep_at_most=PENDING_KEPT_AT_MOST
    )
    if discarded:
        PENDING_DISCARDED.inc(discarded)
        log.warning("kept events of orders that never appeared, forgotten", count=discarded)
    PENDING_EVENTS.set(await store.count_pending())
    log.info(
        "event for a revision not here yet, kept"
        if known
        else "event for an order not here (yet), kept",
        message_type=event.type,
        order_id=str(order_id),
        revision=event.revision,
    )


async def apply_pending_events(
    conn: Connection,
    *,
    order_id: UUID,
    store: ProjectionStore | None = None,
    revision: int | None = None,
) -> int:
    """Project the kept events the order can take now (it was created, or its revision
    moved), in the order they happened, in the caller's transaction (which holds the
    order's lock); how many. `revision`: the order's current revision when the caller
    made it in this very transaction (a new order's 1), so the order is read only when
    something was kept for it (rarely: two round trips saved per new order)."""
    store = _store(conn, store)
    order = None if revision is not None else await store.relock(order_id)
    up_to = revision if order is None else order.current_revision
    assert up_to is not None
    kept = await store.take_pending(order_id, up_to)
    if kept and order is None:
        order = await store.relock(order_id)
    for row in kept:
        assert order is not None
        model = EVENTS.get(row.type)
        event = model.model_validate(row.payload) if model is not None else None
        await _project(store, order=order, kept=row, event=event)
        # the next one sees the status this one left
        order = await store.relock(order_id)
        assert order is not None
    if kept:
        PENDING_EVENTS.set(await store.count_pending())
        log.info("kept events applied", order_id=str(order_id), count=len(kept))
    return len(kept)
