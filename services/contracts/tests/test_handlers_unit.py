"""The contracts' handlers against an in-memory store: numbering, typesetting's outcome and
the contract's life after drafting, without PostgreSQL or RabbitMQ (the same flows over the
real servers are in test_contracts.py, test_lifecycle.py and test_render_recovery.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from contracts import domain, handlers
from contracts.domain import ContractStatus
from orderflow.consumer import PermanentError
from orderflow.messages import ContractDrafted, ContractSent, ContractSigned, ContractVoided

from .conftest import approval
from .fakes import MemoryStore

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
PDF = b"%PDF-1.7 the contract"
SIGNED = b"%PDF-1.7 the contract, signed"
BY = {"id": "zhang.wei", "kind": "person"}
SELLER = domain.Party(name="苏州恒达机械制造有限公司")


class NeverCalled:
    async def render(self, content: domain.ContractContent) -> bytes:
        raise AssertionError("handlers never typeset: the render worker does")


def drafting(pattern: str = domain.DEFAULT_NUMBER_PATTERN) -> handlers.Drafting:
    return handlers.Drafting(
        seller=SELLER,
        number_pattern=pattern,
        timezone=ZoneInfo("Asia/Shanghai"),
        renderer=NeverCalled(),
    )


async def approve(
    store: MemoryStore,
    *,
    order_id: uuid.UUID | None = None,
    revision: int = 1,
    now: datetime = NOW,
    pattern: str = domain.DEFAULT_NUMBER_PATTERN,
    message_id: str | None = None,
) -> uuid.UUID | None:
    """An approval through the handler in its own transaction, as the inbox runs it."""
    event = approval("product", order_id=order_id, revision=revision)
    delivery = handlers.Delivery(message_id=message_id or str(uuid.uuid4()), body="{}")
    async with store.begin() as tx:
        store.inbox.add((handlers.APPROVALS_CONSUMER, delivery.message_id))
        return await handlers.on_order_approved(
            tx, event, drafting=drafting(pattern), delivery=delivery, now=now
        )


async def render_all(store: MemoryStore) -> None:
    for pending in store.claim():
        assert await handlers.store_rendered(store.begin, pending, PDF)


async def drafted(store: MemoryStore) -> uuid.UUID:
    """One order approved and typeset: its contract's id."""
    await approve(store)
    await render_all(store)
    [contract] = store.contracts.values()
    return contract.id


async def test_an_approved_revision_is_numbered_once() -> None:
    store = MemoryStore()
    order_id = uuid.uuid4()
    first = await approve(store, order_id=order_id)
    assert first is not None
    # the same revision approved again (another message): nothing more while it waits ...
    assert await approve(store, order_id=order_id) is None
    assert [p.content.number for p in store.claim()] == ["HT-2026-000001"]
    await render_all(store)
    # ... nor once it is drafted
    assert await approve(store, order_id=order_id) is None
    assert store.numbers() == ["HT-2026-000001"]
    assert store.counters == {2026: 2}
    [event] = store.events(ContractDrafted)
    assert (event.contract_id, event.contract_number) == (first, "HT-2026-000001")
    # a second renderer whose lease ran out finds it gone and writes nothing
    stale = domain.PendingRender(
        contract_id=first,
        content=store.contracts[first].content,
        attempts=0,
        number_key=2026,
        number_seq=1,
        delivery=None,
    )
    assert not await handlers.store_rendered(store.begin, stale, PDF)
    assert len(store.events(ContractDrafted)) == 1
    assert len(store.documents) == 1


async def test_numbers_have_no_gaps_within_a_year_and_restart_with_the_next() -> None:
    store = MemoryStore()
    late = datetime(2026, 12, 31, 15, 59, tzinfo=UTC)  # 23:59 in Shanghai
    for when in (NOW, late, late + timedelta(minutes=1), late + timedelta(days=1)):
        await approve(store, now=when)
    await render_all(store)
    assert store.numbers() == [
        "HT-2026-000001",
        "HT-2026-000002",
        "HT-2027-000001",  # 00:00 in Shanghai: the year whose calendar the number carries
        "HT-2027-000002",
    ]


