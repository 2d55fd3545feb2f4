"""The contracts' store in memory, for handler tests without PostgreSQL or RabbitMQ: it keeps
what `adapters.repository.PostgresStore` would (counters and handed-back numbers, contracts
waiting to be typeset, contracts with their documents, the inbox's approvals) and the events
the outbox would publish. `begin()` is a transaction: an exception inside it undoes every
write, as a rollback would."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from contracts import domain
from contracts.domain import ContractContent, ContractStatus, DocumentKind, PendingRender
from contracts.store import Contract, Document, NewDocument, Newest, Store
from orderflow.messages import Message

#: Per status a contract moves to, the column of its time (as the table has it).
_AT = {
    ContractStatus.SENT: "sent_at",
    ContractStatus.SIGNED: "signed_at",
    ContractStatus.VOIDED: "voided_at",
}


@dataclass
class MemoryStore:
    #: counter key -> its next number
    counters: dict[int, int] = field(default_factory=dict)
    #: (counter key, number) handed back after a failed typesetting
    released: set[tuple[int, int]] = field(default_factory=set)
    #: contracts waiting for their document, by id
    waiting: dict[UUID, PendingRender] = field(default_factory=dict)
    contracts: dict[UUID, Contract] = field(default_factory=dict)
    documents: list[NewDocument] = field(default_factory=list)
    #: (consumer, message id) of the messages the inbox has taken in
    inbox: set[tuple[str, str]] = field(default_factory=set)
    #: (event, correlation id) in the order they were published
    published: list[tuple[Message, UUID]] = field(default_factory=list)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Store]:
        before = copy.deepcopy(vars(self))
        try:
            yield self
        except BaseException:
            vars(self).update(before)
            raise

    # --- the Store ----------------------------------------------------------------------

    async def lock_order(self, *, order_id: UUID) -> None:
        return None  # one test, one task: nothing runs beside it

    async def revisions(self, *, order_id: UUID) -> list[int]:
        every = [*self.contracts.values(), *(p.content for p in self.waiting.values())]
        return [c.revision for c in every if c.order_id == order_id]

    async def take_number(self, *, key: int) -> int:
        handed_back = sorted(seq for k, seq in self.released if k == key)
        if handed_back:
            self.released.discard((key, handed_back[0]))
            return handed_back[0]
        seq = self.counters.get(key, 1)
        self.counters[key] = seq + 1
        return seq

    async def release_number(self, *, key: int, seq: int) -> None:
        assert (key, seq) not in self.released, "a number handed back twice"
        self.released.add((key, seq))

    async def add_pending(
        self,
        *,
        contract_id: UUID,
        content: ContractContent,
        key: int,
        seq: int,
        delivery: dict[str, Any] | None,
    ) -> None:
        self.waiting[contract_id] = PendingRender(
            contract_id=contract_id,
            content=content,
            attempts=0,
            number_key=key,
            number_seq=seq,
            delivery=delivery,
        )

    async def take_pending(self, *, contract_id: UUID) -> bool:
        return self.waiting.pop(contract_id, None) is not None

    async def render_failed(self, *, contract_id: UUID, retry_in: float) -> int:
        pending = self.waiting[contract_id]
        self.waiting[contract_id] = replace(pending, attempts=pending.attempts + 1)
        return pending.attempts + 1

    async def forget_delivery(self, *, consumer: str, message_id: str) -> None:
        self.inbox.discard((consumer, message_id))

    async def newest_of_order(self, *, order_id: UUID) -> Newest:
        newest = max(
            (c for c in self.contracts.values() if c.order_id == order_id),
            key=lambda c: c.revision,
        )
        return Newest(id=newest.id, revision=newest.revision)

    async def add(
        self, *, contract_id: UUID, content: ContractContent, document_sha256: str
    ) -> None:
        assert contract_id not in self.contracts, "a contract stored twice"
        self.contracts[contract_id] = Contract(
            id=contract_id,
            number=content.number,
            order_id=content.order_id,
            revision=content.revision,
            status=ContractStatus.DRAFTED,
            content=content,
            content_version=content.version,
            language=content.language.value,
            salesperson_id=content.salesperson.id,
            currency=content.currency,
            total=content.total,
            drafted_at=content.drafted_at,
            status_changed_at=content.drafted_at,
            superseded_by=None,
            document_sha256=document_sha256,
            sent_at=None,
            sent_by=None,
            signed_at=None,
            signed_copy_sha256=None,
            voided_at=None,
            void_reason=None,
            voided_by=None,
        )

    async def add_document(self, document: NewDocument) -> None:
        self.documents.append(document)

    async def lock(self, *, contract_id: UUID) -> Contract | None:
        return self.contracts.get(contract_id)

    async def get(self, *, contract_id: UUID) -> Contract | None:
        return self.contracts.get(contract_id)

    async def of_order(self, *, order_id: UUID) -> list[Contract]:
        mine = [c for c in self.contracts.values() if c.order_id == order_id]
        return sorted(mine, key=lambda c: -c.revision)

    async def document(self, *, contract_id: UUID, kind: DocumentKind) -> Document | None:
        contract = self.contracts.get(contract_id)
        found = [d for d in self.documents if d.contract_id == contract_id and d.kind is kind]
        if contract is None or not found:
            return None
        d = found[0]
        recorded = (
            contract.document_sha256
            if kind is DocumentKind.DRAFTED
            else contract.signed_copy_sha256
        )
        return Document(
            id=d.id,
            kind=d.kind,
            media_type=d.media_type,
            file_name=d.file_name,
            size=len(d.data),
            sha256=d.sha256,
            content=d.data,
            created_at=d.at,
            number=contract.number,
            recorded_sha256=recorded,
        )

    async def mark(
        self, *, contract_id: UUID, status: ContractStatus, at: datetime, **columns: Any
    ) -> None:
        contract = self.contracts[contract_id]
        changes = {_AT[status]: at, **columns}
        self.contracts[contract_id] = replace(
            contract, status=status, status_changed_at=at, **changes
        )

    async def supersede(
        self, *, order_id: UUID, before_revision: int, by: UUID, at: datetime
    ) -> list[str]:
        numbers = []
        for c in list(self.contracts.values()):
            if (
                c.order_id == order_id
                and c.revision < before_revision
                and c.status in domain.SUPERSEDABLE
            ):
                self.contracts[c.id] = replace(
                    c, status=ContractStatus.SUPERSEDED, superseded_by=by, status_changed_at=at
                )
                numbers.append(c.number)
        return numbers

    async def publish_event(self, event: Message, *, correlation_id: UUID) -> None:
        self.published.append((event, correlation_id))

    # --- what a test asks ---------------------------------------------------------------

    def claim(self) -> list[PendingRender]:
        """Every contract waiting for its document, in number order (as a renderer leases)."""
        return sorted(self.waiting.values(), key=lambda p: p.content.number)

    def events(self, kind: type[Message]) -> list[Any]:
        return [e for e, _ in self.published if isinstance(e, kind)]

    def numbers(self) -> list[str]:
        return sorted(c.number for c in self.contracts.values())
