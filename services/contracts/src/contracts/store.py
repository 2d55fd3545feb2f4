"""What the handlers need of storage, as a protocol: contracts, their numbers and documents in
PostgreSQL (`adapters.repository.PostgresStore`, in the caller's transaction, with the outbox
in the same one), an in-memory store in the handler unit tests (`tests/fakes.py`).

Also the typed records the store returns to the handlers and the HTTP edge."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from orderflow.messages import Message

from .domain import ContractContent, ContractStatus, DocumentKind, PendingRender


@dataclass(frozen=True)
class Contract:
    """A drafted contract as stored: its terms and what happened to it since."""

    id: UUID
    number: str
    order_id: UUID
    revision: int
    status: ContractStatus
    content: ContractContent
    content_version: int
    language: str
    salesperson_id: str
    currency: str
    total: Any
    drafted_at: datetime
    status_changed_at: datetime
    superseded_by: UUID | None
    document_sha256: str | None
    sent_at: datetime | None
    sent_by: str | None
    signed_at: datetime | None
    signed_copy_sha256: str | None
    voided_at: datetime | None
    void_reason: str | None
    voided_by: str | None


@dataclass(frozen=True)
class Document:
    """A stored document, with its contract's number and the hash the contract recorded for
    it (both must match the bytes before they are served)."""

    id: UUID
    kind: DocumentKind
    media_type: str
    file_name: str | None
    size: int
    sha256: str
    content: bytes
    created_at: datetime
    number: str
    recorded_sha256: str | None


@dataclass(frozen=True)
class NewDocument:
    """A document to store; the table refuses to change or delete it afterwards."""

    id: UUID
    contract_id: UUID
    kind: DocumentKind
    media_type: str
    file_name: str | None
    data: bytes
    sha256: str
    at: datetime


@dataclass(frozen=True)
class Newest:
    """The order's latest drafted contract."""

    id: UUID
    revision: int


class Store(Protocol):
    """Reads and writes of one transaction; every write commits or rolls back with it."""

    async def lock_order(self, *, order_id: UUID) -> None:
        """Serialise drafting for one order until the transaction ends."""
        ...

    async def revisions(self, *, order_id: UUID) -> list[int]:
        """The revisions of the order that already have a contract, typeset or not."""
        ...

    async def take_number(self, *, key: int) -> int:
        """The lowest number handed back to the counter, else the counter's next one."""
        ...

    async def release_number(self, *, key: int, seq: int) -> None: ...

    async def add_pending(
        self,
        *,
        contract_id: UUID,
        content: ContractContent,
        key: int,
        seq: int,
        delivery: dict[str, Any] | None,
    ) -> None:
        """A numbered contract whose document is still to be typeset."""
        ...

    async def take_pending(self, *, contract_id: UUID) -> bool:
        """Remove a contract from those waiting; False when it is not waiting any more."""
        ...

    async def render_failed(self, *, contract_id: UUID, retry_in: float) -> int:
        """Count a failed typesetting; the attempts so far."""
        ...

    async def forget_delivery(self, *, consumer: str, message_id: str) -> None:
        """Take the approval out of the inbox, so that its dead letter, replayed, drafts."""
        ...

    async def newest_of_order(self, *, order_id: UUID) -> Newest: ...

    async def add(
        self, *, contract_id: UUID, content: ContractContent, document_sha256: str
    ) -> None: ...

    async def add_document(self, document: NewDocument) -> None: ...

    async def lock(self, *, contract_id: UUID) -> Contract | None:
        """The contract, locked until the transaction ends."""
        ...

    async def get(self, *, contract_id: UUID) -> Contract | None: ...

    async def of_order(self, *, order_id: UUID) -> list[Contract]:
        """The order's contracts, newest revision first."""
        ...

    async def document(self, *, contract_id: UUID, kind: DocumentKind) -> Document | None: ...

    async def mark(
        self, *, contract_id: UUID, status: ContractStatus, at: datetime, **columns: Any
    ) -> None:
        """The contract's new status since `at`, with the columns that go with it:
        `sent_by`; `signed_copy_sha256`; `void_reason` and `voided_by`."""
        ...

    async def supersede(
        self, *, order_id: UUID, before_revision: int, by: UUID, at: datetime
    ) -> list[str]:
        """Mark the order's earlier drafts superseded by a later contract; their numbers."""
        ...

    async def publish_event(self, event: Message, *, correlation_id: UUID) -> None:
        """An event for `orderflow.events`, sent when the transaction commits."""
        ...


#: A new transaction and its store: `async with begin() as store: ...` commits at the end,
#: rolls back on an exception.
Begin = Callable[[], AbstractAsyncContextManager[Store]]

__all__ = ["Begin", "Contract", "Document", "NewDocument", "Newest", "PendingRender", "Store"]
