"""Intake alone over HTTP: how many orders a second it accepts from keep-alive clients, at
what latency, and what each order costs in CPU (intake's process, and the PostgreSQL
backends serving it), with every guarantee on.

It starts intake as its own process (as the tests do: `orderflow_testkit.testing.start_service`)
against the machine's PostgreSQL and RabbitMQ, on a database and a vhost of its own (named
`bench_intake_<tag>`, removed at the end) with bus users of its own. The caller is a
salesperson signed in with a session (`--credential session`, the console's way) or a
system with an API key (`--credential key`, a CRM's way). For each K in `--clients` it runs
K clients, each with its own keep-alive connection, posting the example order (a fresh
`external_ref` each, as distinct orders have) to `POST /api/v1/orders?submit=true` with an
Idempotency-Key, back to back, for `--seconds`; then waits until intake's outbox has
published every `order.submitted`, so the relay's work is in the cost too.

The per-caller order creation limit (`ORDERFLOW_AUTH_ORDER_CREATE_RATE`, 600/minute by
default) is raised for the run (`--create-rate`): one caller is the whole load by design.

    flock /tmp/orderflow-tests.lock .venv/bin/python bench/intake_http.py
    .venv/bin/python bench/intake_http.py --clients 4 --seconds 5 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx

from orderflow import provisioning
from orderflow.auth.identity import ORDERS_WRITE, SALESPERSON
from orderflow_testkit.testing import (
    Infra,
    ServiceProcess,
    admin_broker,
    bearer,
    create_run_users,
    example_order,
    issue_key,
    manage_vhost,
    person,
    start_service,
    wait_ready,
)
from orderflow_testkit.testing import Servers as TestServers

AMQP = os.environ.get("ORDERFLOW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
POSTGRES = os.environ.get(
    "ORDERFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
API = os.environ.get("ORDERFLOW_TEST_RABBITMQ_API", "http://guest:guest@127.0.0.1:15672")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
EXAMPLE = "order-service"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Run:
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)
    intake_cpu: float = 0.0
    postgres_cpu: float = 0.0
    drain_seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        n = len(self.latencies)
        ordered = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(1000 * ordered[min(n - 1, int(p * n))], 2) if n else 0.0

        return {
            "clients": self.clients,
            "accepted": n,
            "refused": self.refused,
            "seconds": round(self.seconds, 2),
            "orders_per_s": round(n / self.seconds, 1) if self.seconds else 0.0,
            "latency_ms": {
                "p50": pct(0.50),
                "p99": pct(0.99),
                "max": pct(1.0),
                "mean": round(1000 * statistics.fmean(ordered), 2) if n else 0.0,
            },
            "cpu_ms_per_order": {
                "intake": round(1000 * self.intake_cpu / n, 2) if n else None,
                "postgres": round(1000 * self.postgres_cpu / n, 2) if n else None,
            },
            "outbox_drain_s": round(self.drain_seconds, 2),
        }


class Database:
    """The bench's own database, and the CPU of the backends that serve intake there."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = POSTGRES.rsplit("/", 1)[0] + "/" + name
        self.conn: Any = None
        self.seen: set[int] = set()

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.url)

    async def backends(self) -> list[int]:
        rows = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.name,
        )
        pids = [int(r["pid"]) for r in rows]
        self.seen.update(pids)
        return pids

    async def cpu(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in await self.backends()}

    async def unsent(self) -> int:
        return int(
            await self.conn.fetchval("SELECT count(*) FROM intake.outbox WHERE sent_at IS NULL")
        )

    async def close(self) -> None:
        await self.conn.close()


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    # a backend opened during the run counts from 0; one closed during it is lost (noted)
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


async def client_loop(
    client: httpx.AsyncClient, run: Run, stop_at: float, tag: str, k: int
) -> None:
    i = 0
    while time.monotonic() < stop_at:
        ref = f"B-{tag}-{k}-{i}"
        i += 1
        began = time.perf_counter()
        r = await client.post(
            "/api/v1/orders",
            params={"submit": "true"},
            json={**example_order(EXAMPLE), "external_ref": ref},
            headers={"Idempotency-Key": ref},
        )
        took = time.perf_counter() - began
        if r.status_code == 201:
            run.latencies.append(took)
        else:
            run.refused[r.status_code] = run.refused.get(r.status_code, 0) + 1
            if sum(run.refused.values()) <= 3:
                print(f"  refused {r.status_code}: {r.text[:300]}", file=sys.stderr)


