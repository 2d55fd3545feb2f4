"""One function per event, in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Protocol

import structlog

from orderflow import consumer, refusals, topology
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
from .store import Begin, Contract, NewDocument, Store

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


#: The inbox's name for the approvals' consumer: its queue's (decision 0027).
APPROVALS_CONSUMER = topology.CONTRACTS_APPROVED.name


@dataclass(frozen=True)
class Delivery:
    """The approval's message as it arrived, kept with its contract so that it can be
    dead-lettered after its transaction committed."""

    message_id: str
    body: str
    message_type: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    user_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, received: consumer.Delivery) -> Delivery:
        """From the runtime's delivery of the approval."""
        return cls(
            message_id=received.message_id,
            body=received.body.decode("utf-8", "replace"),
            message_type=received.message_type,
            correlation_id=received.correlation_id,
            reply_to=received.reply_to,
            exchange=received.exchange,
            routing_key=received.routing_key,
            user_id=received.user_id,
            headers={str(k): str(v) for k, v in received.headers.items()},
        )

    def stored(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_stored(cls, data: Mapping[str, Any] | None) -> Delivery | None:
        return cls(**data) if data else None


class DeadLetterSink(Protocol):
    async def __call__(self, delivery: Delivery, exc: BaseException) -> None: ...


@dataclass(frozen=True)
class StoredDocument:
    data: bytes
    sha256: str
    media_type: str
    contract_number: str
    kind: domain.DocumentKind


async def on_order_approved(
    conn: Connection | Store,
    event: OrderApproved,
    *,
    drafting: Drafting,
    delivery: Delivery | None = None,
    now: datetime | None = None,
) -> uuid.UUID | None:
    """Number the approved revision's contract and leave it to be typeset (`render_pending`),
    in the caller's short transaction; the new contract's id, None when there is nothing
    to draft. The counter's row is held only for this transaction, never while a document
    is typeset (decision 0026)."""
    store = repository.store_of(conn)
    bound = log.bind(order_id=str(event.order_id), revision=event.revision)
    await store.lock_order(order_id=event.order_id)
    drafted = await store.revisions(order_id=event.order_id)
    if event.revision in drafted:
        # the same approval again (a new message id for the same revision): one contract
        bound.info("contract already drafted for this revision")
        return None
    if drafted and max(drafted) > event.revision:
        # approvals arrived out of order; the later revision's contract is the one that counts
        bound.info("approval of an older revision ignored", newest=max(drafted))
        return None

    now = now or datetime.now(UTC)
    year = now.astimezone(drafting.timezone).year
    pattern = drafting.number_pattern
    key = domain.sequence_key(pattern, year=year)
    seq = await store.take_number(key=key)
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
    contract_id = uuid.uuid4()
    await store.add_pending(
        contract_id=contract_id,
        content=content,
        key=key,
        seq=seq,
        delivery=delivery.stored() if delivery else None,
    )
    bound.info("contract numbered", contract_number=content.number)
    return contract_id


async def store_rendered(begin: Begin, pending: domain.PendingRender, pdf: bytes) -> bool:
    """Store a typeset document and publish `contract.drafted`, in one short transaction;
    False when another renderer stored it first (nothing is then written twice)."""
    content, contract_id = pending.content, pending.contract_id
    document = _pdf(contract_id, domain.DocumentKind.DRAFTED, pdf, at=datetime.now(UTC))
    async with begin() as store:
        if not await store.take_pending(contract_id=contract_id):
            return False
        # one order's contracts are stored one after the other, so that whichever revision
        # is typeset last, the newest supersedes the others
        await store.lock_order(order_id=content.order_id)
        now = document.at
        await store.add(contract_id=contract_id, content=content, document_sha256=document.sha256)
        await store.add_document(document)
        superseded = await _supersede(store, content, contract_id=contract_id, at=now)
        await store.publish_event(_drafted(content, contract_id), correlation_id=content.order_id)
    log.info(
        "contract drafted",
        order_id=str(content.order_id),
        contract_number=content.number,
        superseded=superseded,
        document_bytes=len(pdf),
    )
    return True


def _pdf(
    contract_id: uuid.UUID,
    kind: domain.DocumentKind,
    data: bytes,
    *,
    at: datetime,
    file_name: str | None = None,
) -> NewDocument:
    """A PDF of the contract to store, with the hash it is checked against when served."""
    return NewDocument(
        id=uuid.uuid4(),
        contract_id=contract_id,
        kind=kind,
        media_type=domain.PDF_MEDIA_TYPE,
        file_name=file_name,
        data=data,
        sha256=domain.sha256(data),
        at=at,
    )


async def _supersede(
    store: Store, content: domain.ContractContent, *, contract_id: uuid.UUID, at: datetime
) -> list[str]:
    """The newest revision's contract supersedes the order's earlier drafts; an earlier one
    typeset after it (documents are typeset in parallel) is superseded as soon as drafted."""
    newest = await store.newest_of_order(order_id=content.order_id)
    by = newest.id
    before = newest.revision if newest.id != contract_id else content.revision
    return await store.supersede(order_id=content.order_id, before_revision=before, by=by, at=at)


def _drafted(content: domain.ContractContent, contract_id: uuid.UUID) -> ContractDrafted:
    return ContractDrafted(
        contract_id=contract_id,
        contract_number=content.number,
        order_id=content.order_id,
        revision=content.revision,
        salesperson=content.salesperson,
        customer_name=content.buyer.name,
        currency=content.currency,
        total=content.total,
        drafted_at=content.drafted_at,
    )


async def render_failed(
    begin: Begin,
    pending: domain.PendingRender,
    exc: BaseException,
    *,
    attempts: int,
    dead_letter: DeadLetterSink,
) -> None:
    """A document that failed to typeset is tried again; after `attempts` tries the approval
    is dead-lettered with the reason, as it would have been when typesetting still happened
    in its transaction, the contract is dropped and its number handed back, for the next
    draft to take."""
    async with begin() as store:
        tried = await store.render_failed(
            contract_id=pending.contract_id, retry_in=0.2 * 2**pending.attempts
        )
    bound = log.bind(contract_number=pending.content.number, attempts=tried)
    if tried < attempts:
        bound.warning("contract document failed to typeset, retrying", error=str(exc))
        return
    bound.error(
        "contract document keeps failing to typeset; approval dead-lettered", error=str(exc)
    )
    delivery = Delivery.from_stored(pending.delivery)
    if delivery is not None:
        # first the dead letter, then the release: a crash between the two leaves the
        # contract pending, to be tried (and dead-lettered) again; a dead letter sent twice
        # is one approval again, which the inbox makes one contract
        await dead_letter(delivery, exc)
    async with begin() as store:
        if not await store.take_pending(contract_id=pending.contract_id):
            return
        await store.release_number(key=pending.number_key, seq=pending.number_seq)
        if delivery is not None:
            await store.forget_delivery(consumer=APPROVALS_CONSUMER, message_id=delivery.message_id)


# --- the contract's life after drafting: sent, signed or voided ---------------------------

#: Who acted, as authenticated (`Caller.audit()`: id, kind, via, source). The contract keeps
#: the id in its `*_by` columns and events; the rest goes to the log line of the action.
Actor = Mapping[str, str]

#: The event each action publishes.
_ACTED: dict[domain.Action, type[ContractSent | ContractSigned | ContractVoided]] = {
    domain.Action.SEND: ContractSent,
    domain.Action.SIGN: ContractSigned,
    domain.Action.VOID: ContractVoided,
}


async def _locked(store: Store, contract_id: uuid.UUID, action: domain.Action) -> Contract:
    """The contract, locked, once the action is allowed in its status."""
    contract = await store.lock(contract_id=contract_id)
    if contract is None:
        raise ContractNotFound(contract_id)
    domain.transition(contract.status, action)
    return contract


async def _act(
    store: Store,
    contract: Contract,
    action: domain.Action,
    *,
    by: Actor,
    now: datetime,
    columns: Mapping[str, Any],
    told: Mapping[str, Any] | None = None,
) -> None:
    """Move the contract on and publish what happened: `columns` are what the new status
    sets beside its time, `told` the event's fields beyond those every contract event has
    (the same, unless named otherwise)."""
    status = domain.transition(contract.status, action)
    done = domain.past_tense(action)
    await store.mark(contract_id=contract.id, status=status, at=now, **columns)
    event = _ACTED[action].model_validate(
        {
            "contract_id": contract.id,
            "contract_number": contract.number,
            "order_id": contract.order_id,
            "revision": contract.revision,
            f"{done}_at": now,
            **(columns if told is None else told),
        }
    )
    await store.publish_event(event, correlation_id=contract.order_id)
    # hashes go to the log, never what a person wrote (a void's reason)
    hashes = {k: v for k, v in columns.items() if k.endswith("_sha256")}
    log.info(
        f"contract {done}",
        contract_number=contract.number,
        order_id=str(contract.order_id),
        by=dict(by),
        **hashes,
    )


async def send(
    conn: Connection | Store, *, contract_id: uuid.UUID, by: Actor, now: datetime
) -> None:
    """The contract went to the customer for signature."""
    store = repository.store_of(conn)
    contract = await _locked(store, contract_id, domain.Action.SEND)
    await _act(store, contract, domain.Action.SEND, by=by, now=now, columns={"sent_by": by["id"]})


async def sign(
    conn: Connection | Store,
    *,
    contract_id: uuid.UUID,
    signed_copy: bytes,
    file_name: str | None,
    by: Actor,
    now: datetime,
) -> str:
    """Record the signed copy the customer returned; its SHA-256."""
    store = repository.store_of(conn)
    contract = await _locked(store, contract_id, domain.Action.SIGN)
    if not domain.is_pdf(signed_copy):
        # the entrypoint checks this too; a contract is never signed by something else
        raise ValueError("the signed copy is not a PDF")
    document = _pdf(
        contract_id, domain.DocumentKind.SIGNED_COPY, signed_copy, at=now, file_name=file_name
    )
    await store.add_document(document)
    digest = document.sha256
    columns = {"signed_copy_sha256": digest}
    await _act(store, contract, domain.Action.SIGN, by=by, now=now, columns=columns)
    return digest


async def void(
    conn: Connection | Store, *, contract_id: uuid.UUID, reason: str, by: Actor, now: datetime
) -> None:
    """The contract will not be signed."""
    store = repository.store_of(conn)
    contract = await _locked(store, contract_id, domain.Action.VOID)
    await _act(
        store,
        contract,
        domain.Action.VOID,
        by=by,
        now=now,
        columns={"void_reason": reason, "voided_by": by["id"]},
        told={"reason": reason, "voided_by": by["id"]},
    )


async def stored_document(
    pool: Pool | Store, *, contract_id: uuid.UUID, kind: domain.DocumentKind
) -> StoredDocument:
    """A document as stored, after checking its bytes against the hashes recorded when it
    was stored; domain.DocumentCorrupt when they differ, for it must never be served."""
    store = repository.reader(pool)
    document = await store.document(contract_id=contract_id, kind=kind)
    if document is None:
        if await store.get(contract_id=contract_id) is None:
            raise ContractNotFound(contract_id)
        raise DocumentNotFound(contract_id, kind)
    recorded = tuple(h for h in (document.sha256, document.recorded_sha256) if h is not None)
    domain.verified(document.content, expected=recorded)
    return StoredDocument(
        data=document.content,
        sha256=document.sha256,
        media_type=document.media_type,
        contract_number=document.number,
        kind=kind,
    )
