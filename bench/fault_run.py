"""The fault run: prove the system loses nothing while things are killed and restarted.

All four services run with two replicas each as separate processes, on a RabbitMQ node and a
PostgreSQL cluster of the run's own (so restarting them touches nothing else on the
machine). A load generator submits orders over HTTP and over the bus at a steady rate;
department simulators answer with approvals and change requests (some verdicts twice); the
salesperson side revises and resubmits; and a chaos driver, on a seeded schedule, SIGKILLs
service processes and restarts them, restarts RabbitMQ, restarts PostgreSQL in immediate
mode, and injects poison messages into every input queue. When the system has gone quiet,
the invariants are checked and printed as figures; a failed one prints the offending ids.

    uv run python bench/fault_run.py --orders 5000 --rate 40      # the full run
    uv run python bench/fault_run.py --orders 300 --rate 20 --kills 4   # CI-sized

Exit status 0 only when every invariant holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx

from orderflow import busaccess, topology
from orderflow.auth.identity import ORDERS_WRITE
from orderflow.messages import ReviewRequested, VerdictGiven
from orderflow_testkit.localservers import LocalPostgres, LocalRabbit
from orderflow_testkit.testing import (
    Infra,
    ServiceProcess,
    bearer,
    example_order,
    issue_key_for,
    provisioned,
    start_service,
    wait_ready,
)

SERVICES = ("intake", "review-router", "contracts", "notifier")
SCHEMAS = {
    "intake": "intake",
    "review-router": "review_router",
    "contracts": "contracts",
    "notifier": "notifier",
}
# every part on the bus is its own RabbitMQ user, made by `provisioned` on the run's node:
# the services, each department (`dept-<department>`), a submitter and a listener


@dataclass
class Figures:
    submitted_http: int = 0
    submitted_bus: int = 0
    bus_duplicates: int = 0
    http_retries: int = 0
    verdicts: int = 0
    verdicts_duplicated: int = 0
    changes_requested: int = 0
    resubmitted: int = 0
    kills: int = 0
    broker_restarts: int = 0
    database_restarts: int = 0
    poison: int = 0
    last_fault_at: float = 0.0
    drained_at: float = 0.0
    events: list[str] = field(default_factory=list)

    def log(self, what: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {what}"
        self.events.append(line)
        print(line, flush=True)


class Intake:
    """A live intake replica's URL for each call, and the credential to send it."""

    def __init__(self, cluster: Cluster, rng: random.Random, headers: dict[str, str]) -> None:
        self.cluster = cluster
        self.rng = rng
        self.headers = headers

    def __call__(self) -> str:
        urls = self.cluster.urls("intake")
        return self.rng.choice(urls) if urls else self.cluster.processes[0].url


class Cluster:
    """The service processes: replicas per service, killed and restarted by the chaos."""

    def __init__(self, infra: Infra, log_dir: Path, replicas: int) -> None:
        self.infra = infra
        self.log_dir = log_dir
        self.replicas = replicas
        self.processes: list[ServiceProcess] = []

    def _start(self, name: str) -> ServiceProcess:
        return start_service(self.infra, name, self.log_dir)

    async def start(self) -> None:
        self.processes = [self._start(n) for n in SERVICES for _ in range(self.replicas)]
        await asyncio.gather(*(wait_ready(p, timeout=120) for p in self.processes))

    def urls(self, name: str) -> list[str]:
        return [p.url for p in self.processes if p.name == name and p.process.poll() is None]

    async def kill_and_restart(self, rng: random.Random, figures: Figures) -> None:
        victim = rng.choice([p for p in self.processes if p.process.poll() is None])
        victim.process.kill()  # SIGKILL: no shutdown, in-flight work is cut off
        victim.process.wait()
        figures.kills += 1
        figures.log(f"SIGKILL {victim.name} (port {victim.port})")
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        replacement = self._start(victim.name)
        self.processes[self.processes.index(victim)] = replacement
        # a loaded machine can take a while; the run goes on meanwhile
        await wait_ready(replacement, timeout=600)
        figures.log(f"restarted {victim.name} (port {replacement.port})")

    def stop(self) -> None:
        for p in self.processes:
            p.terminate(timeout=30)