async def one_run(
    intake: ServiceProcess, db: Database, headers: dict[str, str], k: int, seconds: float
) -> Run:
    run = Run(clients=k, seconds=seconds)
    tag = uuid.uuid4().hex[:8]
    # one connection per client, kept alive: K clients, K sockets
    clients = [
        httpx.AsyncClient(
            base_url=intake.url,
            headers=headers,
            timeout=30,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for _ in range(k)
    ]
    try:
        for c in clients:  # connections open, pool warm, before the clock starts
            (await c.get("/health/live")).raise_for_status()
        pg_before, intake_before = await db.cpu(), cpu_seconds(intake.process.pid)
        began = time.monotonic()
        await asyncio.gather(
            *(client_loop(c, run, began + seconds, tag, i) for i, c in enumerate(clients))
        )
        run.seconds = time.monotonic() - began
        while await db.unsent() and time.monotonic() - began < seconds + 120:
            await asyncio.sleep(0.05)
        run.drain_seconds = time.monotonic() - began - run.seconds
        run.intake_cpu = cpu_seconds(intake.process.pid) - intake_before
        run.postgres_cpu = spent(pg_before, await db.cpu())
    finally:
        for c in clients:
            await c.aclose()
    return run


@dataclass
class Setup:
    infra: Infra
    users: list[str]
    db: Database


async def set_up(tag: str) -> Setup:
    vhost, database = f"bench_intake_{tag}", f"bench_intake_{tag}"
    servers = TestServers(AMQP, POSTGRES, API)
    await asyncio.to_thread(manage_vhost, servers, vhost, create=True)
    broker = admin_broker(servers)
    run = await asyncio.to_thread(create_run_users, broker, f"bench_intake_{tag}-")
    await asyncio.to_thread(provisioning.apply_vhost, broker, vhost=vhost, accounts=run.accounts)
    admin = await asyncpg.connect(POSTGRES)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    db = Database(database)
    infra = Infra(
        amqp_url=f"{AMQP}/{quote(vhost, safe='')}",
        database_url=db.url,
        vhost=vhost,
        database=database,
        users=run.users,
    )
    return Setup(infra, [a.name for a in run.accounts], db)


async def tear_down(setup: Setup) -> None:
    servers = TestServers(AMQP, POSTGRES, API)
    with contextlib.suppress(Exception):
        await setup.db.close()
    await asyncio.to_thread(manage_vhost, servers, setup.infra.vhost, create=False)
    await asyncio.to_thread(admin_broker(servers).delete_users, setup.users)
    admin = await asyncpg.connect(POSTGRES)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{setup.infra.database}" WITH (FORCE)')
    finally:
        await admin.close()


async def credential(database_url: str, kind: str) -> dict[str, str]:
    """The Authorization header of the bench's caller: the example order's salesperson
    signed in (a session), or an API key with `orders:write`."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        if kind == "key":
            return bearer(await issue_key(pool, [ORDERS_WRITE]))
        salesperson = example_order(EXAMPLE)["salesperson"]["id"]
        return await person(pool, salesperson, [SALESPERSON])
    finally:
        await pool.close()


def service_env(args: argparse.Namespace) -> dict[str, str]:
    env = {
        "ORDERFLOW_AUTH_ORDER_CREATE_RATE": args.create_rate,
        "INTAKE_LOG_LEVEL": args.log_level,
    }
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


HEADER = (
    f"{'K':>3} {'orders/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
    f"{'intake ms/o':>11} {'pg ms/o':>8} {'refused':>8} {'drain s':>7}"
)


def profile(intake: ServiceProcess, out: str | None) -> subprocess.Popen[bytes] | None:
    """py-spy sampling intake's threads into collapsed stacks (`--profile`), if asked for;
    it is not a dependency of the project: install it to use this."""
    if out is None:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "-p", str(intake.process.pid), "-o", out, "--format", "raw"]
    return subprocess.Popen([*command, "--rate", "200", "--nonblocking"])


def print_row(r: dict[str, Any]) -> None:
    lat, cpu = r["latency_ms"], r["cpu_ms_per_order"]
    print(
        f"{r['clients']:>3} {r['orders_per_s']:>9} {lat['p50']:>8} {lat['p99']:>8} "
        f"{lat['max']:>8} {cpu['intake']!s:>11} {cpu['postgres']!s:>8} "
        f"{sum(r['refused'].values()):>8} {r['outbox_drain_s']:>7}"
    )


async def main(args: argparse.Namespace) -> int:
    tag = uuid.uuid4().hex[:10]
    setup = await set_up(tag)
    log_dir = Path(tempfile.mkdtemp(prefix="bench_intake_"))
    intake = start_service(setup.infra, "intake", log_dir, **service_env(args))
    results: list[dict[str, Any]] = []
    try:
        await wait_ready(intake)
        await setup.db.open()
        headers = await credential(setup.infra.database_url, args.credential)
        if args.warmup:
            await one_run(intake, setup.db, headers, max(args.clients), args.warmup)
        profiler = profile(intake, args.profile)
        print(HEADER, flush=True)
        for k in args.clients:
            run = await one_run(intake, setup.db, headers, k, args.seconds)
            results.append(run.figures())
            print_row(results[-1])
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
    finally:
        intake.terminate()
        print(f"intake's log: {intake.log_path}", file=sys.stderr)
        await tear_down(setup)
    summary = {
        "settings": {
            "credential": args.credential,
            "seconds": args.seconds,
            "create_rate": args.create_rate,
            "log_level": args.log_level,
            "env": args.env,
            "order": f"docs/examples/{EXAMPLE}.json, submit=true, Idempotency-Key",
            "cpu_count": os.cpu_count(),
        },
        "runs": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["runs"]))
    return 0 if all(r["accepted"] for r in results) else 1


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, not measured")
    parser.add_argument("--credential", choices=("session", "key"), default="session")
    parser.add_argument("--create-rate", default="1000000/minute")
    parser.add_argument("--log-level", default="INFO", help="intake's INTAKE_LOG_LEVEL")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="more intake settings"
    )
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--profile", help="py-spy's collapsed stacks of intake, to this file")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(arguments())))
