"""Recovery on the real servers: the broker and the database go away and come back while
orders are in flight; services reconnect by themselves, report not-ready meanwhile, and
every order still reaches its contract.

These tests restart servers, so they run on a RabbitMQ node and a PostgreSQL cluster of
their own (`orderflow_testkit.localservers`), never on the machine's shared ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from orderflow import topology
from orderflow.publisher import Publisher, PublishError
from orderflow_testkit.localservers import LocalPostgres, LocalRabbit, wait_port
from orderflow_testkit.testing import (
    Infra,
    answer_review,
    bearer,
    eventually,
    example_order,
    issue_key_for,
    provisioned,
    publish,
    queue_depth,
    service_processes,
    submit_with_spec,
    take_review,
    wait_status,
)

pytestmark = pytest.mark.faults


# the servers run as their own system users, which cannot enter pytest's private tmp_path
@pytest.fixture
def rabbit() -> Iterator[LocalRabbit]:
    node = LocalRabbit(Path(tempfile.mkdtemp(prefix="orderflow-rabbit-")))
    node.start()
    try:
        yield node
    finally:
        node.destroy()


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    cluster = LocalPostgres(Path(tempfile.mkdtemp(prefix="orderflow-pg-")))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
async def local_infra(rabbit: LocalRabbit, postgres: LocalPostgres) -> Infra:
    conn = await asyncpg.connect(postgres.url())
    try:
        await conn.execute("CREATE DATABASE orderflow")
    finally:
        await conn.close()
    # the node's own users: each service, each department, as a deployment has them
    return await asyncio.to_thread(
        provisioned,
        rabbit.admin(),
        amqp_url=rabbit.url,
        database_url=postgres.url("orderflow"),
        vhost="/",
        database="orderflow",
    )


@contextlib.asynccontextmanager
async def system(infra: Infra, log_dir: Path) -> AsyncIterator[dict[str, Any]]:
    async with service_processes(infra, log_dir) as services:
        key = bearer(await issue_key_for(infra.database_url))
        clients = {
            name: httpx.AsyncClient(base_url=s.url, timeout=10, headers=key)
            for name, s in services.items()
        }
        try:
            yield {"services": services, "clients": clients}
        except BaseException:
            for s in services.values():
                print(f"----- {s.name} -----\n{s.log_tail(60)}")
            raise
        finally:
            for c in clients.values():
                await c.aclose()


async def readiness(clients: dict[str, httpx.AsyncClient]) -> dict[str, int]:
    """Every service's readiness, asked at once (a probe may take a few seconds)."""

    async def one(client: httpx.AsyncClient) -> int:
        try:
            return (await client.get("/health/ready")).status_code
        except httpx.HTTPError:
            return 0

    codes = await asyncio.gather(*(one(c) for c in clients.values()))
    return dict(zip(clients, codes, strict=True))


async def watch_outage(
    clients: dict[str, httpx.AsyncClient], outage: Any
) -> tuple[float, set[str]]:
    """Run the blocking `outage` (stop + start of a server) while polling readiness; which
    services reported not-ready during it."""
    not_ready: set[str] = set()
    task = asyncio.create_task(asyncio.to_thread(outage))
    while not task.done():
        for name, code in (await readiness(clients)).items():
            if code == 503:
                not_ready.add(name)
        await asyncio.sleep(0.2)
    return await task, not_ready


async def until_ready(clients: dict[str, httpx.AsyncClient], timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if all(code == 200 for code in (await readiness(clients)).values()):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"not ready again within {timeout}s: {await readiness(clients)}")


async def approve_all(amqp_url: str, departments: list[str]) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        for department in departments:
            await answer_review(connection, await take_review(connection, department))
    finally:
        await connection.close()


@pytest.mark.timeout(300)
async def test_broker_restart_mid_review(
    local_infra: Infra, rabbit: LocalRabbit, tmp_path: Path
) -> None:
    async with system(local_infra, tmp_path) as sys_:
        clients = sys_["clients"]
        intake = clients["intake"]
        # technical requirements: submitted from a draft with the specification attached
        created = await submit_with_spec(intake, example_order("order-product"))
        order_id = created["id"]
        await wait_status(intake, order_id, "in_review")

        away, not_ready = await watch_outage(clients, lambda: _broker_away(rabbit))
        # every service noticed the broker was gone
        assert not_ready == set(clients), f"not-ready seen for {not_ready} during {away:.1f}s"
        await until_ready(clients)

        # submitted during recovery too: the outbox waits for the broker
        second = await intake.post(
            "/api/v1/orders", params={"submit": "true"}, json=example_order("order-service")
        )
        assert second.status_code == 201, second.text

        # the consumers came back: reviews requested before the restart are still answered
        await approve_all(local_infra.amqp_url, ["supervisor", "supervisor"])
        await approve_all(
            local_infra.amqp_url,
            ["production", "finance", "technical", "service_delivery", "finance"],
        )
        await wait_status(intake, order_id, "contract_drafted", timeout=60)
        await wait_status(intake, second.json()["id"], "contract_drafted", timeout=60)


