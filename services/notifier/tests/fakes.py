"""The notifier's store in memory, for handler tests without PostgreSQL or RabbitMQ: it keeps
what `adapters.repository.PostgresStore` would (one notification per event, recipient and
channel; the inbox delivered as written) and the events the outbox would publish."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from notifier import domain
from notifier.records import DELIVERED, PENDING, Delivery
from orderflow.db import Connection
from orderflow.messages import NotificationDelivered
from orderflow.messages.base import Message


@dataclass
class FakeStore:
    kept: dict[tuple[str, str, str], Delivery] = field(default_factory=dict)
    #: (event, correlation id) in the order they were published
    published: list[tuple[Message, UUID | None]] = field(default_factory=list)

    async def add(
        self, conn: Connection, *, event_id: str, notice: domain.Notice, recipient_name: str | None
    ) -> Delivery | None:
        key = (event_id, notice.recipient, notice.channel)
        if key in self.kept:
            return None
        now = datetime.now(UTC)
        inbox = notice.channel == domain.INBOX
        self.kept[key] = Delivery(
            id=uuid.uuid4(),
            event_id=event_id,
            event_type=notice.event_type,
            recipient=notice.recipient,
            recipient_name=recipient_name,
            channel=notice.channel,
            address=notice.address,
            order_id=notice.order_id,
            title=notice.title,
            subject=notice.subject,
            body=notice.body,
            html=notice.html,
            markdown=notice.markdown,
            link=notice.link,
            language=notice.language,
            data=notice.data,
            status=DELIVERED if inbox else PENDING,
            attempts=0,
            next_attempt_at=notice.not_before or now,
            last_error=None,
            created_at=now,
            updated_at=now,
            delivered_at=now if inbox else None,
            failed_at=None,
            read_at=None,
        )
        return self.kept[key]

    async def publish(
        self, conn: Connection, event: Message, *, correlation_id: UUID | None
    ) -> None:
        self.published.append((event, correlation_id))

    # --- what a test asks ---------------------------------------------------------------

    def notices(self, recipient: str | None = None) -> list[Delivery]:
        return [d for d in self.kept.values() if recipient is None or d.recipient == recipient]

    def who(self) -> list[tuple[str, str]]:
        """(recipient, channel) of every notification kept, sorted."""
        return sorted((d.recipient, d.channel) for d in self.kept.values())

    @property
    def delivered(self) -> list[str]:
        """The recipients of the `notification.delivered` events published."""
        return [e.recipient for e, _ in self.published if isinstance(e, NotificationDelivered)]
