"""Bus subscribers: parse, then call a handler inside the inbox transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import structlog
from faststream.rabbit.annotations import RabbitMessage

from orderflow import busaccess, topology
from orderflow.consumer import PermanentError, apply_once
from orderflow.db import Connection
from orderflow.messages import (
    EVENTS,
    OrderSubmitted,
    OrderWithdrawalRequested,
    Problem,
    SubmitOrder,
    SubmitOrderReply,
)
from orderflow.service import ServiceRuntime

from .. import domain, handlers

log = structlog.get_logger(__name__)

COMMANDS_EXCHANGE = topology.exchange(topology.COMMANDS)
EVENTS_EXCHANGE = topology.exchange(topology.EVENTS)

# The queues consumed (and declared) here; the provisioning step declares every other, so
# `order.submitted` waits in the router's queue even before the router is first deployed.
QUEUES = busaccess.OWN_QUEUES["intake"]


def register(runtime: ServiceRuntime, *, today: Callable[[], date]) -> None:
    broker = runtime.broker

    @runtime.subscriber(topology.INTAKE_COMMANDS)
    async def submit_order(command: SubmitOrder, msg: RabbitMessage) -> None:
        """Create and submit an order sent by another system, or a new revision of one."""
        raw = msg.raw_message

        async def effect(conn: Connection) -> None:
            try:
                await handlers.on_submit_command(
                    conn,
                    command=command,
                    today=today(),
                    reply_to=raw.reply_to,
                    correlation_id=raw.correlation_id or raw.message_id,
                    user_id=raw.user_id,
                )
            except domain.SelfCheckFailed as exc:
                raise PermanentError(str(exc), problems=exc.problems) from exc
            except (handlers.OrderNotFound, domain.RuleViolation) as exc:
                raise PermanentError(
                    str(exc), problems=[Problem(pointer="/order_id", detail=str(exc))]
                ) from exc

        await apply_once(runtime.pool, msg, consumer="intake.commands", effect=effect)

    @runtime.subscriber(topology.INTAKE_PROJECTION)
    async def project_event(msg: RabbitMessage) -> None:
        """Keep the order read model and its timeline up to date with every event."""
        raw = msg.raw_message
        model = EVENTS.get(raw.type or "")
        if model is None:
            # events intake does not know yet (a newer service's) are not an error
            log.debug("event type not projected", message_type=raw.type)
            return
        event = model.model_validate_json(raw.body)

        async def effect(conn: Connection) -> None:
            await handlers.on_event(
                conn, event=event, message_id=str(raw.message_id), sent_at=raw.timestamp
            )

        await apply_once(runtime.pool, msg, consumer="intake.projection", effect=effect)

    # documentation of what the outbox publishes (AsyncAPI); publishing goes through the outbox
    broker.publisher(
        "",
        EVENTS_EXCHANGE,
        routing_key=OrderSubmitted.message_type,
        schema=OrderSubmitted,
        title="order.submitted",
        description=(
            "A revision passed the self-check and goes to review, with its files (references, "
            "never bytes) and what changed since the revision submitted before it."
        ),
        include_in_schema=True,
    )
    broker.publisher(
        "",
        EVENTS_EXCHANGE,
        routing_key=OrderWithdrawalRequested.message_type,
        schema=OrderWithdrawalRequested,
        title="order.withdrawal_requested",
        description=(
            "Someone asked to withdraw the order before approval. The review-router decides "
            "it against the round's decision and answers order.withdrawn or "
            "order.withdrawal_refused."
        ),
        include_in_schema=True,
    )
    broker.publisher(
        "reply_to",
        routing_key="reply_to",
        schema=SubmitOrderReply,
        title="order.submit.reply",
        description=(
            "The answer to an `order.submit` command with a `reply_to`, sent through the "
            "default exchange to that queue, with the command's correlation id: accepted "
            "with the order id, revision and status, or refused with every problem."
        ),
        include_in_schema=True,
    )