def decide(review: ReviewRequested, change_rate: float) -> str:
    """Deterministic per review: some first revisions get a change request from finance."""
    digest = hashlib.sha256(f"{review.order_id}".encode()).digest()
    unlucky = digest[0] / 255 < change_rate
    if review.revision == 1 and unlucky and review.department == "finance":
        return "request_changes"
    return "approve"


async def publish_retrying(channel_holder: dict[str, Any], connection: Any, **kwargs: Any) -> None:
    """Publish with confirms; across a broker restart keep trying (a fresh channel each time)."""
    for attempt in range(600):
        try:
            channel = channel_holder.get("channel")
            if channel is None or channel.is_closed:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                channel_holder["channel"] = channel
            exchange = (
                channel.default_exchange
                if kwargs["exchange"] == ""
                else await channel.get_exchange(kwargs["exchange"], ensure=False)
            )
            await exchange.publish(
                kwargs["message"], routing_key=kwargs["routing_key"], mandatory=True, timeout=10
            )
            return
        except Exception:
            channel_holder.pop("channel", None)
            await asyncio.sleep(min(2.0, 0.1 * (attempt + 1)))
    raise RuntimeError("could not publish for a minute")


async def consume_forever(
    url: str,
    queues: list[str],
    handle: Any,
    stop: asyncio.Event,
    *,
    prefetch: int,
    setup: Any = None,
) -> None:
    """Consume until `stop`, reconnecting from scratch whenever the connection is lost (as a
    department system should: a broker restart must not leave it deaf)."""
    while not stop.is_set():
        try:
            connection = await aio_pika.connect(url)
        except Exception:  # the broker is away
            await asyncio.sleep(1)
            continue
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_, lost=lost: lost.set())
        try:
            publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=prefetch)
            if setup is not None:
                await setup(channel)
            for name in queues:
                queue = await channel.declare_queue(name, passive=True)

                async def deliver(message: Any, publisher: Any = publisher) -> None:
                    await handle(message, publisher)

                await queue.consume(deliver)
            stopping = asyncio.create_task(stop.wait())
            closing = asyncio.create_task(lost.wait())
            await asyncio.wait({stopping, closing}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            closing.cancel()
        except Exception:  # lost while setting up: start again
            await asyncio.sleep(1)
        finally:
            with contextlib.suppress(Exception):
                await connection.close()


async def departments(
    infra: Infra,
    rng: random.Random,
    figures: Figures,
    *,
    change_rate: float,
    duplicate_rate: float,
    stop: asyncio.Event,
) -> None:
    """Answer every review request, each department as its own user; some verdicts are sent
    twice. A verdict whose publish fails leaves its request unacknowledged, so it comes back
    after the reconnection."""
    await asyncio.gather(
        *(
            _department(
                infra,
                department,
                rng,
                figures,
                change_rate=change_rate,
                duplicate_rate=duplicate_rate,
                stop=stop,
            )
            for department in topology.DEFAULT_DEPARTMENTS
        )
    )


async def _department(
    infra: Infra,
    department: str,
    rng: random.Random,
    figures: Figures,
    *,
    change_rate: float,
    duplicate_rate: float,
    stop: asyncio.Event,
) -> None:
    user = infra.user(f"dept-{department}")

    async def on_request(message: aio_pika.abc.AbstractIncomingMessage, publisher: Any) -> None:
        if message.type != "review.requested":
            await message.ack()
            return
        review = ReviewRequested.model_validate_json(message.body)
        decision = decide(review, change_rate)
        annotations = (
            [{"field": "/payment/terms", "message": "预付比例至少 50%", "severity": "blocker"}]
            if decision == "request_changes"
            else []
        )
        verdict = VerdictGiven.model_validate(
            {
                "review_id": review.review_id,
                "order_id": review.order_id,
                "revision": review.revision,
                "department": review.department,
                "decision": decision,
                "reviewer": {"id": f"{review.department}.sim"},
                "annotations": annotations,
            }
        )
        mid = str(uuid.uuid4())
        times = 2 if rng.random() < duplicate_rate else 1
        try:
            exchange = await publisher.get_exchange(topology.VERDICTS, ensure=False)
            for _ in range(times):
                await exchange.publish(
                    aio_pika.Message(
                        verdict.model_dump_json().encode(),
                        message_id=mid,
                        type=VerdictGiven.message_type,
                        content_type="application/json",
                        correlation_id=str(review.order_id),
                        user_id=user,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=review.department,
                    mandatory=True,
                    timeout=10,
                )
            await message.ack()
        except Exception:  # the broker went away mid-answer: the request comes back
            return
        figures.verdicts += 1
        figures.verdicts_duplicated += times - 1

    await consume_forever(
        infra.url_as(f"dept-{department}"),
        [f"review.{department}"],
        on_request,
        stop,
        prefetch=10,
    )


async def salespeople(infra: Infra, intake: Any, figures: Figures, stop: asyncio.Event) -> None:
    """Revise and resubmit every order that came back with changes requested; listening to
    the events as an event listener does, in a queue of its own user's."""
    queue_name = f"{infra.user('listener')}.salespeople"

    async def setup(channel: Any) -> None:
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(topology.EVENTS, routing_key="order.changes_requested")

    async def on_changes(message: aio_pika.abc.AbstractIncomingMessage, _: Any) -> None:
        body = json.loads(message.body)
        order_id = body["order_id"]
        for attempt in range(300):
            try:
                async with httpx.AsyncClient(
                    base_url=intake(), timeout=10, headers=intake.headers
                ) as client:
                    current = await client.get(f"/api/v1/orders/{order_id}")
                    view = current.json()
                    if (view.get("submitted_revision") or 0) > body["revision"]:
                        break  # already revised and resubmitted (a redelivery after a kill)
                    if view["status"] != "changes_requested":
                        # intake's projection has not seen the decision yet
                        raise RuntimeError(f"status still {view['status']}")
                    document = view["document"]
                    document["payment"]["terms"] = "50% 预付，50% 货到后 30 天内付清"
                    headers = (
                        {"If-Match": current.headers["etag"]} if "etag" in current.headers else {}
                    )
                    put = await client.put(
                        f"/api/v1/orders/{order_id}", json=document, headers=headers
                    )
                    if put.status_code >= 400 and put.status_code != 409:
                        raise RuntimeError(f"PUT {put.status_code}: {put.text}")
                    sub = await client.post(f"/api/v1/orders/{order_id}/submit")
                    if sub.status_code >= 500:
                        raise RuntimeError(f"submit {sub.status_code}")
                    figures.resubmitted += 1
                    break
            except Exception as exc:  # an intake replica died, the database restarts, ...
                if attempt in (20, 100):  # the first failures are routine: a projection lags
                    figures.log(f"resubmitting {order_id} failed (attempt {attempt}): {exc!r}")
                await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
        figures.changes_requested += 1
        with contextlib.suppress(Exception):
            await message.ack()

    await consume_forever(
        infra.url_as("listener"), [queue_name], on_changes, stop, prefetch=20, setup=setup
    )


async def load(
    infra: Infra,
    intake: Any,
    n: int,
    rate: float,
    rng: random.Random,
    figures: Figures,
    accepted: dict[str, str],
) -> None:
    """Submit `n` orders at `rate` a second, half over HTTP and half over the bus (as an
    order-submitting system's user)."""
    connection = await aio_pika.connect_robust(infra.url_as("submitter"), reconnect_interval=1)
    submitter = infra.user("submitter")
    holder: dict[str, Any] = {}
    product = example_order("order-product")
    product.pop("technical_requirements", None)
    service = example_order("order-service")

    async def over_http(i: int, ref: str) -> None:
        document = {**product, "external_ref": ref}
        key = f"faultrun-{ref}"
        for attempt in range(600):
            try:
                async with httpx.AsyncClient(
                    base_url=intake(), timeout=10, headers=intake.headers
                ) as client:
                    r = await client.post(
                        "/api/v1/orders",
                        params={"submit": "true"},
                        json=document,
                        headers={"Idempotency-Key": key},
                    )
                if r.status_code in (200, 201):
                    accepted[ref] = r.json()["id"]
                    figures.submitted_http += 1
                    return
                raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
            except Exception:
                figures.http_retries += 1
                await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))

    async def over_bus(i: int, ref: str) -> None:
        document = {**service, "external_ref": ref}
        mid = str(uuid.uuid4())
        times = 2 if rng.random() < 0.05 else 1
        for _ in range(times):
            await publish_retrying(
                holder,
                connection,
                exchange=topology.COMMANDS,
                routing_key="order.submit",
                message=aio_pika.Message(
                    json.dumps(document, ensure_ascii=False).encode(),
                    message_id=mid,
                    type="order.submit",
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    user_id=submitter,
                ),
            )
        figures.submitted_bus += 1
        figures.bus_duplicates += times - 1
        accepted[ref] = ""  # its id is found by reference at the end

    tasks = []
    for i in range(n):
        ref = f"FR-{i:06d}"
        tasks.append(asyncio.create_task(over_http(i, ref) if i % 2 == 0 else over_bus(i, ref)))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    await connection.close()


