"""One function per event: turn it into notifications, in the caller's transaction."""

from __future__ import annotations

from datetime import UTC, datetime

from orderflow import outbox, topology
from orderflow.db import Connection
from orderflow.messages import (
    ContractDrafted,
    NotificationDelivered,
    OrderApproved,
    OrderChangesRequested,
)

from . import domain
from .adapters import repository


async def _record(conn: Connection, *, event_id: str, notices: list[domain.Notice]) -> None:
    for notice in notices:
        notification_id = await repository.add(conn, event_id=event_id, notice=notice)
        if notification_id is None:
            continue  # this event was already turned into this notification
        # the in-app inbox is delivered the moment the row is committed
        await outbox.enqueue(
            conn,
            NotificationDelivered(
                notification_id=notification_id,
                order_id=notice.order_id,
                recipient=notice.recipient,
                channel=notice.channel,
                event_type=notice.event_type,
                delivered_at=datetime.now(UTC),
            ),
            exchange=topology.EVENTS,
            correlation_id=notice.order_id,
        )


async def on_changes_requested(
    conn: Connection, event: OrderChangesRequested, *, event_id: str, console: str
) -> None:
    await _record(conn, event_id=event_id, notices=domain.changes_requested(event, console=console))


async def on_approved(
    conn: Connection, event: OrderApproved, *, event_id: str, console: str
) -> None:
    await _record(conn, event_id=event_id, notices=domain.approved(event, console=console))


async def on_contract_drafted(
    conn: Connection, event: ContractDrafted, *, event_id: str, console: str
) -> None:
    await _record(conn, event_id=event_id, notices=domain.contract_drafted(event, console=console))
