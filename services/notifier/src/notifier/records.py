"""What the notifier keeps, as the repository returns it: typed records, not database rows."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Protocol, Self
from uuid import UUID

PENDING = "pending"
SENDING = "sending"
DELIVERED = "delivered"
FAILED = "failed"
STATUSES = (PENDING, SENDING, DELIVERED, FAILED)


class Row(Protocol):
    """A database row as the driver gives it (asyncpg's Record, or a dict)."""

    def __getitem__(self, key: str) -> Any: ...


def _values(cls: type[Any], row: Row) -> dict[str, Any]:
    """A record's fields from a row holding (at least) them: the columns are named alike."""
    return {f.name: row[f.name] for f in fields(cls)}


@dataclass(frozen=True)
class Delivery:
    """One notification on one channel, with where its delivery stands."""

    id: UUID
    event_id: str
    event_type: str
    recipient: str
    recipient_name: str | None
    channel: str
    address: str | None
    order_id: UUID | None
    title: str
    subject: str
    body: str
    html: str | None
    markdown: str | None
    link: str
    language: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None
    read_at: datetime | None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, row: Row) -> Self:
        values = _values(cls, row)
        return cls(**{**values, "data": values["data"] or {}})

    @property
    def waiting(self) -> bool:
        """Still to be sent: pending, or leased to a worker that is sending it."""
        return self.status in (PENDING, SENDING)


@dataclass(frozen=True)
class InboxItem:
    """One notification in a person's in-app inbox."""

    id: UUID
    event_type: str
    order_id: UUID | None
    title: str
    subject: str
    body: str
    link: str
    language: str
    data: dict[str, Any]
    created_at: datetime
    read_at: datetime | None

    @classmethod
    def of(cls, row: Row) -> Self:
        values = _values(cls, row)
        return cls(**{**values, "data": values["data"] or {}})