# what each input queue expects, so the poison is refused by its consumer, not ignored
QUEUE_TYPES = {
    topology.INTAKE_COMMANDS.name: "order.submit",
    topology.INTAKE_PROJECTION.name: "order.approved",
    topology.ROUTER_SUBMITTED.name: "order.submitted",
    topology.ROUTER_WITHDRAWAL_REQUESTS.name: "order.withdrawal_requested",
    "review-router.verdicts": "review.verdict",
    topology.CONTRACTS_APPROVED.name: "order.approved",
    topology.NOTIFIER_CHANGES_REQUESTED.name: "order.changes_requested",
    topology.NOTIFIER_APPROVED.name: "order.approved",
    topology.NOTIFIER_CONTRACT_DRAFTED.name: "contract.drafted",
}


def poison_bodies(queue: str) -> list[bytes]:
    """Invalid JSON and a wrong schema for every queue; an unknown order where the consumer
    can know (a verdict for a review nobody asked for, a revision of an order that does not
    exist)."""
    bodies = [b"{not json", json.dumps({"unexpected": "shape"}).encode()]
    if queue == "review-router.verdicts":
        bodies.append(
            json.dumps(
                {
                    "review_id": str(uuid.uuid4()),
                    "order_id": str(uuid.uuid4()),
                    "revision": 1,
                    "department": "finance",
                    "decision": "approve",
                    "reviewer": {"id": "x"},
                }
            ).encode()
        )
    if queue == topology.INTAKE_COMMANDS.name:
        bodies.append(
            json.dumps(
                {**example_order("order-service"), "order_id": str(uuid.uuid4())},
                ensure_ascii=False,
            ).encode()
        )
    return bodies


