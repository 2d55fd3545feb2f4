"""What the order handlers (create, submit, revise over the bus, withdraw) need of storage,
as a protocol: PostgreSQL here (`PostgresOrderStore`, in the caller's transaction, with the
outbox in the same one), an in-memory fake in the handler unit tests. The same shape as
`projection_store`; the projection's part of an order's life is reached through
`projection`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from orderflow import outbox
from orderflow.db import Connection
from orderflow.messages import Message

from . import repository
from .projection_store import PostgresProjectionStore, ProjectionStore


class OrderStore(Protocol):
    projection: ProjectionStore

    async def lock_order(self, order_id: UUID) -> repository.LockedOrder | None: ...

    async def lock_for_creation(self, order_id: UUID, duplicate_key: str | None) -> None: ...

    async def lock_duplicate_key(self, key: str) -> None: ...

    async def find_duplicates(
        self, key: str, *, exclude: UUID, created_before: datetime | None
    ) -> list[UUID]: ...

    async def insert_draft(self, **row: Any) -> None:
        """`repository.insert_draft`'s fields."""

    async def get_revision(self, order_id: UUID, revision: int) -> dict[str, Any] | None: ...

    async def previous_submitted(self, order_id: UUID, before: int) -> int | None: ...

    async def revision_attachments(self, order_id: UUID, revision: int) -> list[dict[str, Any]]:
        """The revision's file rows, in upload order."""

    async def mark_submitted_by(
        self,
        order_id: UUID,
        revision: int,
        *,
        submitted_at: datetime,
        message_id: UUID,
        actor: dict[str, Any],
    ) -> None: ...

    async def request_withdrawal(
        self, order_id: UUID, *, held_status: str, withdrawal: dict[str, Any], at: datetime
    ) -> None: ...

    async def record_publisher(self, message_id: UUID, actor: dict[str, Any]) -> None: ...

    async def publish_event(self, event: Message, *, correlation_id: UUID) -> UUID:
        """The event to `orderflow.events` through the outbox; its message id."""

    async def reply(self, message: Message, *, reply_to: str, correlation_id: str | None) -> None:
        """A reply to a command's sender through the outbox, not mandatory: the sender may
        have gone."""


class PostgresOrderStore:
    """`OrderStore` over the caller's connection and transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.projection: ProjectionStore = PostgresProjectionStore(conn)

    async def lock_order(self, order_id: UUID) -> repository.LockedOrder | None:
        return await repository.lock_order(self._conn, order_id=order_id)

    async def lock_for_creation(self, order_id: UUID, duplicate_key: str | None) -> None:
        await repository.lock_for_creation(
            self._conn, order_id=order_id, duplicate_key=duplicate_key
        )

    async def lock_duplicate_key(self, key: str) -> None:
        await repository.lock_duplicate_key(self._conn, key=key)

    async def find_duplicates(
        self, key: str, *, exclude: UUID, created_before: datetime | None
    ) -> list[UUID]:
        return await repository.find_duplicates(
            self._conn, key=key, exclude=exclude, created_before=created_before
        )

    async def insert_draft(self, **row: Any) -> None:
        await repository.insert_draft(self._conn, **row)

    async def get_revision(self, order_id: UUID, revision: int) -> dict[str, Any] | None:
        return await repository.get_revision(self._conn, order_id=order_id, revision=revision)

    async def previous_submitted(self, order_id: UUID, before: int) -> int | None:
        return await repository.previous_submitted(self._conn, order_id=order_id, before=before)

    async def revision_attachments(self, order_id: UUID, revision: int) -> list[dict[str, Any]]:
        return await repository.revision_attachments(
            self._conn, order_id=order_id, revision=revision
        )

    async def mark_submitted_by(
        self,
        order_id: UUID,
        revision: int,
        *,
        submitted_at: datetime,
        message_id: UUID,
        actor: dict[str, Any],
    ) -> None:
        await repository.mark_submitted_by(
            self._conn,
            order_id=order_id,
            revision=revision,
            submitted_at=submitted_at,
            message_id=message_id,
            actor=actor,
        )

    async def request_withdrawal(
        self, order_id: UUID, *, held_status: str, withdrawal: dict[str, Any], at: datetime
    ) -> None:
        await repository.request_withdrawal(
            self._conn, order_id=order_id, held_status=held_status, withdrawal=withdrawal, at=at
        )

    async def record_publisher(self, message_id: UUID, actor: dict[str, Any]) -> None:
        await repository.record_publisher(self._conn, message_id=message_id, actor=actor)

    async def publish_event(self, event: Message, *, correlation_id: UUID) -> UUID:
        return await outbox.publish_event(self._conn, event, correlation_id=correlation_id)

    async def reply(self, message: Message, *, reply_to: str, correlation_id: str | None) -> None:
        await outbox.enqueue(
            self._conn,
            message,
            exchange="",
            routing_key=reply_to,
            mandatory=False,
            correlation_id=correlation_id,
        )