@pytest.mark.timeout(300)
async def test_database_crash_mid_review(
    local_infra: Infra, postgres: LocalPostgres, tmp_path: Path
) -> None:
    async with system(local_infra, tmp_path) as sys_:
        clients = sys_["clients"]
        intake = clients["intake"]
        created = await intake.post(
            "/api/v1/orders", params={"submit": "true"}, json=example_order("order-service")
        )
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        await wait_status(intake, order_id, "in_review")

        # verdicts arrive while the database is down: they wait in the queue, are retried,
        # and applied once when it is back
        connection = await aio_pika.connect_robust(local_infra.amqp_url)
        try:
            review = await take_review(connection, "supervisor")
            away, not_ready = await watch_outage(clients, lambda: _crash(postgres, connection))
            assert not_ready == set(clients), f"not-ready seen for {not_ready} in {away:.1f}s"
            await answer_review(connection, review)
        finally:
            await connection.close()
        await until_ready(clients)
        await approve_all(local_infra.amqp_url, ["service_delivery", "finance"])
        await wait_status(intake, order_id, "contract_drafted", timeout=60)


def _broker_away(rabbit: LocalRabbit) -> float:
    rabbit.stop()
    time.sleep(4)  # long enough for every readiness probe to notice
    rabbit.start()
    return 4.0


def _crash(postgres: LocalPostgres, _: Any) -> float:
    postgres.stop("immediate")
    time.sleep(4)  # long enough for every readiness probe to notice
    postgres.start()
    return 4.0


def _beam_pid(rabbit: LocalRabbit) -> int:
    # the Erlang VM's own process id, as the node reports it
    return int(rabbit.rabbitmqctl("eval", "os:getpid().").strip().strip('"'))


@pytest.mark.timeout(120)
async def test_a_publish_to_a_frozen_broker_times_out(rabbit: LocalRabbit) -> None:
    publisher = Publisher(rabbit.url, app_id="probe", timeout=2)
    await publisher.connect()
    try:
        await topology.declare(publisher.channel)
        pid = _beam_pid(rabbit)
        os.kill(pid, signal.SIGSTOP)  # the broker neither answers nor closes the connection
        try:
            began = time.monotonic()
            with pytest.raises(PublishError):
                await publisher.publish(
                    exchange=topology.EVENTS,
                    routing_key="order.withdrawn",
                    body=b"{}",
                    message_id="frozen",
                    message_type="order.withdrawn",
                )
            assert time.monotonic() - began < 6
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        await publisher.close()


@pytest.mark.timeout(180)
async def test_sigterm_lets_the_messages_in_flight_finish(infra: Infra, tmp_path: Path) -> None:
    """Approvals keep arriving while contracts is stopped with SIGTERM: every message is
    either done (its contract numbered or drafted, and the message acknowledged) or still
    waiting in the queue, never both; after a restart each has exactly one contract."""
    approvals = 60
    async with service_processes(infra, tmp_path, names=("contracts",)) as services:
        contracts = services["contracts"]
        connection = await aio_pika.connect_robust(infra.amqp_url)
        try:
            for i in range(approvals):
                await publish(
                    connection,
                    exchange=topology.EVENTS,
                    routing_key="order.approved",
                    body=_approval(i),
                    message_type="order.approved",
                )
            pool = await asyncpg.create_pool(infra.database_url, min_size=1, max_size=2)
            assert pool is not None
            try:
                await eventually(
                    lambda: _count(pool, "SELECT count(*) >= 5 FROM contracts.contracts"),
                    timeout=60,
                )
                contracts.process.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(contracts.process.wait, 60)
                # uvicorn stops gracefully, then ends with the signal it caught
                assert code in (0, -signal.SIGTERM), contracts.log_tail()
                assert "Application shutdown complete" in contracts.log_tail(400)
                drafted = await pool.fetchval("SELECT count(*) FROM contracts.contracts")
                # numbered and acknowledged, its document still to typeset (decision 0026):
                # done with the message, as a drafted one is
                numbered = await pool.fetchval("SELECT count(*) FROM contracts.contract_renders")
                waiting = await queue_depth(connection, topology.CONTRACTS_APPROVED.name)
                # a message cut off after its commit would be counted twice here
                assert drafted + numbered + waiting == approvals, (drafted, numbered, waiting)
                assert drafted < approvals, "stopped too late to show anything"
            finally:
                await pool.close()
        finally:
            await connection.close()
    async with service_processes(infra, tmp_path, names=("contracts",)):
        pool = await asyncpg.create_pool(infra.database_url, min_size=1, max_size=2)
        assert pool is not None
        try:
            await eventually(
                lambda: _count(pool, f"SELECT count(*) = {approvals} FROM contracts.contracts"),
                timeout=90,
            )
            numbers = await pool.fetchval("SELECT count(DISTINCT number) FROM contracts.contracts")
            assert numbers == approvals
        finally:
            await pool.close()


async def _count(pool: Any, sql: str) -> bool:
    return bool(await pool.fetchval(sql))


def _approval(i: int) -> bytes:
    order = example_order("order-product")
    event = {
        "order_id": str(uuid.uuid4()),
        "revision": 1,
        "order": {**order, "external_ref": f"SIGTERM-{i}"},
        "totals": {
            "currency": "CNY",
            "subtotal": "18380.00",
            "tax": "2389.40",
            "total": "20769.40",
        },
        "approvals": [],
        "approved_at": "2026-11-28T10:00:00+00:00",
    }
    return json.dumps(event, ensure_ascii=False).encode()


def test_a_node_that_is_killed_leaves_nothing_running(rabbit: LocalRabbit) -> None:
    # a node whose start or stop failed is killed by name: nobody else would reap it
    marker = f"RABBITMQ_NODENAME={rabbit.node}".encode()

    def running() -> list[str]:
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(proc.name)
        return found

    assert running(), "the node's processes carry its name in their environment"
    rabbit.kill()
    wait_port(rabbit.port, up=False, timeout=30)
    # the port closes before every process of the node has gone (epmd, erl_child_setup):
    # wait for the last to go, a killed process's environment reading empty even unreaped
    deadline = time.monotonic() + 30
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running()
