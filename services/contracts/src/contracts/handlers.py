"""One function per event, in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Protocol

import structlog

from orderflow import outbox, refusals, topology
from orderflow.consumer import PermanentError
from orderflow.db import Connection, Pool
from orderflow.messages import (
    ContractDrafted,
    ContractSent,
    ContractSigned,
    ContractVoided,
    OrderApproved,
)

from . import domain
from .adapters import repository

log = structlog.get_logger(__name__)


class Renderer(Protocol):
    async def render(self, content: domain.ContractContent) -> bytes: ...


@dataclass(frozen=True)
class Drafting:
    """What every contract takes from the service's settings, and what typesets it."""

    seller: domain.Party
    number_pattern: str
    timezone: tzinfo
    renderer: Renderer


class ContractNotFound(Exception):
    def __init__(self, contract_id: uuid.UUID) -> None:
        super().__init__(f"there is no contract {contract_id}")
        self.contract_id = contract_id


class DocumentNotFound(Exception):
    def __init__(self, contract_id: uuid.UUID, kind: domain.DocumentKind) -> None:
        what = "signed copy" if kind is domain.DocumentKind.SIGNED_COPY else "document"
        super().__init__(f"contract {contract_id} has no {what}")
        self.contract_id = contract_id
        self.kind = kind


@dataclass(frozen=True)
class StoredDocument:
    data: bytes
    sha256: str
    media_type: str
    contract_number: str
    kind: domain.DocumentKind


async def on_order_approved(
    conn: Connection, event: OrderApproved, *, drafting: Drafting
) -> uuid.UUID | None:
    """Draft the approved revision's contract; the new contract's id, None when there is
    nothing to draft."""
    bound = log.bind(order_id=str(event.order_id), revision=event.revision)
    await repository.lock_order(conn, order_id=event.order_id)
    drafted = await repository.revisions(conn, order_id=event.order_id)
    if event.revision in drafted:
        # the same approval again (a new message id for the same revision): one contract
        bound.info("contract already drafted for this revision")
        return None
    if drafted and max(drafted) > event.revision:
        # approvals arrived out of order; the later revision's contract is the one that counts
        bound.info("approval of an older revision ignored", newest=max(drafted))
        return None

    now = datetime.now(UTC)
    year = now.astimezone(drafting.timezone).year
    pattern = drafting.number_pattern
    seq = await repository.next_number(conn, key=domain.sequence_key(pattern, year=year))
    try:
        content = domain.draft(
            event,
            number=domain.format_number(pattern, year=year, seq=seq),
            seller=drafting.seller,
            drafted_at=now,
        )
    except domain.IncompleteOrder as exc:
        # raising rolls the transaction back, the number with it
        raise PermanentError(
            f"cannot draft a contract: {exc}", problems=exc.problems, code=refusals.INCOMPLETE_ORDER
        ) from exc

    # Typeset here, inside the transaction and after the number is taken: the number is
    # printed on every page and exists only once this transaction has taken it from the
    # counter (a number taken in a transaction of its own would be lost, leaving a gap,
    # whenever typesetting then failed). So a `contract.drafted` always has its document,
    # and a template that fails rolls the number back with everything else; the message is
    # retried and then dead-lettered with the template's error, to be replayed once the
    # template is fixed. The price: the counter's row stays locked while the document is
    # typeset (30 to 120 ms a contract, measured on two shared cores), which caps drafting
    # at some 10 to 30 contracts a second per counter across all replicas: far above the
    # rate at which orders are approved.
    pdf = await drafting.renderer.render(content)
    digest = domain.sha256(pdf)

    contract_id = uuid.uuid4()
    await repository.add(conn, contract_id=contract_id, content=content, document_sha256=digest)
    await repository.add_document(
        conn,
        document_id=uuid.uuid4(),
        contract_id=contract_id,
        kind=domain.DocumentKind.DRAFTED,
        media_type=domain.PDF_MEDIA_TYPE,
        file_name=None,
        data=pdf,
        sha256=digest,
        at=now,
    )
    superseded = await repository.supersede(
        conn, order_id=event.order_id, before_revision=event.revision, by=contract_id, at=now
    )
    await outbox.enqueue(
        conn,
        ContractDrafted(
            contract_id=contract_id,
            contract_number=content.number,
            order_id=event.order_id,
            revision=event.revision,
            salesperson=content.salesperson,
            customer_name=content.buyer.name,
            currency=content.currency,
            total=content.total,
            drafted_at=now,
        ),
        exchange=topology.EVENTS,
        correlation_id=event.order_id,
    )
    bound.info(
        "contract drafted",
        contract_number=content.number,
        superseded=superseded,
        document_bytes=len(pdf),
    )
    return contract_id


