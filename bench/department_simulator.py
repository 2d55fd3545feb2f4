"""Department simulator: answers review requests the way department systems would.

Consumes the `review.<department>` queues and answers each `review.requested` with a
`review.verdict` on `orderflow.verdicts` (routing key = the department): approve, or ask
for changes with one or two annotations on fields of the order. Decisions come from a
seeded random generator, so a run with the same seed and the same requests makes the same
decisions. `review.cancelled` is acknowledged and ignored.

A request is acknowledged only after its verdict was confirmed by the broker, so stopping
the simulator (SIGINT or SIGTERM) never loses a review: an unanswered one is redelivered
to the next reviewer.

Every verdict carries the AMQP `user_id` of the connection that publishes it (RabbitMQ
checks it; the router refuses verdicts without one). With
`--department-url finance=amqp://dept-finance:...@host/vhost` each department connects
as its own user (`orderflow-bus provision` makes them), as real department systems do;
with one user for all departments (`--amqp-url`), the router must let that user act for
any department (REVIEW_ROUTER_VERDICT_ACTING_USERS).

    uv run python bench/department_simulator.py \
        --department-url supervisor=amqp://dept-supervisor:SECRET@127.0.0.1:5672/orderflow \
        --department-url finance=amqp://dept-finance:SECRET@127.0.0.1:5672/orderflow \
        --departments supervisor,finance --approve-rate 0.9 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import re
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from orderflow import topology
from orderflow.messages import (
    Annotation,
    Decision,
    ReviewCancelled,
    Reviewer,
    ReviewRequested,
    Severity,
    VerdictGiven,
)
from orderflow.outbox import envelope_headers

log = logging.getLogger("department-simulator")

APP_ID = "department-simulator"
DEPARTMENT = re.compile(r"^[a-z][a-z0-9_]{1,40}$")

# What each department typically objects to (process section 3.2), as JSON pointers into
# the order document. Only remarks whose field exists in the order under review are used.
REMARKS: dict[str, list[tuple[str, str, Severity]]] = {
    "supervisor": [
        (
            "/customer/company/credit_standing",
            "Credit record needs a second check by the risk desk",
            Severity.MAJOR,
        ),
        (
            "/customer/company/business_scope",
            "Business scope does not match the order",
            Severity.MINOR,
        ),
        ("/external_ref", "Give the customer's purchase order number", Severity.MINOR),
    ],
    "production": [
        (
            "/delivery/date",
            "Capacity is booked until then; two weeks later is possible",
            Severity.BLOCKER,
        ),
        ("/lines/0/quantity", "Deliver in two batches at this quantity", Severity.MAJOR),
        ("/quality_requirements", "Name the inspection standard", Severity.MINOR),
    ],
    "service_delivery": [
        (
            "/lines/0/service/period_start",
            "No engineers free before the second week",
            Severity.BLOCKER,
        ),
        (
            "/lines/0/service/standard",
            "A 4-hour response needs an engineer on site; price it",
            Severity.MAJOR,
        ),
        ("/delivery/address", "Give the site address for the service team", Severity.MINOR),
    ],
    "finance": [
        ("/payment/terms", "Advance payment must be at least 50%", Severity.BLOCKER),
        ("/lines/0/unit_price", "Below cost price", Severity.BLOCKER),
        (
            "/payment/settlement_days",
            "Settlement period longer than 30 days needs approval",
            Severity.MAJOR,
        ),
        ("/tax_rate", "Check the tax rate for this customer", Severity.MINOR),
    ],
    "technical": [
        ("/technical_requirements", "Attach the drawing the tolerances refer to", Severity.BLOCKER),
        ("/lines/0/specification", "Specification is ambiguous; give the standard", Severity.MAJOR),
    ],
}
FALLBACK = [("/notes", "Please add the details this review needs", Severity.MAJOR)]


@dataclass(frozen=True)
class Config:
    amqp_url: str
    departments: tuple[str, ...]
    approve_rate: float = 1.0
    duplicate_rate: float = 0.0
    seed: int | None = None
    prefetch: int = 20
    think_time: float = 0.0
    publish_timeout: float = 10.0
    # the user_id verdicts carry; None: the user of the connection that publishes them
    user_id: str | None = None
    # department -> its own AMQP URL (its own RabbitMQ user); others use amqp_url
    department_urls: dict[str, str] = field(default_factory=dict)

    def url_of(self, department: str) -> str:
        return self.department_urls.get(department, self.amqp_url)

    def user_of(self, department: str) -> str | None:
        if department in self.department_urls:
            return user_in(self.department_urls[department])
        return self.user_id or user_in(self.amqp_url)


def user_in(url: str) -> str | None:
    user = urlsplit(url).username
    return unquote(user) if user else None


def _resolves(document: Any, pointer: str) -> bool:
    node = document
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return True


class Simulator:
    """Answers the review requests of some departments until told to stop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.stats: Counter[str] = Counter()
        # where each department publishes: its own connection's channel when it has one
        self._exchanges: dict[str, AbstractExchange] = {}
        self._in_flight: set[asyncio.Task[None]] = set()

    def answer(self, request: ReviewRequested) -> VerdictGiven:
        """The department's verdict; draws from the generator before anything is awaited, so
        the sequence of decisions depends only on the seed and the order of requests."""
        approve = self.rng.random() < self.config.approve_rate
        annotations: list[Annotation] = []
        if not approve:
            document = request.order.model_dump(mode="json")
            candidates = [
                r for r in REMARKS.get(request.department, []) if _resolves(document, r[0])
            ] or FALLBACK
            picked = self.rng.sample(candidates, min(self.rng.choice((1, 2)), len(candidates)))
            annotations = [Annotation(field=f, message=m, severity=s) for f, m, s in picked]
        return VerdictGiven(
            review_id=request.review_id,
            order_id=request.order_id,
            revision=request.revision,
            department=request.department,
            decision=Decision.APPROVE if approve else Decision.REQUEST_CHANGES,
            reviewer=Reviewer(
                id=f"{request.department}.reviewer", name=f"{request.department} reviewer"
            ),
            comment="Approved" if approve else "Please revise the annotated fields",
            annotations=annotations,
        )

    async def _publish(self, verdict: VerdictGiven, message_id: str) -> None:
        exchange = self._exchanges[verdict.department]
        message = aio_pika.Message(
            verdict.model_dump_json().encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            correlation_id=str(verdict.order_id),
            type=VerdictGiven.message_type,
            app_id=APP_ID,
            timestamp=datetime.now(UTC),
            headers=envelope_headers(verdict),
            # RabbitMQ refuses the message unless this is the connection's own user, so the
            # router knows the verdict really comes from the department's system
            user_id=self.config.user_of(verdict.department),
        )
        # mandatory: a verdict nobody routes is an error here, not a silent drop
        await exchange.publish(
            message,
            routing_key=verdict.department,
            mandatory=True,
            timeout=self.config.publish_timeout,
        )

    async def handle(self, message: AbstractIncomingMessage) -> None:
        if message.type == ReviewCancelled.message_type:
            self.stats["cancelled"] += 1
            await message.ack()
            return
        try:
            if message.type != ReviewRequested.message_type:
                raise ValueError(f"unexpected message type {message.type!r}")
            request = ReviewRequested.model_validate_json(message.body)
        except (ValueError, ValidationError) as exc:
            # to the department queue's dead-letter queue, where people can look at it
            log.warning("unreadable review request rejected: %s", exc)
            self.stats["rejected"] += 1
            await message.reject(requeue=False)
            return
        verdict = self.answer(request)
        duplicate = self.rng.random() < self.config.duplicate_rate
        if self.config.think_time:
            await asyncio.sleep(self.rng.uniform(0, self.config.think_time))
        message_id = str(uuid.uuid4())
        try:
            await self._publish(verdict, message_id)
            if duplicate:
                # the same message again, as a client retrying after a lost confirm would
                await self._publish(verdict, message_id)
        except Exception as exc:
            log.warning("verdict not confirmed, request goes back to the queue: %r", exc)
            self.stats["publish_failed"] += 1
            await message.nack(requeue=True)
            return
        await message.ack()
        self.stats[verdict.decision.value] += 1
        self.stats["duplicates_sent"] += duplicate
        log.info(
            "%s %s revision %d: %s",
            request.department,
            request.order_id,
            request.revision,
            verdict.decision.value,
        )

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # tracked, so a stop waits for verdicts already being published
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self.handle(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def run(self, stop: asyncio.Event) -> Counter[str]:
        async with contextlib.AsyncExitStack() as stack:
            connections: dict[str, aio_pika.abc.AbstractRobustConnection] = {}
            consumers: list[tuple[AbstractQueue, str]] = []
            for department in self.config.departments:
                url = self.config.url_of(department)
                if url not in connections:
                    opened = await aio_pika.connect_robust(
                        url, client_properties={"connection_name": APP_ID}
                    )
                    connections[url] = await stack.enter_async_context(opened)
                connection = connections[url]
                publishing = await connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                consuming = await connection.channel()
                await consuming.set_qos(prefetch_count=self.config.prefetch)
                if department in self.config.department_urls:
                    # a department's own user may configure nothing: the router declared
                    # the queue and the exchange
                    queue = await consuming.get_queue(
                        topology.department_queue(department).name, ensure=False
                    )
                    exchange = await publishing.get_exchange(topology.VERDICTS, ensure=False)
                else:
                    await topology.declare(consuming, [topology.department_queue(department)])
                    queue = await consuming.get_queue(topology.department_queue(department).name)
                    exchange = await publishing.get_exchange(topology.VERDICTS)
                self._exchanges[department] = exchange
                consumers.append((queue, await queue.consume(self._on_message)))
            log.info("answering reviews for %s", ", ".join(self.config.departments))
            await stop.wait()
            for queue, tag in consumers:
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)
            if self._in_flight:
                await asyncio.wait(set(self._in_flight), timeout=self.config.publish_timeout)
        return self.stats


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        description="Answer Orderflow review requests as department systems would."
    )
    parser.add_argument(
        "--amqp-url",
        default="",
        help="for departments without a --department-url, e.g. amqp://user:secret@host/vhost",
    )
    parser.add_argument(
        "--departments",
        default=",".join(topology.DEFAULT_DEPARTMENTS),
        help="comma-separated departments to answer for (default: all of the process)",
    )
    parser.add_argument(
        "--approve-rate", type=float, default=1.0, help="share of reviews approved, 0..1"
    )
    parser.add_argument(
        "--duplicate-rate",
        type=float,
        default=0.0,
        help="share of verdicts sent twice with the same message id, 0..1",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the decisions")
    parser.add_argument("--prefetch", type=int, default=20, help="unacknowledged requests per run")
    parser.add_argument(
        "--think-time", type=float, default=0.0, help="up to this many seconds per review"
    )
    parser.add_argument(
        "--user-id",
        default=None,
        help="the AMQP user_id on verdicts (default: the user in --amqp-url; RabbitMQ refuses "
        "any other)",
    )
    parser.add_argument(
        "--department-url",
        action="append",
        default=[],
        metavar="DEPARTMENT=AMQP_URL",
        help="connect this department as its own RabbitMQ user (repeatable), e.g. "
        "finance=amqp://dept-finance:secret@127.0.0.1:5672/orderflow",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    department_urls: dict[str, str] = {}
    for item in args.department_url:
        name, sep, url = item.partition("=")
        if not sep or not DEPARTMENT.match(name.strip()) or not url.startswith("amqp"):
            parser.error(f"--department-url: expected DEPARTMENT=amqp://..., got {item!r}")
        department_urls[name.strip()] = url.strip()
    departments = tuple(d.strip() for d in args.departments.split(",") if d.strip())
    without = [d for d in departments if d not in department_urls]
    if without and not args.amqp_url:
        parser.error(f"give --amqp-url, or a --department-url for {', '.join(without)}")
    for name, rate in (
        ("--approve-rate", args.approve_rate),
        ("--duplicate-rate", args.duplicate_rate),
    ):
        if not 0.0 <= rate <= 1.0:
            parser.error(f"{name} must be between 0 and 1, got {rate}")
    if not departments:
        parser.error("--departments names no department")
    for department in departments:
        if not DEPARTMENT.match(department):
            parser.error(
                f"--departments: {department!r} is not a department name "
                "(lower case letters, digits and _)"
            )
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(message)s",
    )
    return Config(
        amqp_url=args.amqp_url,
        departments=departments,
        approve_rate=args.approve_rate,
        duplicate_rate=args.duplicate_rate,
        seed=args.seed,
        prefetch=args.prefetch,
        think_time=args.think_time,
        user_id=args.user_id,
        department_urls=department_urls,
    )


async def _main(config: Config) -> Counter[str]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await Simulator(config).run(stop)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    stats = asyncio.run(_main(config))
    print(json.dumps({"departments": list(config.departments), **stats}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
