"""The bus topology in one place: exchanges, queues, bindings and dead-lettering.

The provisioning step (`orderflow-bus provision`, administrator credentials) declares all
of it. A service, with its own least-privilege user, only checks that the exchanges exist
and declares its own queues (idempotent, with the same arguments: a mismatch would make
RabbitMQ refuse the declaration); see `busaccess` for who may do what.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

COMMANDS = "orderflow.commands"
EVENTS = "orderflow.events"
REVIEWS = "orderflow.reviews"
VERDICTS = "orderflow.verdicts"
DLX = "orderflow.dlx"

#: Departments of the process document; a review policy may add more.
DEFAULT_DEPARTMENTS: tuple[str, ...] = (
    "supervisor",
    "production",
    "service_delivery",
    "finance",
    "technical",
)

#: A message redelivered this many times (a crash loop, a fault that never clears) is
#: dead-lettered by RabbitMQ itself, so one bad message cannot block a queue for ever.
DELIVERY_LIMIT = 10

EXCHANGE_TYPES: dict[str, ExchangeType] = {
    COMMANDS: ExchangeType.DIRECT,
    EVENTS: ExchangeType.TOPIC,
    REVIEWS: ExchangeType.DIRECT,
    VERDICTS: ExchangeType.DIRECT,
    DLX: ExchangeType.DIRECT,
}


def exchange(name: str) -> RabbitExchange:
    """The exchange for faststream's subscribers, which declare it when they start: passive,
    as a service's user may use the exchanges but not declare them."""
    return RabbitExchange(name, type=EXCHANGE_TYPES[name], durable=True, declare=False)


def dead_letter_queue_name(queue: str) -> str:
    return f"{queue}.dlq"


def queue_arguments(name: str) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": name,
        # at-least-once dead-lettering: RabbitMQ keeps the message until the DLQ confirms it
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


@dataclass(frozen=True)
class QueueSpec:
    """A work queue: quorum, delivery limit, and its own `<name>.dlq`."""

    name: str
    exchange: str
    routing_keys: Sequence[str] = field(default_factory=tuple)

    @property
    def dlq(self) -> str:
        return dead_letter_queue_name(self.name)

    def rabbit_queue(self, routing_key: str | None = None) -> RabbitQueue:
        """The faststream queue object, for `@broker.subscriber` (with identical arguments)."""
        key = routing_key if routing_key is not None else (self.routing_keys or [""])[0]
        args: Any = queue_arguments(self.name)
        return RabbitQueue(self.name, queue_type=QueueType.QUORUM, arguments=args, routing_key=key)


def department_queue(department: str) -> QueueSpec:
    return QueueSpec(f"review.{department}", REVIEWS, (department,))


def verdict_queue(departments: Iterable[str]) -> QueueSpec:
    return QueueSpec("review-router.verdicts", VERDICTS, tuple(departments))


# The services' own queues, `<service>.<purpose>`.
INTAKE_COMMANDS = QueueSpec("intake.commands", COMMANDS, ("order.submit",))
# Bound to `#`, though the projection needs only intake's `domain.PROJECTED_EVENTS`: this
# binding is what makes every event on `orderflow.events` routable, and the outbox
# publishes `mandatory` (an unroutable event is an error). Narrowing it needs a catch-all
# first (an alternate exchange on `orderflow.events`), or `review.reassigned`,
# `contract.sent`, `contract.voided` and any type nobody else binds would be refused.
INTAKE_PROJECTION = QueueSpec("intake.projection", EVENTS, ("#",))
ROUTER_SUBMITTED = QueueSpec("review-router.order-submitted", EVENTS, ("order.submitted",))
# withdrawals are asked of the router, which decides them against the round's decision
ROUTER_WITHDRAWAL_REQUESTS = QueueSpec(
    "review-router.withdrawal-requests", EVENTS, ("order.withdrawal_requested",)
)
CONTRACTS_APPROVED = QueueSpec("contracts.order-approved", EVENTS, ("order.approved",))
# One queue per event type, so each subscriber is typed with its message model (and
# documented as such in AsyncAPI).
NOTIFIER_CHANGES_REQUESTED = QueueSpec(
    "notifier.order-changes-requested", EVENTS, ("order.changes_requested",)
)
NOTIFIER_APPROVED = QueueSpec("notifier.order-approved", EVENTS, ("order.approved",))
NOTIFIER_CONTRACT_DRAFTED = QueueSpec("notifier.contract-drafted", EVENTS, ("contract.drafted",))
NOTIFIER_REVIEW_OVERDUE = QueueSpec("notifier.review-overdue", EVENTS, ("review.overdue",))
NOTIFIER_REVIEW_SENT = QueueSpec("notifier.review-sent", EVENTS, ("review.sent",))
NOTIFIER_REVIEW_ESCALATED = QueueSpec("notifier.review-escalated", EVENTS, ("review.escalated",))
NOTIFIER_WITHDRAWAL_REFUSED = QueueSpec(
    "notifier.order-withdrawal-refused", EVENTS, ("order.withdrawal_refused",)
)


