"""Bus subscribers: parse, then call a handler inside the inbox transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream.rabbit.annotations import RabbitMessage

from orderflow import topology
from orderflow.consumer import apply_once
from orderflow.db import Connection
from orderflow.messages import (
    ContractDrafted,
    NotificationDelivered,
    NotificationFailed,
    OrderApproved,
    OrderChangesRequested,
    OrderWithdrawalRefused,
    ReviewEscalated,
    ReviewOverdue,
    ReviewSent,
)
from orderflow.service import ServiceRuntime

from .. import handlers

EVENTS = topology.exchange(topology.EVENTS)

QUEUES = (
    topology.NOTIFIER_CHANGES_REQUESTED,
    topology.NOTIFIER_APPROVED,
    topology.NOTIFIER_CONTRACT_DRAFTED,
    topology.NOTIFIER_REVIEW_SENT,
    topology.NOTIFIER_REVIEW_OVERDUE,
    topology.NOTIFIER_REVIEW_ESCALATED,
    topology.NOTIFIER_WITHDRAWAL_REFUSED,
)


def register(runtime: ServiceRuntime, deps: handlers.Notifying) -> None:
    broker = runtime.broker

    async def once(
        msg: RabbitMessage,
        consumer: str,
        handle: Callable[[Connection, str], Awaitable[None]],
    ) -> None:
        event_id = str(msg.raw_message.message_id)

        async def effect(conn: Connection) -> None:
            await handle(conn, event_id)

        await apply_once(runtime.pool, msg, consumer=consumer, effect=effect)

    @runtime.subscriber(topology.NOTIFIER_CHANGES_REQUESTED)
    async def order_changes_requested(event: OrderChangesRequested, msg: RabbitMessage) -> None:
        """Tell the salesperson what every department asked to change."""
        await once(
            msg,
            "notifier.changes-requested",
            lambda conn, eid: handlers.on_changes_requested(conn, event, event_id=eid, deps=deps),
        )

    @runtime.subscriber(topology.NOTIFIER_APPROVED)
    async def order_approved(event: OrderApproved, msg: RabbitMessage) -> None:
        """Tell the salesperson the order passed review."""
        await once(
            msg,
            "notifier.approved",
            lambda conn, eid: handlers.on_approved(conn, event, event_id=eid, deps=deps),
        )

    @runtime.subscriber(topology.NOTIFIER_CONTRACT_DRAFTED)
    async def contract_drafted(event: ContractDrafted, msg: RabbitMessage) -> None:
        """Tell the salesperson the contract is ready."""
        await once(
            msg,
            "notifier.contract-drafted",
            lambda conn, eid: handlers.on_contract_drafted(conn, event, event_id=eid, deps=deps),
        )

    @runtime.subscriber(topology.NOTIFIER_REVIEW_SENT)
    async def review_sent(event: ReviewSent, msg: RabbitMessage) -> None:
        """Tell the department's contacts that a review was sent to them."""
        await once(
            msg,
            "notifier.review-sent",
            lambda conn, eid: handlers.on_review_sent(conn, event, event_id=eid, deps=deps),
        )

    @runtime.subscriber(topology.NOTIFIER_REVIEW_OVERDUE)
    async def review_overdue(event: ReviewOverdue, msg: RabbitMessage) -> None:
        """Remind the department's contacts that a review is overdue."""
        await once(
            msg,
            "notifier.review-overdue",
            lambda conn, eid: handlers.on_review_overdue(conn, event, event_id=eid, deps=deps),
        )

    @runtime.subscriber(topology.NOTIFIER_REVIEW_ESCALATED)
    async def review_escalated(event: ReviewEscalated, msg: RabbitMessage) -> None:
        """Tell the department's escalation contacts (and the policy's) a review is late."""
        await once(
            msg,
            "notifier.review-escalated",
            lambda conn, eid: handlers.on_review_escalated(conn, event, event_id=eid, deps=deps),
        )

    @runtime.subscriber(topology.NOTIFIER_WITHDRAWAL_REFUSED)
    async def order_withdrawal_refused(event: OrderWithdrawalRefused, msg: RabbitMessage) -> None:
        """Tell the salesperson their withdrawal was refused: the order was approved first."""
        await once(
            msg,
            "notifier.withdrawal-refused",
            lambda conn, eid: handlers.on_withdrawal_refused(conn, event, event_id=eid, deps=deps),
        )

    # documentation of what the outbox publishes (AsyncAPI); publishing goes through the outbox
    documented: list[tuple[Any, str]] = [
        (NotificationDelivered, "A notification reached its recipient on a channel."),
        (NotificationFailed, "A notification could not be delivered after its last attempt."),
    ]
    for model, description in documented:
        broker.publisher(
            "",
            EVENTS,
            routing_key=model.message_type,
            schema=model,
            title=model.message_type,
            description=description,
            include_in_schema=True,
        )
