"""What a channel sends, and how a send fails."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from ..records import Delivery
from ..settings import RateLimit


@dataclass(frozen=True)
class Outgoing:
    """One delivery as stored, for a channel to send."""

    id: UUID
    event_id: str
    event_type: str
    recipient: str
    recipient_name: str | None
    channel: str
    address: str | None
    order_id: UUID | None
    subject: str
    body: str
    html: str | None
    markdown: str | None
    link: str
    language: str
    created_at: datetime
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, delivery: Delivery) -> Outgoing:
        return cls(**{f.name: getattr(delivery, f.name) for f in fields(cls)})


class SendError(Exception):
    """The channel did not take the message.

    `permanent`: retrying the same message cannot help (refused recipient, a 4xx answer);
    `retry_after`: the receiver said when to come back (HTTP 429 Retry-After).
    """

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class Channel(Protocol):
    """A way out: email, or one chat robot."""

    name: str
    #: the key its rate limit is counted under (one robot), None when it has none
    rate_key: str | None
    rate_limit: RateLimit | None

    async def send(self, message: Outgoing) -> None: ...

    async def close(self) -> None: ...
