"""The throughput benchmark: how fast orders go from submission to a recorded decision and
to a contract PDF, with every guarantee on, and what each order costs.

It starts the system as the fault run does (a RabbitMQ node and a PostgreSQL cluster of its
own, the four services as processes, `--replicas` of each), answers every review at once
with an approval (the department simulator, each department as its own bus user), submits
`--orders` orders over the bus (`order.submit`, as the example submitter) or over HTTP
(keep-alive clients), either back to back from `--concurrency` submitters or open-loop at
`--rate` orders a second, and listens on a queue of its own bound to `orderflow.events` for
every order's `order.approved` and `contract.drafted`. At the end it checks the fault run's
invariants (one decision and one contract per order, no notification twice, nothing left
in a queue or an outbox), types the example contract in a bare loop for comparison, prints
a table and writes the figures as JSON.

    uv run python bench/throughput.py --orders 1000 --json bench/results/baseline-bus.json
    uv run python bench/throughput.py --via http --concurrency 4
    uv run python bench/throughput.py --rate 10          # open loop: queueing is measured
    uv run python bench/throughput.py --quick            # 30 orders, a smoke run

Exit status 0 only when every order was decided and drafted and every check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench_measure as measure
import _bench_render
import fault_run

from orderflow import topology
from orderflow.auth.identity import ORDERS_WRITE
from orderflow_testkit.localservers import LocalPostgres, LocalRabbit
from orderflow_testkit.testing import (
    SERVICE_MODULES,
    Infra,
    bearer,
    example_order,
    issue_key_for,
    provisioned,
)

ROOT = Path(__file__).resolve().parents[1]
SIMULATOR = ROOT / "bench" / "department_simulator.py"
#: what the listener hears: the order's id and reference, its decision, its contract
LISTENED = ("order.submitted", "order.approved", "order.changes_requested", "contract.drafted")


@dataclass
class Order:
    ref: str
    submitted: float = 0.0  # wall clock, just before the publish or the request
    accepted: float = 0.0  # the broker's confirm, or intake's response
    order_id: str = ""
    decided: float = 0.0  # arrival of order.approved at the listener
    decided_recorded: float = 0.0  # its approved_at, as the router recorded it
    drafted: float = 0.0  # arrival of contract.drafted
    drafted_recorded: float = 0.0


@dataclass
class Tracker:
    """Every order by reference, filled in as its events arrive."""

    orders: dict[str, Order] = field(default_factory=dict)
    by_id: dict[str, Order] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # event type -> deliveries
    twice: dict[str, int] = field(default_factory=dict)  # event type -> second sightings
    changes_requested: int = 0
    everything: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0

    def done(self) -> tuple[int, int]:
        decided = sum(1 for o in self.orders.values() if o.decided)
        drafted = sum(1 for o in self.orders.values() if o.drafted)
        return decided, drafted

    def on_event(self, kind: str, body: dict[str, Any], arrived: float) -> None:
        self.seen[kind] = self.seen.get(kind, 0) + 1
        order = self._order(body)
        if order is None:
            return
        if kind == "order.approved":
            self._mark(kind, order, "decided", arrived, body["approved_at"])
        elif kind == "contract.drafted":
            self._mark(kind, order, "drafted", arrived, body["drafted_at"])
        elif kind == "order.changes_requested":
            self.changes_requested += 1
        decided, drafted = self.done()
        if decided >= self.expected and drafted >= self.expected:
            self.everything.set()

    def _order(self, body: dict[str, Any]) -> Order | None:
        order_id = str(body["order_id"])
        if order_id in self.by_id:
            return self.by_id[order_id]
        ref = (body.get("order") or {}).get("external_ref")
        order = self.orders.get(ref or "")
        if order is not None:
            order.order_id = order_id
            self.by_id[order_id] = order
        return order

    def _mark(self, kind: str, order: Order, what: str, arrived: float, recorded: str) -> None:
        if getattr(order, what):
            self.twice[kind] = self.twice.get(kind, 0) + 1
            return
        setattr(order, what, arrived)
        stamp = recorded.replace("Z", "+00:00")
        setattr(order, f"{what}_recorded", _epoch(stamp))


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


class BenchCluster(fault_run.Cluster):
    """The fault run's cluster, with the benchmark's settings for every service."""

    def __init__(self, infra: Infra, log_dir: Path, replicas: int, env: dict[str, str]) -> None:
        super().__init__(infra, log_dir, replicas)
        self.env = env

    def _start(self, name: str) -> Any:
        return fault_run.start_service(self.infra, name, self.log_dir, **self.env)


def service_env(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    for _, prefix in SERVICE_MODULES.values():
        if args.prefetch:
            env[f"{prefix}PREFETCH"] = str(args.prefetch)
        env[f"{prefix}LOG_LEVEL"] = args.service_log_level
    # the per-caller limit on order creation over HTTP (600/minute) guards against a runaway
    # client; the benchmark's one API key is such a client by design
    env["ORDERFLOW_AUTH_ORDER_CREATE_RATE"] = args.http_create_rate
    return env


async def listen(infra: Infra, tracker: Tracker) -> aio_pika.abc.AbstractConnection:
    """A queue of the listener user's own, bound to the events it follows, consumed without
    acknowledgements (the benchmark's own cost on the broker kept small)."""
    connection = await aio_pika.connect(infra.url_as("listener"))
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.declare_queue(
        f"{infra.user('listener')}.throughput", exclusive=True, auto_delete=True
    )
    for kind in LISTENED:
        await queue.bind(topology.EVENTS, routing_key=kind)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived = time.time()
        kind = message.type or message.routing_key or ""
        tracker.on_event(kind, json.loads(message.body), arrived)

    await queue.consume(on_message, no_ack=True)
    return connection


def start_departments(infra: Infra, log_dir: Path, prefetch: int) -> subprocess.Popen[bytes]:
    """The department simulator approving everything at once, each department as its own
    user, in a process of its own (so its CPU is not the benchmark's nor the services')."""
    urls = [
        arg
        for d in topology.DEFAULT_DEPARTMENTS
        for arg in ("--department-url", f"{d}={infra.url_as(f'dept-{d}')}")
    ]
    with (log_dir / "departments.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                str(SIMULATOR),
                *urls,
                "--approve-rate",
                "1",
                "--prefetch",
                str(prefetch),
                "--log-level",
                "WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def wait_departments_ready(rabbit: LocalRabbit, timeout: float = 60) -> None:
    """Until every department queue has its consumer."""
    deadline = time.monotonic() + timeout
    wanted = {topology.department_queue(d).name for d in topology.DEFAULT_DEPARTMENTS}
    while time.monotonic() < deadline:
        out = await asyncio.to_thread(
            rabbit.rabbitmqctl, "list_queues", "-q", "--no-table-headers", "name", "consumers"
        )
        consumed = {
            p[0] for p in (line.split() for line in out.splitlines()) if len(p) == 2 and p[1] != "0"
        }
        if wanted <= consumed:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the department simulator did not start consuming")


# --- submitting -------------------------------------------------------------------------


def order_document(ref: str) -> dict[str, Any]:
    return {**example_order("order-service"), "external_ref": ref}


class BusSubmitter:
    """`order.submit` commands as the example submitter: persistent, mandatory, confirmed."""

    def __init__(self, infra: Infra) -> None:
        self.infra = infra
        self.user = infra.user("submitter")
        self.connection: Any = None
        self.exchange: Any = None

    async def open(self) -> None:
        self.connection = await aio_pika.connect(self.infra.url_as("submitter"))
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.exchange = await channel.get_exchange(topology.COMMANDS, ensure=False)

    async def submit(self, order: Order, worker: int) -> None:
        body = json.dumps(order_document(order.ref), ensure_ascii=False).encode()
        order.submitted = time.time()
        await self.exchange.publish(
            aio_pika.Message(
                body,
                message_id=str(uuid.uuid4()),
                type="order.submit",
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                user_id=self.user,
            ),
            routing_key="order.submit",
            mandatory=True,
            timeout=30,
        )
        order.accepted = time.time()

    async def close(self) -> None:
        await self.connection.close()


class HttpSubmitter:
    """POST /api/v1/orders?submit=true with an API key, as a CRM does; one keep-alive
    client per intake replica, `concurrency` connections each at most."""

    def __init__(self, urls: list[str], headers: dict[str, str], concurrency: int) -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.clients = [
            httpx.AsyncClient(base_url=u, headers=headers, timeout=60, limits=limits) for u in urls
        ]
        self.retries = 0

    async def open(self) -> None:
        return None

    async def submit(self, order: Order, worker: int) -> None:
        client = self.clients[worker % len(self.clients)]
        order.submitted = time.time()
        for attempt in range(5):
            r = await client.post(
                "/api/v1/orders",
                params={"submit": "true"},
                json=order_document(order.ref),
                headers={"Idempotency-Key": f"bench-{order.ref}"},
            )
            if r.status_code in (200, 201):
                order.accepted = time.time()
                return
            self.retries += 1
            if attempt == 4:
                raise RuntimeError(f"intake refused {order.ref}: {r.status_code} {r.text[:300]}")
            await asyncio.sleep(0.2 * (attempt + 1))

    async def close(self) -> None:
        for c in self.clients:
            await c.aclose()


async def drive(submitter: Any, orders: list[Order], *, concurrency: int, rate: float) -> None:
    """Closed loop (`rate` 0): `concurrency` submitters, each sending its next order once
    the last was accepted. Open loop: order i is sent at i / rate seconds, whatever is in
    flight, so a system slower than the rate shows as queueing, not as a slower sender."""
    if rate <= 0:
        pending = iter(orders)

        async def worker(k: int) -> None:
            for order in pending:
                await submitter.submit(order, k)

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return
    began = time.monotonic()
    tasks = []
    for i, order in enumerate(orders):
        await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(submitter.submit(order, i)))
    await asyncio.gather(*tasks)


async def progress(tracker: Tracker, began: float) -> None:
    while True:
        await asyncio.sleep(5)
        decided, drafted = tracker.done()
        accepted = sum(1 for o in tracker.orders.values() if o.accepted)
        print(
            f"  {time.time() - began:6.1f}s  accepted {accepted}  decided {decided}  "
            f"drafted {drafted} / {tracker.expected}",
            flush=True,
        )


# --- figures ----------------------------------------------------------------------------


def rate(count: int, first: float, last: float) -> float | None:
    return round(count / (last - first), 2) if count and last > first else None


def steady_rate(times: list[float]) -> float | None:
    """The rate between the 10th and the 90th percent of arrivals: the pipeline full, its
    start and its drain left out."""
    ordered = sorted(times)
    if len(ordered) < 10:
        return None
    lo, hi = ordered[len(ordered) // 10], ordered[len(ordered) * 9 // 10]
    count = len(ordered) * 9 // 10 - len(ordered) // 10
    return rate(count, lo, hi)


def throughput_figures(orders: list[Order]) -> dict[str, Any]:
    first = min(o.submitted for o in orders)
    decided = [o.decided for o in orders if o.decided]
    drafted = [o.drafted for o in orders if o.drafted]
    accepted = [o.accepted for o in orders if o.accepted]
    return {
        "orders_per_s_accepted": rate(len(accepted), first, max(accepted, default=first)),
        "orders_per_s_to_decision": rate(len(decided), first, max(decided, default=first)),
        "orders_per_s_to_contract": rate(len(drafted), first, max(drafted, default=first)),
        "steady_orders_per_s_to_decision": steady_rate(decided),
        "steady_orders_per_s_to_contract": steady_rate(drafted),
        "seconds_first_submission_to_last_contract": round(max(drafted, default=first) - first, 2),
    }


def latency_figures(orders: list[Order]) -> dict[str, Any]:
    return {
        "submission_to_accepted": measure.percentiles(
            [o.accepted - o.submitted for o in orders if o.accepted]
        ),
        "submission_to_decision": measure.percentiles(
            [o.decided - o.submitted for o in orders if o.decided]
        ),
        "submission_to_contract": measure.percentiles(
            [o.drafted - o.submitted for o in orders if o.drafted]
        ),
        # the times the services wrote into the events: without the relay's hop to us
        "submission_to_decision_recorded": measure.percentiles(
            [o.decided_recorded - o.submitted for o in orders if o.decided_recorded]
        ),
        "submission_to_contract_recorded": measure.percentiles(
            [o.drafted_recorded - o.submitted for o in orders if o.drafted_recorded]
        ),
    }


def cost_figures(
    n: int,
    resources: dict[str, dict[str, float]],
    broker: tuple[dict[str, int], dict[str, int]],
    xacts: tuple[dict[str, int], dict[str, int]],
    listened: int,
) -> dict[str, Any]:
    before, after = broker
    counted = {k: after.get(k, 0) - before.get(k, 0) for k in measure.BROKER_COUNTERS}
    per_order = {
        "messages_published": round(counted["messages_received_total"] / n, 2),
        "messages_routed": round(counted["messages_routed_total"] / n, 2),
        # the benchmark's own listener queue left out
        "messages_delivered": round((counted["messages_delivered_total"] - listened) / n, 2),
        "messages_acknowledged": round(counted["messages_acknowledged_total"] / n, 2),
        "messages_redelivered": round(counted["messages_redelivered_total"] / n, 2),
        "listener_deliveries": round(listened / n, 2),
        "transactions": round((xacts[1]["xact_commit"] - xacts[0]["xact_commit"]) / n, 2),
        "rollbacks": round((xacts[1]["xact_rollback"] - xacts[0]["xact_rollback"]) / n, 3),
    }
    system = [g for g in resources if g not in ("departments", "benchmark")]
    cpu_ms = {g: round(r["cpu_seconds"] / n * 1000, 2) for g, r in resources.items()}
    per_order["cpu_ms"] = cpu_ms
    per_order["cpu_ms_system"] = round(sum(cpu_ms[g] for g in system), 2)
    per_order["cpu_ms_system_without_contracts"] = round(
        sum(cpu_ms[g] for g in system if g != "contracts"), 2
    )
    return {"per_order": per_order, "broker_counters": counted, "processes": resources}


# --- the run ----------------------------------------------------------------------------


@dataclass
class System:
    work: Path
    rabbit: LocalRabbit
    postgres: LocalPostgres
    infra: Infra
    cluster: BenchCluster
    departments: subprocess.Popen[bytes] | None = None


async def start_system(args: argparse.Namespace) -> System:
    """The fault run's set-up: servers of the run's own, provisioned, and the services."""
    work = Path(tempfile.mkdtemp(prefix="orderflow-bench-"))
    work.chmod(0o755)  # the servers run as their own users and must reach their folders
    rabbit = LocalRabbit(work / "rabbit")
    postgres = LocalPostgres(work / "pg")
    (work / "logs").mkdir()
    rabbit.start()
    postgres.start()
    conn = await asyncpg.connect(postgres.url())
    await conn.execute("CREATE DATABASE orderflow")
    await conn.close()
    infra = provisioned(
        rabbit.admin(),
        amqp_url=rabbit.url,
        database_url=postgres.url("orderflow"),
        vhost="/",
        database="orderflow",
    )
    cluster = BenchCluster(infra, work / "logs", args.replicas, service_env(args))
    system = System(work, rabbit, postgres, infra, cluster)
    await cluster.start()
    system.departments = start_departments(infra, work / "logs", args.department_prefetch)
    await wait_departments_ready(rabbit)
    return system


def stop_system(system: System, *, keep: bool) -> None:
    if system.departments is not None:
        system.departments.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            system.departments.wait(15)
        if system.departments.poll() is None:
            system.departments.kill()
    system.cluster.stop()
    system.rabbit.destroy()
    system.postgres.destroy()
    if not keep:
        shutil.rmtree(system.work, ignore_errors=True)


def groups(system: System) -> list[measure.Group]:
    def service(name: str) -> Any:
        def processes() -> list[psutil.Process]:
            # with their children: contracts typesets on a pool of worker processes
            return [
                proc
                for p in system.cluster.processes
                if p.name == name and p.process.poll() is None
                for proc in measure.tree(lambda p=p: psutil.Process(p.process.pid))()
            ]

        return processes

    assert system.departments is not None
    simulator = psutil.Process(system.departments.pid)
    bench = psutil.Process(os.getpid())
    return [
        *(measure.Group(name, service(name)) for name in fault_run.SERVICES),
        measure.Group("rabbitmq", lambda: measure.broker_processes(system.rabbit)),
        measure.Group(
            "postgresql",
            measure.tree(lambda: measure.postmaster(system.postgres)),
            reaper=lambda: measure.postmaster(system.postgres),
        ),
        measure.Group("departments", lambda: [simulator]),
        measure.Group("benchmark", lambda: [bench]),
    ]


async def submit_all(
    system: System, args: argparse.Namespace, tracker: Tracker, orders: list[Order]
) -> Any:
    """Submit `orders` and wait until each has its decision and its contract."""
    submitter = await make_submitter(system, args)
    tracker.expected += len(orders)
    tracker.everything.clear()
    for order in orders:
        tracker.orders[order.ref] = order
    try:
        await drive(submitter, orders, concurrency=args.concurrency, rate=args.rate)
    finally:
        await submitter.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tracker.everything.wait(), args.timeout)
    return submitter


async def make_submitter(system: System, args: argparse.Namespace) -> Any:
    if args.via == "bus":
        bus = BusSubmitter(system.infra)
        await bus.open()
        return bus
    key = await issue_key_for(system.infra.database_url, [ORDERS_WRITE])
    return HttpSubmitter(system.cluster.urls("intake"), bearer(key), args.concurrency)


async def measured_run(system: System, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then the measured orders, the costs around them, and the checks."""
    tracker = Tracker()
    tag = uuid.uuid4().hex[:6]
    listener = await listen(system.infra, tracker)
    try:
        warm = [Order(f"BW-{tag}-{i:04d}") for i in range(args.warmup)]
        if warm:
            await submit_all(system, args, tracker, warm)
        # the measured window: from here until the system is quiet again
        resources = measure.Resources(groups(system))
        xacts_before = await measure.database_xacts(system.postgres.url(), "orderflow")
        broker_before = await asyncio.to_thread(measure.broker_counters, system.rabbit)
        heard_before = sum(tracker.seen.values())
        resources.start()
        orders = [Order(f"BM-{tag}-{i:06d}") for i in range(args.orders)]
        began = time.time()
        ticker = asyncio.create_task(progress(tracker, began))
        try:
            submitter = await submit_all(system, args, tracker, orders)
        finally:
            ticker.cancel()
        pool = await asyncpg.create_pool(system.postgres.url("orderflow"), min_size=1, max_size=2)
        assert pool is not None
        try:
            quiet = await fault_run.quiet(
                pool, system.rabbit, len(tracker.orders), args.drain_timeout
            )
            used = resources.stop()
            broker_after = await asyncio.to_thread(measure.broker_counters, system.rabbit)
            xacts_after = await measure.database_xacts(system.postgres.url(), "orderflow")
            accepted = {o.ref: o.order_id for o in tracker.orders.values() if o.accepted}
            verdicts = await fault_run.check(pool, system.rabbit, accepted, [])
        finally:
            await pool.close()
    finally:
        await listener.close()
    heard = sum(tracker.seen.values()) - heard_before
    return {
        "tracker": tracker,
        "orders": orders,
        "quiet": quiet,
        "verdicts": verdicts,
        "http_retries": getattr(submitter, "retries", 0),
        "throughput": throughput_figures(orders),
        "latency": latency_figures(orders),
        "costs": cost_figures(
            len(orders), used, (broker_before, broker_after), (xacts_before, xacts_after), heard
        ),
    }


def settings(args: argparse.Namespace) -> dict[str, Any]:
    def out(*cmd: str) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
        return done.stdout.strip()

    return {
        "git_rev": out("git", "rev-parse", "--short", "HEAD"),
        "git_dirty": bool(out("git", "status", "--porcelain", "--untracked-files=no")),
        "via": args.via,
        "orders": args.orders,
        "warmup_orders": args.warmup,
        "replicas": args.replicas,
        "concurrency": args.concurrency,
        "rate": args.rate or None,
        "mode": "open-loop" if args.rate > 0 else "closed-loop",
        "prefetch": args.prefetch or "service default (20)",
        "department_prefetch": args.department_prefetch,
        "service_log_level": args.service_log_level,
        "http_order_create_rate": args.http_create_rate,
        "order": "docs/examples/order-service.json",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def summary_of(args: argparse.Namespace, result: dict[str, Any], render: Any) -> dict[str, Any]:
    tracker: Tracker = result["tracker"]
    orders: list[Order] = result["orders"]
    decided = sum(1 for o in orders if o.decided)
    drafted = sum(1 for o in orders if o.drafted)
    checks = {v.name: v.figure for v in result["verdicts"]}
    failed = [v.name for v in result["verdicts"] if not v.ok]
    complete = decided == len(orders) and drafted == len(orders) and not tracker.changes_requested
    return {
        "settings": settings(args),
        "orders_decided": decided,
        "orders_drafted": drafted,
        "changes_requested": tracker.changes_requested,
        "events_heard": tracker.seen,
        "events_heard_twice": tracker.twice,
        "http_retries": result["http_retries"],
        "throughput": result["throughput"],
        "latency": result["latency"],
        **result["costs"],
        "render_loop": render,
        "quiet": result["quiet"],
        "checks": checks,
        "checks_failed": failed,
        "ok": bool(complete and result["quiet"] and not failed),
    }


def _ms(p: dict[str, Any]) -> str:
    return "  ".join(f"{k.removesuffix('_ms')} {v}" for k, v in p.items() if k != "mean_ms")


def table(s: dict[str, Any]) -> str:
    t, lat, per = s["throughput"], s["latency"], s["per_order"]
    rows = [
        ("settings", json.dumps(s["settings"], ensure_ascii=False)),
        ("orders decided / drafted", f"{s['orders_decided']} / {s['orders_drafted']}"),
        ("orders/s accepted", t["orders_per_s_accepted"]),
        (
            "orders/s to decision",
            f"{t['orders_per_s_to_decision']}  (steady {t['steady_orders_per_s_to_decision']})",
        ),
        (
            "orders/s to contract",
            f"{t['orders_per_s_to_contract']}  (steady {t['steady_orders_per_s_to_contract']})",
        ),
        ("ms submission→accepted", _ms(lat["submission_to_accepted"])),
        ("ms submission→decision", _ms(lat["submission_to_decision"])),
        ("ms submission→contract", _ms(lat["submission_to_contract"])),
        ("messages published/order", per["messages_published"]),
        ("messages delivered/order", per["messages_delivered"]),
        ("transactions/order", per["transactions"]),
        ("CPU ms/order, system", per["cpu_ms_system"]),
        ("CPU ms/order, system w/o contracts", per["cpu_ms_system_without_contracts"]),
    ]
    for name, r in s["processes"].items():
        rows.append(
            (
                f"  {name}",
                f"{per['cpu_ms'][name]} ms/order  peak RSS {r['peak_rss_mib']} MiB  "
                f"PSS {r['peak_pss_mib']} MiB",
            )
        )
    if s["render_loop"]:
        r = s["render_loop"]
        rows.append(
            (
                "bare render loop PDFs/s",
                f"{r['single_process_per_s']} (1 process), "
                f"{r['pool_per_s']} ({r['pool_processes']} processes)",
            )
        )
    rows.append(("checks", "ok" if not s["checks_failed"] else f"FAILED {s['checks_failed']}"))
    rows += [(f"  {k}", v) for k, v in s["checks"].items()]
    rows.append(("ok", s["ok"]))
    return "\n".join(f"{name:38} {value}" for name, value in rows)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    system = await start_system(args)
    healthy = False
    try:
        print(f"{len(system.cluster.processes)} service processes ready; logs in {system.work}")
        result = await measured_run(system, args)
        orders = result["orders"]
        healthy = all(o.decided and o.drafted for o in orders) and all(
            v.ok for v in result["verdicts"]
        )
        if not healthy:
            for p in system.cluster.processes:
                print(f"----- {p.name}:{p.port} -----\n{p.log_tail(20)}")
    finally:
        await asyncio.to_thread(stop_system, system, keep=not healthy and args.keep_logs)
    # with the system stopped, so that the loop has the machine to itself
    render = None
    if args.render_seconds > 0:
        render = await asyncio.to_thread(_bench_render.render_rates, args.render_seconds)
    return summary_of(args, result, render)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=1000)
    p.add_argument("--via", choices=("bus", "http"), default="bus")
    p.add_argument("--replicas", type=int, default=1, help="processes of each service")
    p.add_argument(
        "--concurrency", type=int, default=8, help="closed loop: submitters sending back to back"
    )
    p.add_argument(
        "--rate", type=float, default=0.0, help="open loop: orders a second (0: closed loop)"
    )
    p.add_argument("--prefetch", type=int, default=0, help="every service's prefetch (0: its own)")
    p.add_argument("--department-prefetch", type=int, default=100)
    p.add_argument("--service-log-level", default="INFO")
    p.add_argument(
        "--http-create-rate",
        default="1000000/minute",
        help="intake's ORDERFLOW_AUTH_ORDER_CREATE_RATE for the run (its default is 600/minute)",
    )
    p.add_argument("--warmup", type=int, default=5, help="orders through before measuring")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for the orders")
    p.add_argument("--drain-timeout", type=float, default=120)
    p.add_argument("--render-seconds", type=float, default=10, help="0: no bare render loop")
    p.add_argument("--quick", action="store_true", help="30 orders, short render loop")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' folder on failure")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    if args.quick:
        args.orders = min(args.orders, 30)
        args.render_seconds = min(args.render_seconds, 2)
        args.warmup = min(args.warmup, 2)
    return args


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    args = parse()
    summary = asyncio.run(run(args))
    print(table(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