async def test_a_pattern_without_the_year_counts_on_across_years() -> None:
    store = MemoryStore()
    for when in (NOW, NOW.replace(year=2027), NOW.replace(year=2028)):
        await approve(store, now=when, pattern="SO{seq:05d}")
    await render_all(store)
    assert store.numbers() == ["SO00001", "SO00002", "SO00003"]
    assert list(store.counters) == [domain.NO_YEAR]


async def test_an_incomplete_order_is_refused_and_keeps_no_number() -> None:
    store = MemoryStore()
    event = approval("product")
    broken = event.model_copy(
        update={"totals": event.totals.model_copy(update={"subtotal": event.totals.total})}
    )
    with pytest.raises(PermanentError) as caught:
        async with store.begin() as tx:
            await handlers.on_order_approved(tx, broken, drafting=drafting(), now=NOW)
    assert caught.value.code == "incomplete_order"
    assert (store.waiting, store.counters) == ({}, {})
    await approve(store)
    assert [p.content.number for p in store.claim()] == ["HT-2026-000001"]


@pytest.mark.parametrize("typeset_last", [1, 2])
async def test_the_newest_revision_supersedes_whichever_is_typeset_last(
    typeset_last: int,
) -> None:
    store = MemoryStore()
    order_id = uuid.uuid4()
    await approve(store, order_id=order_id, revision=1)
    await approve(store, order_id=order_id, revision=2)
    # an approval of revision 1 arriving after revision 2's is not drafted at all
    assert await approve(store, order_id=order_id, revision=1, message_id="late") is None
    by_revision = {p.content.revision: p for p in store.claim()}
    first = by_revision.pop(3 - typeset_last)
    assert await handlers.store_rendered(store.begin, first, PDF)
    assert await handlers.store_rendered(store.begin, by_revision[typeset_last], PDF)

    [newest, older] = sorted(store.contracts.values(), key=lambda c: -c.revision)
    assert (newest.revision, newest.status, newest.superseded_by) == (
        2,
        ContractStatus.DRAFTED,
        None,
    )
    assert (older.status, older.superseded_by) == (ContractStatus.SUPERSEDED, newest.id)
    assert len(store.events(ContractDrafted)) == 2


async def test_a_contract_is_sent_signed_and_then_never_voided() -> None:
    store = MemoryStore()
    contract_id = await drafted(store)
    async with store.begin() as tx:
        await handlers.send(tx, contract_id=contract_id, by=BY, now=NOW)
    [sent] = store.events(ContractSent)
    assert (sent.contract_id, sent.sent_at, sent.sent_by) == (contract_id, NOW, "zhang.wei")
    assert store.contracts[contract_id].status is ContractStatus.SENT

    later = NOW + timedelta(days=2)
    async with store.begin() as tx:
        digest = await handlers.sign(
            tx, contract_id=contract_id, signed_copy=SIGNED, file_name="s.pdf", by=BY, now=later
        )
    [signed] = store.events(ContractSigned)
    assert (signed.signed_at, signed.signed_copy_sha256) == (later, digest)
    contract = store.contracts[contract_id]
    assert (contract.status, contract.signed_at, contract.signed_copy_sha256) == (
        ContractStatus.SIGNED,
        later,
        digest,
    )
    copy = await handlers.stored_document(
        store, contract_id=contract_id, kind=domain.DocumentKind.SIGNED_COPY
    )
    assert (copy.data, copy.contract_number) == (SIGNED, "HT-2026-000001")

    # a signed contract is neither sent again, nor signed again, nor voided
    with pytest.raises(domain.InvalidTransition):
        await handlers.send(store, contract_id=contract_id, by=BY, now=later)
    with pytest.raises(domain.InvalidTransition):
        await handlers.sign(
            store, contract_id=contract_id, signed_copy=SIGNED, file_name=None, by=BY, now=later
        )
    with pytest.raises(domain.InvalidTransition):
        await handlers.void(store, contract_id=contract_id, reason="no", by=BY, now=later)
    assert len(store.published) == 3  # drafted, sent, signed