def _poison_route(queue: str, message_type: str) -> tuple[str, str, str]:
    """As whom and where a message of this type comes from: its right producer (so the
    poison reaches the consumer's validation), the exchange and the routing key."""
    if message_type == "order.submit":
        return "submitter", topology.COMMANDS, "order.submit"
    if message_type == "review.verdict":
        return "dept-finance", topology.VERDICTS, "finance"
    # a service's user may write to the default exchange (replies), straight into the queue
    return busaccess.EVENT_PRODUCERS[message_type], "", queue


async def poison(infra: Infra, figures: Figures) -> list[tuple[str, str]]:
    """Poison into every input queue: each must end in its dead-letter queue with a reason."""
    sent: list[tuple[str, str]] = []
    for queue, message_type in QUEUE_TYPES.items():
        role, exchange, key = _poison_route(queue, message_type)
        connection = await aio_pika.connect(infra.url_as(role))
        async with connection.channel(publisher_confirms=True) as channel:
            target = (
                await channel.get_exchange(exchange, ensure=False)
                if exchange
                else channel.default_exchange
            )
            for body in poison_bodies(queue):
                mid = f"poison-{uuid.uuid4()}"
                await target.publish(
                    aio_pika.Message(
                        body,
                        message_id=mid,
                        type=message_type,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        user_id=infra.user(role),
                    ),
                    routing_key=key,
                )
                sent.append((queue, mid))
        await connection.close()
    figures.poison += len(sent)
    figures.log(f"injected {len(sent)} poison messages into {len(QUEUE_TYPES)} queues")
    return sent


