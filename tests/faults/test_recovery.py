"""Recovery on the real servers: the broker and the database go away and come back while
orders are in flight; services reconnect by themselves, report not-ready meanwhile, and
every order still reaches its contract.

These tests restart servers, so they run on a RabbitMQ node and a PostgreSQL cluster of
their own (`orderflow.localservers`), never on the machine's shared ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from orderflow.localservers import LocalPostgres, LocalRabbit
from orderflow.testing import (
    Infra,
    answer_review,
    example_order,
    service_processes,
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
    return Infra(
        amqp_url=rabbit.url, database_url=postgres.url("orderflow"), vhost="/", database="orderflow"
    )


@contextlib.asynccontextmanager
async def system(infra: Infra, log_dir: Path) -> AsyncIterator[dict[str, Any]]:
    async with service_processes(
        infra, log_dir, REVIEW_ROUTER_VERDICT_ACTING_USERS="guest"
    ) as services:
        clients = {
            name: httpx.AsyncClient(base_url=s.url, timeout=10) for name, s in services.items()
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
    codes = {}
    for name, client in clients.items():
        try:
            codes[name] = (await client.get("/health/ready")).status_code
        except httpx.HTTPError:
            codes[name] = 0
    return codes


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
        created = await intake.post(
            "/api/v1/orders", params={"submit": "true"}, json=example_order("order-product")
        )
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        await wait_status(intake, order_id, "in_review")

        away, not_ready = await watch_outage(clients, rabbit.restart)
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


def _crash(postgres: LocalPostgres, _: Any) -> float:
    postgres.stop("immediate")
    import time

    time.sleep(3)  # long enough for every readiness probe to notice
    postgres.start()
    return 3.0
