"""What a crash exercises in typesetting outside the numbering transaction (decision 0026),
against the real broker and database: a lease taken over from a renderer that stopped, a
contract left numbered but never stored, and two revisions typeset out of order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from contracts import domain, handlers
from contracts.adapters import repository
from contracts.adapters.documents import TypstRenderer
from contracts.main import create_app
from orderflow.messages import ContractDrafted, OrderApproved
from orderflow_testkit.testing import Infra, eventually, get_messages, queue_depth, running

from .test_contracts import PROBE, contracts_of, probe, send, settings, settled, year_now

Approve = Callable[..., OrderApproved]


class Held(TypstRenderer):
    """Typesets only once `go` is set (never, for a renderer that stopped: a frozen or
    crashed replica); `started` once it holds a contract."""

    def __init__(self, *, hold: Callable[[domain.ContractContent], bool] = lambda _: True) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.started = asyncio.Event()
        self._hold = hold

    async def render(self, content: domain.ContractContent) -> bytes:
        if self._hold(content):
            self.started.set()
            await self.go.wait()
        return await super().render(content)


def recorded_stores(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What every `store_rendered` of every replica in this process answered."""
    results: list[bool] = []
    store_rendered = handlers.store_rendered

    async def recording(*args: Any) -> bool:
        stored = await store_rendered(*args)
        results.append(stored)
        return stored

    monkeypatch.setattr(handlers, "store_rendered", recording)
    return results


def frozen_replica(monkeypatch: pytest.MonkeyPatch, pool: Any) -> None:
    """The replica of `pool` claims nothing more, as a frozen process would not."""
    claim_renders = repository.claim_renders

    async def claim(of: Any, **kwargs: Any) -> list[domain.PendingRender]:
        return [] if of is pool else await claim_renders(of, **kwargs)

    monkeypatch.setattr(repository, "claim_renders", claim)


async def one_drafted(amqp: Any, order_id: uuid.UUID) -> None:
    [message] = await get_messages(amqp, PROBE, 1)
    assert ContractDrafted.model_validate_json(message.body).order_id == order_id
    assert await queue_depth(amqp, PROBE) == 0


async def test_a_lease_is_taken_over_from_a_renderer_that_stopped(
    infra: Infra, amqp: Any, approve: Approve, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = recorded_stores(monkeypatch)
    frozen = Held()
    first = create_app(settings(infra, render_lease_seconds=1), renderer=frozen)
    async with running(first):
        await probe(amqp)
        event = approve("product")
        await send(amqp, event)
        await asyncio.wait_for(frozen.started.wait(), timeout=30)
        pool = first.state.runtime.pool
        assert await pool.fetchval("SELECT claimed_until > now() FROM contract_renders")
        frozen_replica(monkeypatch, pool)

        second = create_app(settings(infra))
        async with running(second) as client:
            # the first replica's lease runs out; the second typesets the contract
            [contract] = await contracts_of(client, event.order_id, 1)
            assert contract["number"] == f"HT-{year_now(infra)}-000001"
            assert contract["document"] is not None
            assert results == [True]
            # the frozen replica comes back and finishes: it finds the contract gone
            frozen.go.set()
            await eventually(lambda: len(results) == 2, timeout=30)
            assert results == [True, False]
            await settled(pool)
            assert await pool.fetchval("SELECT count(*) FROM contracts") == 1
            assert await pool.fetchval("SELECT count(*) FROM contract_documents") == 1
            assert await pool.fetchval("SELECT count(*) FROM contract_renders") == 0
            await one_drafted(amqp, event.order_id)


async def test_a_contract_numbered_before_a_crash_is_typeset_at_the_next_start(
    infra: Infra, amqp: Any, approve: Approve, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = Held()
    first = create_app(settings(infra, render_lease_seconds=1), renderer=crashed)
    # a crash gives nothing back: the lease stays until it runs out
    release_leases = repository.release_leases

    async def kept(pool: Any, *, contract_ids: list[uuid.UUID]) -> None:
        return None

    monkeypatch.setattr(repository, "release_leases", kept)
    async with running(first):
        await probe(amqp)
        event = approve("product")
        await send(amqp, event)
        # numbered and acknowledged (the first transaction); never stored (the second)
        await asyncio.wait_for(crashed.started.wait(), timeout=30)
        pool = first.state.runtime.pool
        assert await pool.fetchval("SELECT count(*) FROM contracts") == 0
    monkeypatch.setattr(repository, "release_leases", release_leases)

    restarted = create_app(settings(infra))
    async with running(restarted) as client:
        [contract] = await contracts_of(client, event.order_id, 1)
        assert contract["number"] == f"HT-{year_now(infra)}-000001"
        pool = restarted.state.runtime.pool
        await settled(pool)
        assert await pool.fetchval("SELECT count(*) FROM contract_renders") == 0
        assert await pool.fetchval("SELECT count(*) FROM contracts") == 1
        await one_drafted(amqp, event.order_id)


async def test_the_newest_revision_stays_current_when_an_older_one_is_typeset_last(
    infra: Infra, amqp: Any, approve: Approve
) -> None:
    slow = Held(hold=lambda content: content.revision == 1)
    app = create_app(settings(infra), renderer=slow)
    async with running(app) as client:
        pool = app.state.runtime.pool
        await probe(amqp)
        order_id = uuid.uuid4()
        await send(amqp, approve("product", order_id=order_id, revision=1))
        await asyncio.wait_for(slow.started.wait(), timeout=30)
        await send(amqp, approve("product", order_id=order_id, revision=2))
        [newest] = await contracts_of(client, order_id, 1)
        assert newest["revision"] == 2
        # revision 1, numbered first, is stored after revision 2
        slow.go.set()
        current, older = await contracts_of(client, order_id, 2)
        year = year_now(infra)
        assert (current["revision"], current["status"], current["number"]) == (
            2,
            "drafted",
            f"HT-{year}-000002",
        )
        assert current["superseded_by"] is None
        assert (older["revision"], older["status"], older["number"]) == (
            1,
            "superseded",
            f"HT-{year}-000001",
        )
        assert older["superseded_by"] == current["id"]
        await settled(pool)
        drafted = await get_messages(amqp, PROBE, 2)
        assert [ContractDrafted.model_validate_json(m.body).revision for m in drafted] == [2, 1]
        assert await queue_depth(amqp, PROBE) == 0