async def chaos(
    cluster: Cluster,
    rabbit: LocalRabbit,
    postgres: LocalPostgres,
    rng: random.Random,
    figures: Figures,
    *,
    duration: float,
    kills: int,
    broker_restarts: int,
    db_restarts: int,
    poisoned: list[tuple[str, str]],
) -> None:
    """The seeded schedule of faults, spread over the load's duration."""
    plan = ["kill"] * kills + ["broker"] * broker_restarts + ["database"] * db_restarts + ["poison"]
    rng.shuffle(plan)
    moments = sorted(rng.uniform(0.1, 0.9) * duration for _ in plan)
    began = time.monotonic()
    for moment, fault in zip(moments, plan, strict=True):
        await asyncio.sleep(max(0.0, began + moment - time.monotonic()))
        if fault == "kill":
            await cluster.kill_and_restart(rng, figures)
        elif fault == "broker":
            figures.log("RabbitMQ restart")
            away = await asyncio.to_thread(rabbit.restart)
            figures.broker_restarts += 1
            figures.log(f"RabbitMQ back after {away:.1f}s")
        elif fault == "database":
            figures.log("PostgreSQL immediate restart")
            away = await asyncio.to_thread(postgres.restart, "immediate")
            figures.database_restarts += 1
            figures.log(f"PostgreSQL back after {away:.1f}s")
        else:
            poisoned += await poison(cluster.infra, figures)
        figures.last_fault_at = time.monotonic()


@dataclass
class Verdict:
    name: str
    figure: Any
    ok: bool
    offenders: list[str] = field(default_factory=list)


async def queue_counts(rabbit: LocalRabbit) -> dict[str, tuple[int, int]]:
    out = await asyncio.to_thread(
        rabbit.rabbitmqctl,
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    )
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            counts[parts[0]] = (int(parts[1]), int(parts[2]))
    return counts


