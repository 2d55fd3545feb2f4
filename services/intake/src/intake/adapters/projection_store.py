"""The projection's storage: the order's state under its lock, the timeline, and the
events kept for an order or revision not here yet, as typed records; the protocol the
handlers use (an in-memory fake in the unit tests) and its PostgreSQL implementation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from orderflow.db import Connection

from . import repository


@dataclass(frozen=True)
class ProjectedOrder:
    """What the projection reads of an order, under its lock."""

    id: UUID
    status: str
    current_revision: int
    #: while a withdrawal waits for its answer, the status the review reached meanwhile
    held_status: str | None = None


@dataclass(frozen=True)
class KeptEvent:
    """An event as the timeline (or the table of events kept for later) stores it."""

    message_id: str
    type: str
    revision: int | None
    payload: dict[str, Any]
    occurred_at: datetime


class ProjectionStore(Protocol):
    """The read model's storage, in the caller's transaction."""

    async def lock(self, order_id: UUID) -> ProjectedOrder | None:
        """The order under its lock, after the lock an order's creation holds: an event
        that finds no order is kept before the order commits, or waits and finds it."""

    async def relock(self, order_id: UUID) -> ProjectedOrder | None:
        """The order as the same transaction left it (its row lock held already)."""

    async def set_status(self, order_id: UUID, status: str, **details: Any) -> None: ...

    async def answer_withdrawal(
        self, order_id: UUID, status: str, answer: dict[str, Any]
    ) -> None: ...

    async def append_event(self, order_id: UUID, event: KeptEvent, outcome: str) -> None:
        """On the timeline, once: a message id already there is not added again."""

    async def keep_pending(self, order_id: UUID, event: KeptEvent) -> None: ...

    async def discard_pending(self, *, older_than: datetime, keep_at_most: int) -> int: ...

    async def count_pending(self) -> int: ...

    async def take_pending(self, order_id: UUID, up_to_revision: int) -> list[KeptEvent]:
        """The kept events the order can take now, oldest first, removed from the kept."""


def _projected(row: repository.LockedOrder | None) -> ProjectedOrder | None:
    if row is None:
        return None
    return ProjectedOrder(
        id=row.id,
        status=row.status,
        current_revision=row.current_revision,
        held_status=row.held_status,
    )


class PostgresProjectionStore:
    """`ProjectionStore` over one connection, in its transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def lock(self, order_id: UUID) -> ProjectedOrder | None:
        # taken before looking: the order's creation holds it until it commits
        await repository.lock_order_id(self.conn, order_id=order_id)
        return await self.relock(order_id)

    async def relock(self, order_id: UUID) -> ProjectedOrder | None:
        return _projected(await repository.lock_order(self.conn, order_id=order_id))

    async def set_status(self, order_id: UUID, status: str, **details: Any) -> None:
        await repository.set_status(self.conn, order_id=order_id, status=status, **details)

    async def answer_withdrawal(self, order_id: UUID, status: str, answer: dict[str, Any]) -> None:
        await repository.answer_withdrawal(
            self.conn, order_id=order_id, status=status, answer=answer
        )

    async def append_event(self, order_id: UUID, event: KeptEvent, outcome: str) -> None:
        await repository.append_event(
            self.conn,
            order_id=order_id,
            message_id=event.message_id,
            message_type=event.type,
            revision=event.revision,
            payload=event.payload,
            occurred_at=event.occurred_at,
            outcome=outcome,
        )

    async def keep_pending(self, order_id: UUID, event: KeptEvent) -> None:
        await repository.keep_pending_event(
            self.conn,
            order_id=order_id,
            message_id=event.message_id,
            message_type=event.type,
            revision=event.revision,
            payload=event.payload,
            occurred_at=event.occurred_at,
        )

    async def discard_pending(self, *, older_than: datetime, keep_at_most: int) -> int:
        return await repository.discard_pending_events(
            self.conn, older_than=older_than, keep_at_most=keep_at_most
        )

    async def count_pending(self) -> int:
        return await repository.count_pending_events(self.conn)

    async def take_pending(self, order_id: UUID, up_to_revision: int) -> list[KeptEvent]:
        rows = await repository.take_pending_events(
            self.conn, order_id=order_id, up_to_revision=up_to_revision
        )
        return [
            KeptEvent(
                message_id=r["message_id"],
                type=r["type"],
                revision=r["revision"],
                payload=r["payload"],
                occurred_at=r["occurred_at"],
            )
            for r in rows
        ]
