"""The contracts service against the real broker and database."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI

from contracts.main import create_app
from contracts.settings import Settings
from orderflow import topology
from orderflow.db import Pool
from orderflow.messages import ContractDrafted, OrderApproved
from orderflow_testkit.testing import Infra, eventually, get_messages, publish, queue_depth, running

Approve = Callable[..., OrderApproved]  # the `approve` fixture of conftest.py

SELLER = "苏州恒达机械制造有限公司"
PROBE = "probe.contract-drafted"
APPROVED = topology.CONTRACTS_APPROVED


def settings(infra: Infra, **overrides: Any) -> Settings:
    return Settings(
        database_url=infra.database_url,
        amqp_url=infra.url_as("contracts"),
        seller_name=SELLER,
        seller_address="苏州工业园区星湖街 328 号",
        **overrides,
    )


@asynccontextmanager
async def service(infra: Infra, **overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Pool]]:
    app: FastAPI = create_app(settings(infra, **overrides))
    async with running(app) as client:
        yield client, app.state.runtime.pool


async def probe(amqp: Any) -> None:
    """Our own queue of `contract.drafted` events, to see what the service publishes."""
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(PROBE, durable=True)
        await queue.bind(topology.EVENTS, routing_key=ContractDrafted.message_type)


async def send(amqp: Any, event: OrderApproved, *, message_id: str | None = None) -> str:
    return await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key=event.message_type,
        body=event.model_dump_json().encode(),
        message_id=message_id,
        message_type=event.message_type,
        correlation_id=str(event.order_id),
    )


async def contracts_of(client: httpx.AsyncClient, order_id: uuid.UUID, count: int) -> Any:
    async def listed() -> Any:
        response = await client.get("/api/v1/contracts", params={"order_id": str(order_id)})
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        return items if len(items) >= count else None

    return await eventually(listed)


async def settled(pool: Pool) -> None:
    """Wait until every message the service wrote is confirmed by the broker."""
    await eventually(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE sent_at IS NULL"))


def year_now(infra: Infra) -> int:
    return datetime.now(settings(infra).timezone).year


async def test_an_approval_yields_one_contract_and_one_event(
    infra: Infra, amqp: Any, approve: Approve
) -> None:
    async with service(infra) as (client, _):
        await probe(amqp)
        event = approve("product")
        await send(amqp, event)

        [listed] = await contracts_of(client, event.order_id, 1)
        number = f"HT-{year_now(infra)}-000001"
        assert listed["number"] == number
        assert listed["status"] == "drafted"
        assert listed["revision"] == 1
        assert listed["language"] == "zh"
        assert listed["superseded_by"] is None

        response = await client.get(f"/api/v1/contracts/{listed['id']}")
        assert response.status_code == 200
        record = response.json()
        assert record == listed
        content = record["content"]
        assert content["number"] == number
        assert content["order_id"] == str(event.order_id)
        assert content["seller"]["name"] == SELLER
        assert content["seller"]["address"] == "苏州工业园区星湖街 328 号"
        assert content["buyer"]["name"] == "上海精密机械有限公司"
        assert content["buyer"]["email"] == "li.na@example.cn"
        assert [line["amount"] for line in content["lines"]] == ["17100.00", "1280.00"]
        assert (content["subtotal"], content["tax"], content["total"]) == (
            "18380.00",
            "2389.40",
            "20769.40",
        )
        assert content["delivery"]["place"] == "上海市浦东新区张江路 88 号"
        assert content["payment"]["settlement_days"] == 30

        [message] = await get_messages(amqp, PROBE, 1)
        assert message.type == "contract.drafted"
        assert message.correlation_id == str(event.order_id)
        assert message.app_id == "contracts"
        assert message.headers["x-schema"] == "orderflow.contract.drafted"
        drafted = ContractDrafted.model_validate_json(message.body)
        assert str(drafted.contract_id) == record["id"]
        assert drafted.contract_number == number
        assert (drafted.order_id, drafted.revision) == (event.order_id, 1)
        assert drafted.salesperson.id == "zhang.wei"
        assert drafted.customer_name == "上海精密机械有限公司"
        assert (drafted.currency, str(drafted.total)) == ("CNY", "20769.40")
        assert json.loads(message.body)["total"] == "20769.40"

        missing = await client.get(f"/api/v1/contracts/{uuid.uuid4()}")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["title"] == "Contract not found"
        invalid = await client.get("/api/v1/contracts", params={"order_id": "PO-42"})
        assert invalid.status_code == 422
        assert invalid.headers["content-type"] == "application/problem+json"
        assert [e["pointer"] for e in invalid.json()["errors"]] == ["query:/order_id"]
        unnamed = await client.get("/api/v1/contracts")
        assert unnamed.status_code == 422
        none = await client.get("/api/v1/contracts", params={"order_id": str(uuid.uuid4())})
        assert none.json() == {"items": []}


async def test_a_repeated_approval_makes_no_second_contract(
    infra: Infra, amqp: Any, approve: Approve
) -> None:
    async with service(infra) as (client, pool):
        await probe(amqp)
        event = approve("service")
        first = await send(amqp, event)
        await send(amqp, event, message_id=first)  # the broker redelivers it
        # the router approves the same revision again, as a new message
        again = await send(amqp, event)

        async def handled() -> bool:
            done = await pool.fetchval(
                "SELECT count(*) FROM inbox WHERE consumer = 'contracts.order-approved'"
                " AND message_id = ANY($1::text[])",
                [first, again],
            )
            return bool(done == 2) and await queue_depth(amqp, APPROVED.name) == 0

        await eventually(handled)
        await settled(pool)
        [contract] = await contracts_of(client, event.order_id, 1)
        assert contract["language"] == "en"
        assert await pool.fetchval("SELECT count(*) FROM contracts") == 1
        assert await pool.fetchval("SELECT next_seq FROM contract_number_sequences") == 2
        [message] = await get_messages(amqp, PROBE, 1)
        assert ContractDrafted.model_validate_json(message.body).contract_id == uuid.UUID(
            contract["id"]
        )
        assert await queue_depth(amqp, PROBE) == 0
        assert await queue_depth(amqp, APPROVED.dlq) == 0


async def test_a_later_revision_supersedes_the_earlier_draft(
    infra: Infra, amqp: Any, approve: Approve
) -> None:
    async with service(infra) as (client, pool):
        await probe(amqp)
        order_id = uuid.uuid4()
        await send(amqp, approve("product", order_id=order_id, revision=1))
        [first] = await contracts_of(client, order_id, 1)

        def cheaper(document: dict[str, Any]) -> None:
            document["lines"][0]["unit_price"] = "80.00"

        await send(amqp, approve("product", order_id=order_id, revision=2, change=cheaper))
        second, earlier = await contracts_of(client, order_id, 2)
        year = year_now(infra)
        assert (second["revision"], second["number"], second["status"]) == (
            2,
            f"HT-{year}-000002",
            "drafted",
        )
        assert second["content"]["lines"][0]["amount"] == "16000.00"
        assert (earlier["id"], earlier["revision"], earlier["status"]) == (
            first["id"],
            1,
            "superseded",
        )
        assert earlier["superseded_by"] == second["id"]
        # still readable, with its terms as drafted
        kept = (await client.get(f"/api/v1/contracts/{first['id']}")).json()
        assert kept["status"] == "superseded"
        assert kept["content"] == first["content"]

        # a late approval of the superseded revision changes nothing
        await send(amqp, approve("product", order_id=order_id, revision=1))
        # approvals out of order: the older revision's contract is never drafted after a
        # newer one
        other = uuid.uuid4()
        await send(amqp, approve("service", order_id=other, revision=3))
        [newest] = await contracts_of(client, other, 1)
        await send(amqp, approve("service", order_id=other, revision=2))

        async def all_handled() -> bool:
            done = await pool.fetchval("SELECT count(*) FROM inbox")
            return bool(done == 5) and await queue_depth(amqp, APPROVED.name) == 0

        await eventually(all_handled)
        await settled(pool)
        assert [c["id"] for c in await contracts_of(client, order_id, 2)] == [
            second["id"],
            first["id"],
        ]
        assert [c["id"] for c in await contracts_of(client, other, 1)] == [newest["id"]]
        assert newest["number"] == f"HT-{year}-000003"
        assert await pool.fetchval("SELECT count(*) FROM contracts") == 3
        drafted = await get_messages(amqp, PROBE, 3)
        assert [ContractDrafted.model_validate_json(m.body).revision for m in drafted] == [1, 2, 3]
        assert await queue_depth(amqp, PROBE) == 0


async def test_a_malformed_approval_is_dead_lettered_and_the_consumer_goes_on(
    infra: Infra, amqp: Any, approve: Approve
) -> None:
    async with service(infra) as (client, _):
        broken = json.loads(approve("product").model_dump_json())
        broken["order_id"] = "not-an-order"
        del broken["totals"]
        await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key="order.approved",
            body=json.dumps(broken).encode(),
            message_type="order.approved",
        )

        def unpriced(document: dict[str, Any]) -> None:
            del document["lines"][1]["unit_price"]

        incomplete = approve("product", change=unpriced)
        await send(amqp, incomplete)

        dead = await get_messages(amqp, APPROVED.dlq, 2)
        reasons = [str(m.headers["x-orderflow-reason"]) for m in dead]
        assert "order_id" in reasons[0]
        assert "totals" in reasons[0]
        assert "/order/lines/1/unit_price" in reasons[1]
        assert all(m.headers["x-orderflow-queue"] == APPROVED.name for m in dead)
        assert json.loads(dead[1].body)["order_id"] == str(incomplete.order_id)

        # the consumer carries on, and the refused draft gave its number back
        good = approve("service")
        await send(amqp, good)
        [contract] = await contracts_of(client, good.order_id, 1)
        assert contract["number"] == f"HT-{year_now(infra)}-000001"
        response = await client.get(
            "/api/v1/contracts", params={"order_id": str(incomplete.order_id)}
        )
        assert response.json() == {"items": []}
        assert await queue_depth(amqp, APPROVED.name) == 0


async def test_concurrent_approvals_get_consecutive_numbers(
    infra: Infra, amqp: Any, approve: Approve
) -> None:
    # two instances of the service on the same broker and database; a small prefetch makes
    # each take its share of the burst. Every draft typesets its PDF while it holds the
    # number counter, so this is also the drafting throughput of the whole deployment.
    count = 200
    async with (
        service(infra, prefetch=4) as (_, pool),
        service(infra, prefetch=4) as (
            other,
            _,
        ),
    ):
        await probe(amqp)
        events = [approve("product" if i % 2 else "service") for i in range(count)]
        await asyncio.gather(*(send(amqp, e) for e in events))

        async def all_drafted() -> bool:
            return bool(await pool.fetchval("SELECT count(*) FROM contracts") == count)

        await eventually(all_drafted, timeout=120)
        await settled(pool)
        year = year_now(infra)
        rows = await pool.fetch(
            """SELECT c.number, c.order_id, c.document_sha256, d.sha256
               FROM contracts c JOIN contract_documents d
                 ON d.contract_id = c.id AND d.kind = 'drafted'"""
        )
        assert sorted(r["number"] for r in rows) == [
            f"HT-{year}-{i:06d}" for i in range(1, count + 1)
        ]
        assert {r["order_id"] for r in rows} == {e.order_id for e in events}
        # every contract has its own document, and each prints its own number
        assert all(r["document_sha256"] == r["sha256"] for r in rows)
        assert len({r["sha256"] for r in rows}) == count
        drafted = [
            ContractDrafted.model_validate_json(m.body)
            for m in await get_messages(amqp, PROBE, count)
        ]
        assert len({d.contract_number for d in drafted}) == count
        assert {d.order_id for d in drafted} == {e.order_id for e in events}
        assert await queue_depth(amqp, APPROVED.dlq) == 0
        # either instance answers for every contract
        some = events[37]
        [contract] = await contracts_of(other, some.order_id, 1)
        assert contract["content"]["buyer"]["name"] == some.order.customer.name
        assert (await other.get(contract["document"]["href"])).status_code == 200
