"""Bus subscribers: parse, then call a handler inside the inbox transaction."""

from __future__ import annotations

from datetime import UTC, datetime

from faststream.middlewares import AckPolicy
from faststream.rabbit.annotations import RabbitMessage

from orderflow import topology
from orderflow.consumer import apply_once
from orderflow.db import Connection
from orderflow.messages import (
    OrderApproved,
    OrderChangesRequested,
    OrderSubmitted,
    OrderWithdrawn,
    ReviewCancelled,
    ReviewRequested,
    ReviewRoundOpened,
    VerdictGiven,
    VerdictRecorded,
)
from orderflow.service import ServiceRuntime

from .. import handlers

EVENTS = topology.exchange(topology.EVENTS)
REVIEWS = topology.exchange(topology.REVIEWS)
VERDICTS = topology.exchange(topology.VERDICTS)
VERDICT_QUEUE = topology.verdict_queue(topology.DEFAULT_DEPARTMENTS)
# the department queues are declared here too, so a review request is routable (and waits
# for its department) even before that department's first reviewer connects
QUEUES = (
    topology.ROUTER_SUBMITTED,
    topology.ROUTER_WITHDRAWN,
    VERDICT_QUEUE,
    *(topology.department_queue(d) for d in topology.DEFAULT_DEPARTMENTS),
)


def register(runtime: ServiceRuntime) -> None:
    broker = runtime.broker

    @broker.subscriber(
        topology.ROUTER_SUBMITTED.rabbit_queue(),
        EVENTS,
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
    )
    async def order_submitted(event: OrderSubmitted, msg: RabbitMessage) -> None:
        """Open a review round for the submitted revision and ask its first stage."""

        async def effect(conn: Connection) -> None:
            await handlers.on_order_submitted(conn, event, now=datetime.now(UTC))

        await apply_once(runtime.pool, msg, consumer="review-router.order-submitted", effect=effect)

    @broker.subscriber(
        topology.ROUTER_WITHDRAWN.rabbit_queue(),
        EVENTS,
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
    )
    async def order_withdrawn(event: OrderWithdrawn, msg: RabbitMessage) -> None:
        """Close the order's open round and cancel its pending reviews."""

        async def effect(conn: Connection) -> None:
            await handlers.on_order_withdrawn(conn, event, now=datetime.now(UTC))

        await apply_once(runtime.pool, msg, consumer="review-router.order-withdrawn", effect=effect)

    # every department's verdicts arrive on one queue (bound once per department at start)
    @broker.subscriber(
        VERDICT_QUEUE.rabbit_queue(),
        VERDICTS,
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
    )
    async def verdict_given(verdict: VerdictGiven, msg: RabbitMessage) -> None:
        """Record a department's verdict; open the next stage or decide the round."""

        async def effect(conn: Connection) -> None:
            await handlers.on_verdict(
                conn,
                verdict,
                message_id=str(msg.raw_message.message_id),
                now=datetime.now(UTC),
            )

        await apply_once(runtime.pool, msg, consumer="review-router.verdicts", effect=effect)

    _document_publishers(runtime)


def _document_publishers(runtime: ServiceRuntime) -> None:
    """What the outbox publishes, for AsyncAPI; publishing itself goes through the outbox."""
    broker = runtime.broker
    for department in topology.DEFAULT_DEPARTMENTS:
        broker.publisher(
            "",
            REVIEWS,
            routing_key=department,
            schema=ReviewRequested,
            title=f"review.requested:{department}",
            description=(
                f"Asks {department} to review a revision of an order; arrives on the queue "
                f"review.{department}. Answer with `review.verdict` on orderflow.verdicts."
            ),
            include_in_schema=True,
        )
        broker.publisher(
            "",
            REVIEWS,
            routing_key=department,
            schema=ReviewCancelled,
            title=f"review.cancelled:{department}",
            description=(
                f"Tells {department} a pending review is no longer needed (a newer revision "
                "was submitted, or the order was withdrawn)."
            ),
            include_in_schema=True,
        )
    events = (
        (ReviewRoundOpened, "A review round was opened for a submitted revision."),
        (VerdictRecorded, "A department's verdict counted towards its round."),
        (OrderApproved, "Every department of every stage approved the revision."),
        (
            OrderChangesRequested,
            "A department asked for changes: every department's feedback and every "
            "annotation of the round, for the salesperson.",
        ),
    )
    for model, description in events:
        broker.publisher(
            "",
            EVENTS,
            routing_key=model.message_type,
            schema=model,
            title=model.message_type,
            description=description,
            include_in_schema=True,
        )
