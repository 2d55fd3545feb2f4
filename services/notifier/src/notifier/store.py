"""What the event handlers keep, and where: a protocol, so a handler runs against PostgreSQL
in the service (`adapters.repository.PostgresStore`) and against memory in a unit test."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from orderflow.db import Connection
from orderflow.messages.base import Message

from .domain import Notice
from .records import Delivery


class Store(Protocol):
    """Notifications, and the events about them, written in the caller's transaction."""

    async def add(
        self, conn: Connection, *, event_id: str, notice: Notice, recipient_name: str | None
    ) -> Delivery | None:
        """Keep a notification; None when this (event, recipient, channel) already has one.
        The in-app inbox is delivered as it is written, every other channel is pending."""
        ...

    async def publish(
        self, conn: Connection, event: Message, *, correlation_id: UUID | None
    ) -> None:
        """An event to `orderflow.events`, sent once the transaction commits."""
        ...