#: Every queue of the system; the provisioning step declares all of them, so an event is
#: routable (and waits in its queue) even while the service that consumes it is not yet
#: deployed: the outbox treats an unroutable message as an error, not as delivered.
SERVICE_QUEUES: tuple[QueueSpec, ...] = (
    INTAKE_COMMANDS,
    INTAKE_PROJECTION,
    ROUTER_SUBMITTED,
    ROUTER_WITHDRAWAL_REQUESTS,
    verdict_queue(DEFAULT_DEPARTMENTS),
    CONTRACTS_APPROVED,
    NOTIFIER_CHANGES_REQUESTED,
    NOTIFIER_APPROVED,
    NOTIFIER_CONTRACT_DRAFTED,
    NOTIFIER_REVIEW_OVERDUE,
    NOTIFIER_REVIEW_SENT,
    NOTIFIER_REVIEW_ESCALATED,
    NOTIFIER_WITHDRAWAL_REFUSED,
    *(department_queue(d) for d in DEFAULT_DEPARTMENTS),
)


class TopologyMissing(RuntimeError):
    """An exchange or dead-letter queue the provisioning step should have declared."""


async def _exists(channel: aio_pika.abc.AbstractChannel, what: str, check: Any) -> None:
    try:
        await check
    except aio_pika.exceptions.ChannelClosed as exc:
        raise TopologyMissing(
            f"{what} does not exist on the broker (or this user may not see it): run "
            "`orderflow-bus provision` with administrator credentials first"
        ) from exc


async def check_exchanges(connection: aio_pika.abc.AbstractConnection) -> None:
    """Passively: a service's user may use the exchanges, not declare them."""
    for name in EXCHANGE_TYPES:
        # a failed passive declaration closes the channel: one channel per check
        async with connection.channel() as channel:
            await _exists(channel, f"exchange {name}", channel.get_exchange(name, ensure=True))


async def declare_queue(
    channel: aio_pika.abc.AbstractChannel, spec: QueueSpec, *, with_dlq: bool = True
) -> None:
    """Declare a queue and its bindings; its dead-letter queue too when `with_dlq` (else
    it must exist already: binding it needs read on the DLX, which few users have)."""
    if with_dlq:
        dlq = await channel.declare_queue(
            spec.dlq, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(DLX, routing_key=spec.name)
    else:
        await _exists(channel, f"queue {spec.dlq}", channel.declare_queue(spec.dlq, passive=True))
    queue = await channel.declare_queue(
        spec.name, durable=True, arguments=queue_arguments(spec.name)
    )
    for key in spec.routing_keys:
        await queue.bind(spec.exchange, routing_key=key)


async def declare_own(
    connection: aio_pika.abc.AbstractConnection,
    queues: Iterable[QueueSpec],
    *,
    with_dlqs: bool = False,
) -> None:
    """What a service does at start: the exchanges must exist; its own queues it declares."""
    await check_exchanges(connection)
    async with connection.channel() as channel:
        seen: set[str] = set()
        for spec in queues:
            if spec.name not in seen:
                seen.add(spec.name)
                await declare_queue(channel, spec, with_dlq=with_dlqs)


async def declare_exchanges(channel: aio_pika.abc.AbstractChannel) -> None:
    for name, kind in EXCHANGE_TYPES.items():
        await channel.declare_exchange(name, aio_pika.ExchangeType(kind.value), durable=True)


async def declare(channel: aio_pika.abc.AbstractChannel, queues: Iterable[QueueSpec] = ()) -> None:
    """Declare everything (administrator's rights): the exchanges, every service queue, and
    `queues` besides. For tools and tests; services use `declare_own`."""
    await declare_exchanges(channel)
    seen: set[QueueSpec] = set()
    for spec in (*SERVICE_QUEUES, *queues):
        if spec not in seen:
            seen.add(spec)
            await declare_queue(channel, spec)