async def test_a_draft_is_voided_with_its_reason_and_cannot_be_sent_after() -> None:
    store = MemoryStore()
    contract_id = await drafted(store)
    async with store.begin() as tx:
        await handlers.void(tx, contract_id=contract_id, reason="price changed", by=BY, now=NOW)
    [voided] = store.events(ContractVoided)
    assert (voided.reason, voided.voided_by, voided.voided_at) == (
        "price changed",
        "zhang.wei",
        NOW,
    )
    contract = store.contracts[contract_id]
    assert (contract.status, contract.void_reason, contract.voided_by) == (
        ContractStatus.VOIDED,
        "price changed",
        "zhang.wei",
    )
    with pytest.raises(domain.InvalidTransition) as refused:
        async with store.begin() as tx:
            await handlers.send(tx, contract_id=contract_id, by=BY, now=NOW)
    assert refused.value.current is ContractStatus.VOIDED
    assert store.contracts[contract_id].sent_at is None


async def test_a_draft_is_not_signed_before_it_is_sent_nor_by_something_not_a_pdf() -> None:
    store = MemoryStore()
    contract_id = await drafted(store)
    with pytest.raises(domain.InvalidTransition):
        async with store.begin() as tx:
            await handlers.sign(
                tx, contract_id=contract_id, signed_copy=SIGNED, file_name=None, by=BY, now=NOW
            )
    async with store.begin() as tx:
        await handlers.send(tx, contract_id=contract_id, by=BY, now=NOW)
    with pytest.raises(ValueError, match="not a PDF"):
        async with store.begin() as tx:
            await handlers.sign(
                tx, contract_id=contract_id, signed_copy=b"GIF89a", file_name=None, by=BY, now=NOW
            )
    assert store.contracts[contract_id].status is ContractStatus.SENT
    assert [d.kind for d in store.documents] == [domain.DocumentKind.DRAFTED]


async def test_acting_on_a_missing_contract_is_not_found() -> None:
    store = MemoryStore()
    missing = uuid.uuid4()
    with pytest.raises(handlers.ContractNotFound):
        await handlers.send(store, contract_id=missing, by=BY, now=NOW)
    with pytest.raises(handlers.ContractNotFound):
        await handlers.stored_document(store, contract_id=missing, kind=domain.DocumentKind.DRAFTED)
    contract_id = await drafted(store)
    with pytest.raises(handlers.DocumentNotFound):
        await handlers.stored_document(
            store, contract_id=contract_id, kind=domain.DocumentKind.SIGNED_COPY
        )


async def test_a_render_that_keeps_failing_gives_its_number_to_the_next_contract() -> None:
    store = MemoryStore()
    dead: list[tuple[handlers.Delivery, BaseException]] = []

    async def dead_letter(delivery: handlers.Delivery, exc: BaseException) -> None:
        dead.append((delivery, exc))

    await approve(store, message_id="unlucky")
    failure = RuntimeError("template product.zh.typ: unclosed delimiter")
    for attempt in range(1, 4):
        [pending] = store.claim()
        assert pending.attempts == attempt - 1
        await handlers.render_failed(
            store.begin, pending, failure, attempts=3, dead_letter=dead_letter
        )
        # dead-lettered on the third failure only, and only then is the number given back
        assert len(dead) == (1 if attempt == 3 else 0)
        assert store.released == ({(2026, 1)} if attempt == 3 else set())

    [(delivery, exc)] = dead
    assert (delivery.message_id, exc) == ("unlucky", failure)
    assert store.waiting == {}
    # out of the inbox, so that replaying the dead letter drafts it
    assert (handlers.APPROVALS_CONSUMER, "unlucky") not in store.inbox

    await approve(store, message_id="next")
    await approve(store, message_id="after")
    await render_all(store)
    assert store.numbers() == ["HT-2026-000001", "HT-2026-000002"]
    assert store.released == set()
    assert [e.contract_number for e in store.events(ContractDrafted)] == [
        "HT-2026-000001",
        "HT-2026-000002",
    ]
