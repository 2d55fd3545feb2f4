"""Outbox relay micro-benchmark on the real broker and database.

Two figures, on a vhost and a database of the run's own (removed afterwards):
- throughput: `--rows` outbox rows committed at once, then one relay publishes them all
  with confirms; rows published per second from the relay's start to the last row sent;
- the relay's claim query: its plan and cost with `--backlog` rows due behind the rows the
  throughput runs left sent;
- wake-up latency: rows committed one at a time at random (Poisson) moments, `--trickle`
  rows `--gap` seconds apart on average, each timed from its commit to its arrival at a
  consumer; with the poll at 1 s, a notification missed during a drain shows as a latency
  up to the next commit or the poll.

    uv run python bench/relay_bench.py --rows 5000 --trickle 300 --gap 0.05

Prints a table and one line of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aio_pika
import asyncpg

from orderflow import outbox, topology
from orderflow.db import create_pool, migrate
from orderflow.messages import OrderWithdrawn
from orderflow.publisher import Publisher
from orderflow_testkit.testing import Servers, manage_vhost

SCHEMA = "bench"
# the relay's claim (outbox.py), here too so the bench runs against older versions as well
CLAIM = """SELECT id, message_id, exchange, routing_key, message_type, correlation_id,
                  reply_to, mandatory, headers, body, created_at, attempts
           FROM outbox
           WHERE sent_at IS NULL AND next_attempt_at <= now()
           ORDER BY id
           LIMIT $1
           FOR UPDATE SKIP LOCKED"""


def _event() -> OrderWithdrawn:
    return OrderWithdrawn(
        order_id=uuid.uuid4(), revision=1, reason="bench", withdrawn_at=datetime.now(UTC)
    )


async def _insert(pool: Any, count: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for _ in range(count):
            event = _event()
            await outbox.publish_event(conn, event, correlation_id=event.order_id)


async def _wait_sent(pool: Any, timeout: float = 300) -> None:
    deadline = time.perf_counter() + timeout
    while await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"):
        if time.perf_counter() > deadline:
            raise TimeoutError("outbox not drained")
        await asyncio.sleep(0.005)


async def throughput(pool: Any, publisher: Publisher, rows: int, batch: int) -> float:
    await _insert(pool, rows)
    relay = outbox.OutboxRelay(pool, publisher, schema=SCHEMA, batch=batch)
    started = time.perf_counter()
    relay.start()
    await _wait_sent(pool)
    elapsed = time.perf_counter() - started
    await relay.stop()
    return rows / elapsed


async def claim_plan(pool: Any, backlog: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the relay's claim with `backlog` rows due; rolled back."""
    await _insert(pool, backlog)
    await pool.execute("ANALYZE outbox")
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            [plan] = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + CLAIM, 100)
        finally:
            await tx.rollback()
    await pool.execute("UPDATE outbox SET sent_at = now() WHERE sent_at IS NULL")

    def nodes(node: dict[str, Any]) -> list[str]:
        name = node["Node Type"] + (f" {node['Index Name']}" if "Index Name" in node else "")
        return [name] + [n for child in node.get("Plans", []) for n in nodes(child)]

    return {
        "backlog": backlog,
        "ms": round(plan["Execution Time"], 2),
        "buffers": plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"],
        "plan": " > ".join(nodes(plan["Plan"])),
    }


async def latency(
    pool: Any, publisher: Publisher, queue: aio_pika.abc.AbstractQueue, count: int, gap: float
) -> list[float]:
    committed: dict[str, float] = {}
    arrived: dict[str, float] = {}
    done = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived[str(message.message_id)] = time.perf_counter()
        await message.ack()
        if len(arrived) >= count:
            done.set()

    tag = await queue.consume(on_message)
    arrivals = random.Random(1)  # the same moments on every run
    relay = outbox.OutboxRelay(pool, publisher, schema=SCHEMA, poll_interval=1.0)
    relay.start()
    for _ in range(count):
        async with pool.acquire() as conn:
            async with conn.transaction():
                mid = await outbox.publish_event(conn, _event())
            committed[str(mid)] = time.perf_counter()
        await asyncio.sleep(arrivals.expovariate(1 / gap))
    await asyncio.wait_for(done.wait(), timeout=60)
    await queue.cancel(tag)
    await relay.stop()
    return [arrived[m] - committed[m] for m in committed]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    srv = Servers(args.amqp_url, args.database_url, args.management_api)
    tag = uuid.uuid4().hex[:10]
    vhost, database = f"orderflow-bench-{tag}", f"orderflow_bench_{tag}"
    await asyncio.to_thread(manage_vhost, srv, vhost, create=True)
    admin = await asyncpg.connect(srv.database_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        return await _run(args, srv, vhost, database)
    finally:
        await asyncio.to_thread(manage_vhost, srv, vhost, create=False)
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def _run(args: argparse.Namespace, srv: Any, vhost: str, database: str) -> dict[str, Any]:
    amqp_url = f"{srv.amqp_url}/{quote(vhost, safe='')}"
    dsn = srv.database_url.rsplit("/", 1)[0] + "/" + database
    pool = await create_pool(dsn, schema=SCHEMA, min_size=2, max_size=4)
    await migrate(pool, schema=SCHEMA, package="orderflow")
    connection = await aio_pika.connect_robust(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(topology.EVENTS, "topic", durable=True)
    sink = await channel.declare_queue("bench.sink", durable=True)
    await sink.bind(exchange, "#")
    trickle = await channel.declare_queue("bench.trickle", durable=True)
    publisher = Publisher(amqp_url, app_id="bench")
    await publisher.connect()
    try:
        rates = [await throughput(pool, publisher, args.rows, args.batch) for _ in range(args.runs)]
        plan = await claim_plan(pool, args.backlog)
        await sink.purge()
        await sink.unbind(exchange, "#")
        await trickle.bind(exchange, "#")
        lat = sorted(await latency(pool, publisher, trickle, args.trickle, args.gap))
    finally:
        await publisher.close()
        await connection.close()
        await pool.close()
    return {
        "rows": args.rows,
        "batch": args.batch,
        "rows_per_s": [round(r) for r in rates],
        "rows_per_s_median": round(statistics.median(rates)),
        "claim": plan,
        "trickle": args.trickle,
        "gap_s": args.gap,
        "latency_ms": {
            "p50": round(1000 * lat[len(lat) // 2], 1),
            "p99": round(1000 * lat[int(len(lat) * 0.99)], 1),
            "max": round(1000 * lat[-1], 1),
            "over_100ms": sum(1 for x in lat if x > 0.1),
            "over_500ms": sum(1 for x in lat if x > 0.5),
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--trickle", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.05)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--management-api", default="http://guest:guest@127.0.0.1:15672")
    result = asyncio.run(main(parser.parse_args()))
    print(f"rows/s (batch {result['batch']}): {result['rows_per_s']}")
    claim = result["claim"]
    print(
        f"claim of 100 with {claim['backlog']} due: {claim['ms']} ms, "
        f"{claim['buffers']} buffers, {claim['plan']}"
    )
    lat = result["latency_ms"]
    print(
        f"commit -> consumer, {result['trickle']} rows every {result['gap_s']} s: "
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms, "
        f"{lat['over_100ms']} over 100 ms, {lat['over_500ms']} over 500 ms"
    )
    print(json.dumps(result))