async def quiet(db: asyncpg.Pool, rabbit: LocalRabbit, expected: int, timeout: float) -> bool:
    """Wait until every order is settled, outboxes are drained and work queues are empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        settled = await db.fetchval(
            "SELECT count(*) FROM intake.orders WHERE status = 'contract_drafted'"
        )
        pending = 0
        for schema in SCHEMAS.values():
            pending += await db.fetchval(
                f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL"
            )
        counts = await queue_counts(rabbit)
        busy = sum(
            r + u
            for q, (r, u) in counts.items()
            if not q.endswith(".dlq") and q != "ops.discarded" and not q.startswith("faultrun.")
        )
        if settled >= expected and pending == 0 and busy == 0:
            return True
        await asyncio.sleep(1)
    return False


async def check(
    db: asyncpg.Pool,
    rabbit: LocalRabbit,
    accepted: dict[str, str],
    poisoned: list[tuple[str, str]],
) -> list[Verdict]:
    results: list[Verdict] = []
    rows = await db.fetch("SELECT id, status, external_ref FROM intake.orders")
    by_ref = Counter(r["external_ref"] for r in rows)
    doubled = [ref for ref, n in by_ref.items() if n > 1]
    lost = sorted(set(accepted) - set(by_ref))
    stuck = [
        f"{r['id']} ({r['external_ref']}: {r['status']})"
        for r in rows
        if r["status"] != "contract_drafted"
    ]
    results.append(Verdict("orders accepted", len(accepted), True))
    results.append(Verdict("orders lost", len(lost), not lost, lost))
    results.append(Verdict("orders doubled", len(doubled), not doubled, doubled))
    results.append(Verdict("orders stuck", len(stuck), not stuck, stuck))

    decisions = await db.fetch(
        """SELECT correlation_id, convert_from(body, 'UTF8')::jsonb->>'revision' AS revision,
                  count(*) AS n
           FROM review_router.outbox
           WHERE message_type IN ('order.approved', 'order.changes_requested')
           GROUP BY 1, 2 HAVING count(*) > 1"""
    )
    results.append(
        Verdict(
            "rounds decided twice",
            len(decisions),
            not decisions,
            [f"{d['correlation_id']} r{d['revision']}" for d in decisions],
        )
    )
    approved = await db.fetchval(
        "SELECT count(*) FROM review_router.outbox WHERE message_type = 'order.approved'"
    )
    results.append(Verdict("rounds approved", approved, approved == len(rows)))

    contracts = await db.fetch(
        "SELECT order_id, revision, count(*) AS n FROM contracts.contracts GROUP BY 1, 2"
    )
    extra = [f"{c['order_id']} r{c['revision']}" for c in contracts if c["n"] > 1]
    results.append(Verdict("contracts", len(contracts), len(contracts) == len(rows)))
    results.append(Verdict("contracts doubled", len(extra), not extra, extra))
    numbers = await db.fetchval("SELECT count(DISTINCT number) FROM contracts.contracts")
    results.append(Verdict("distinct contract numbers", numbers, numbers == len(contracts)))

    notes = await db.fetch(
        """SELECT order_id, event_type, recipient, channel, count(*) AS n
           FROM notifier.notifications GROUP BY 1, 2, 3, 4 HAVING count(*) > 1
              AND event_type <> 'order.changes_requested'"""
    )
    results.append(
        Verdict(
            "notifications doubled",
            len(notes),
            not notes,
            [f"{n['order_id']} {n['event_type']} {n['channel']}" for n in notes],
        )
    )

    counts = await queue_counts(rabbit)
    found: dict[str, set[str]] = {}
    connection = await aio_pika.connect(rabbit.url)
    try:
        from orderflow import deadletters

        for dlq in {f"{q}.dlq" for q, _ in poisoned}:
            letters = await deadletters.list_dead_letters(connection, dlq)
            found[dlq] = {d.message_id or "" for d in letters if d.reason}
    finally:
        await connection.close()
    missing = [f"{q}: {m}" for q, m in poisoned if m not in found.get(f"{q}.dlq", set())]
    results.append(Verdict("poison injected", len(poisoned), True))
    results.append(
        Verdict("poison not dead-lettered with a reason", len(missing), not missing, missing)
    )
    unacked = {q: c for q, c in counts.items() if c[1] > 0}
    results.append(
        Verdict(
            "messages left unacknowledged",
            sum(c[1] for c in unacked.values()),
            not unacked,
            [f"{q}: {c[1]}" for q, c in unacked.items()],
        )
    )
    waiting = {
        q: c
        for q, c in counts.items()
        if c[0] > 0 and not q.endswith(".dlq") and not q.startswith(("faultrun.", "ops."))
    }
    results.append(
        Verdict(
            "messages left in work queues",
            sum(c[0] for c in waiting.values()),
            not waiting,
            [f"{q}: {c[0]}" for q, c in waiting.items()],
        )
    )
    pending = 0
    for schema in SCHEMAS.values():
        pending += await db.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL")
    results.append(Verdict("outbox messages not yet sent", pending, pending == 0))
    return results


async def run(args: argparse.Namespace) -> tuple[bool, dict[str, Any]]:
    rng = random.Random(args.seed)
    figures = Figures()
    work = Path(tempfile.mkdtemp(prefix="orderflow-faultrun-"))
    work.chmod(0o755)  # the servers run as their own users and must reach their folders
    rabbit = LocalRabbit(work / "rabbit")
    postgres = LocalPostgres(work / "pg")
    logs = work / "logs"
    logs.mkdir()
    started = time.monotonic()
    rabbit.start()
    postgres.start()
    conn = await asyncpg.connect(postgres.url())
    await conn.execute("CREATE DATABASE orderflow")
    await conn.close()
    # the provisioning step: topology, and every part's own user with its permissions
    infra = provisioned(
        rabbit.admin(),
        amqp_url=rabbit.url,
        database_url=postgres.url("orderflow"),
        vhost="/",
        database="orderflow",
    )
    cluster = Cluster(infra, logs, args.replicas)
    accepted: dict[str, str] = {}
    poisoned: list[tuple[str, str]] = []
    stop = asyncio.Event()
    ok = False
    summary: dict[str, Any] = {}
    try:
        await cluster.start()
        figures.log(f"{len(cluster.processes)} service processes ready; logs in {logs}")

        # the simulated salespeople and CRM sign in as a CRM does: an API key of its own
        intake = Intake(
            cluster, rng, bearer(await issue_key_for(infra.database_url, [ORDERS_WRITE]))
        )

        helpers = [
            asyncio.create_task(
                departments(
                    infra,
                    random.Random(args.seed + 1),
                    figures,
                    change_rate=args.change_rate,
                    duplicate_rate=args.duplicate_rate,
                    stop=stop,
                )
            ),
            asyncio.create_task(salespeople(infra, intake, figures, stop)),
        ]
        duration = args.orders / args.rate
        chaos_task = asyncio.create_task(
            chaos(
                cluster,
                rabbit,
                postgres,
                random.Random(args.seed + 2),
                figures,
                duration=duration,
                kills=args.kills,
                broker_restarts=args.broker_restarts,
                db_restarts=args.database_restarts,
                poisoned=poisoned,
            )
        )
        await load(infra, intake, args.orders, args.rate, rng, figures, accepted)
        figures.log(f"load done: {len(accepted)} orders submitted")
        await chaos_task
        figures.log("faults done; waiting for the system to go quiet")
        pool = await asyncpg.create_pool(postgres.url("orderflow"), min_size=1, max_size=2)
        assert pool is not None
        try:
            settled = await quiet(pool, rabbit, len(accepted), args.drain_timeout)
            figures.drained_at = time.monotonic()
            figures.log("quiet" if settled else f"not quiet after {args.drain_timeout}s")
            verdicts = await check(pool, rabbit, accepted, poisoned)
        finally:
            await pool.close()
        ok = all(v.ok for v in verdicts)
        print("\nfigures:")
        summary = {
            "orders": args.orders,
            "seed": args.seed,
            "replicas": args.replicas,
            "submitted_http": figures.submitted_http,
            "submitted_bus": figures.submitted_bus,
            "bus_commands_sent_twice": figures.bus_duplicates,
            "http_retries": figures.http_retries,
            "verdicts": figures.verdicts,
            "verdicts_sent_twice": figures.verdicts_duplicated,
            "change_requests": figures.changes_requested,
            "resubmitted": figures.resubmitted,
            "kills": figures.kills,
            "broker_restarts": figures.broker_restarts,
            "database_restarts": figures.database_restarts,
            "poison": figures.poison,
            "seconds_to_drain_after_last_fault": round(
                figures.drained_at - (figures.last_fault_at or figures.drained_at), 1
            ),
            "total_seconds": round(time.monotonic() - started, 1),
        }
        for key, value in summary.items():
            print(f"  {key:36} {value}")
        print("\ninvariants:")
        for v in verdicts:
            mark = "ok  " if v.ok else "FAIL"
            print(f"  {mark} {v.name:40} {v.figure}")
            for offender in v.offenders[:20]:
                print(f"         {offender}")
        summary["invariants"] = {v.name: v.figure for v in verdicts}
        summary["ok"] = ok
        if not ok:
            for p in cluster.processes:
                print(f"----- {p.name}:{p.port} -----\n{p.log_tail(30)}")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*helpers, return_exceptions=True), 10)
        await asyncio.to_thread(cluster.stop)
        rabbit.destroy()
        postgres.destroy()
        if ok:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return ok, summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=5000)
    p.add_argument("--rate", type=float, default=40.0, help="orders a second")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--broker-restarts", type=int, default=1)
    p.add_argument("--database-restarts", type=int, default=1)
    p.add_argument("--change-rate", type=float, default=0.2)
    p.add_argument("--duplicate-rate", type=float, default=0.05)
    p.add_argument("--drain-timeout", type=float, default=600)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p


def main() -> int:
    args = parser().parse_args()
    ok, summary = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