# --- the contract's life after drafting: sent, signed or voided ---------------------------

#: Who acted, as authenticated (`Caller.audit()`: id, kind, via, source). The contract keeps
#: the id in its `*_by` columns and events; the rest goes to the log line of the action.
Actor = Mapping[str, str]


async def _act(conn: Connection, contract_id: uuid.UUID, action: domain.Action) -> dict[str, Any]:
    row = await repository.lock(conn, contract_id=contract_id)
    if row is None:
        raise ContractNotFound(contract_id)
    domain.transition(domain.ContractStatus(row["status"]), action)
    return row


async def send(conn: Connection, *, contract_id: uuid.UUID, by: Actor, now: datetime) -> None:
    """The contract went to the customer for signature."""
    row = await _act(conn, contract_id, domain.Action.SEND)
    await repository.mark_sent(conn, contract_id=contract_id, at=now, by=by["id"])
    await outbox.enqueue(
        conn,
        ContractSent(
            contract_id=contract_id,
            contract_number=row["number"],
            order_id=row["order_id"],
            revision=row["revision"],
            sent_at=now,
            sent_by=by["id"],
        ),
        exchange=topology.EVENTS,
        correlation_id=row["order_id"],
    )
    log.info(
        "contract sent", contract_number=row["number"], order_id=str(row["order_id"]), by=dict(by)
    )


async def sign(
    conn: Connection,
    *,
    contract_id: uuid.UUID,
    signed_copy: bytes,
    file_name: str | None,
    by: Actor,
    now: datetime,
) -> str:
    """Record the signed copy the customer returned; its SHA-256."""
    row = await _act(conn, contract_id, domain.Action.SIGN)
    if not domain.is_pdf(signed_copy):
        # the entrypoint checks this too; a contract is never signed by something else
        raise ValueError("the signed copy is not a PDF")
    digest = domain.sha256(signed_copy)
    await repository.add_document(
        conn,
        document_id=uuid.uuid4(),
        contract_id=contract_id,
        kind=domain.DocumentKind.SIGNED_COPY,
        media_type=domain.PDF_MEDIA_TYPE,
        file_name=file_name,
        data=signed_copy,
        sha256=digest,
        at=now,
    )
    await repository.mark_signed(conn, contract_id=contract_id, at=now, signed_copy_sha256=digest)
    await outbox.enqueue(
        conn,
        ContractSigned(
            contract_id=contract_id,
            contract_number=row["number"],
            order_id=row["order_id"],
            revision=row["revision"],
            signed_at=now,
            signed_copy_sha256=digest,
        ),
        exchange=topology.EVENTS,
        correlation_id=row["order_id"],
    )
    log.info(
        "contract signed",
        contract_number=row["number"],
        order_id=str(row["order_id"]),
        signed_copy_sha256=digest,
        by=dict(by),
    )
    return digest


async def void(
    conn: Connection, *, contract_id: uuid.UUID, reason: str, by: Actor, now: datetime
) -> None:
    """The contract will not be signed."""
    row = await _act(conn, contract_id, domain.Action.VOID)
    await repository.mark_voided(conn, contract_id=contract_id, at=now, reason=reason, by=by["id"])
    await outbox.enqueue(
        conn,
        ContractVoided(
            contract_id=contract_id,
            contract_number=row["number"],
            order_id=row["order_id"],
            revision=row["revision"],
            voided_at=now,
            reason=reason,
            voided_by=by["id"],
        ),
        exchange=topology.EVENTS,
        correlation_id=row["order_id"],
    )
    log.info(
        "contract voided", contract_number=row["number"], order_id=str(row["order_id"]), by=dict(by)
    )


async def stored_document(
    pool: Pool, *, contract_id: uuid.UUID, kind: domain.DocumentKind
) -> StoredDocument:
    """A document as stored, after checking its bytes against the hashes recorded when it
    was stored; domain.DocumentCorrupt when they differ, for it must never be served."""
    row = await repository.document(pool, contract_id=contract_id, kind=kind)
    if row is None:
        if await repository.get(pool, contract_id=contract_id) is None:
            raise ContractNotFound(contract_id)
        raise DocumentNotFound(contract_id, kind)
    data = bytes(row["content"])
    recorded = tuple(h for h in (row["sha256"], row["recorded_sha256"]) if h is not None)
    domain.verified(data, expected=recorded)
    return StoredDocument(
        data=data,
        sha256=row["sha256"],
        media_type=row["media_type"],
        contract_number=row["number"],
        kind=kind,
    )
