"""Bus subscribers: parse, then call a handler inside the inbox transaction."""

from __future__ import annotations

from faststream.middlewares import AckPolicy
from faststream.rabbit.annotations import RabbitMessage

from orderflow import topology
from orderflow.consumer import apply_once
from orderflow.db import Connection
from orderflow.messages import (
    ContractDrafted,
    NotificationDelivered,
    OrderApproved,
    OrderChangesRequested,
)
from orderflow.service import ServiceRuntime

from .. import handlers

EVENTS = topology.exchange(topology.EVENTS)
QUEUES = (
    topology.NOTIFIER_CHANGES_REQUESTED,
    topology.NOTIFIER_APPROVED,
    topology.NOTIFIER_CONTRACT_DRAFTED,
)


def register(runtime: ServiceRuntime) -> None:
    broker = runtime.broker
    console = runtime.settings.console_base_url

    @broker.subscriber(
        topology.NOTIFIER_CHANGES_REQUESTED.rabbit_queue(),
        EVENTS,
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
    )
    async def order_changes_requested(event: OrderChangesRequested, msg: RabbitMessage) -> None:
        """Tell the salesperson what every department asked to change."""

        async def effect(conn: Connection) -> None:
            await handlers.on_changes_requested(
                conn, event, event_id=str(msg.raw_message.message_id), console=console
            )

        await apply_once(runtime.pool, msg, consumer="notifier.changes-requested", effect=effect)

    @broker.subscriber(
        topology.NOTIFIER_APPROVED.rabbit_queue(),
        EVENTS,
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
    )
    async def order_approved(event: OrderApproved, msg: RabbitMessage) -> None:
        """Tell the salesperson the order passed review."""

        async def effect(conn: Connection) -> None:
            await handlers.on_approved(
                conn, event, event_id=str(msg.raw_message.message_id), console=console
            )

        await apply_once(runtime.pool, msg, consumer="notifier.approved", effect=effect)

    @broker.subscriber(
        topology.NOTIFIER_CONTRACT_DRAFTED.rabbit_queue(),
        EVENTS,
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
    )
    async def contract_drafted(event: ContractDrafted, msg: RabbitMessage) -> None:
        """Tell the salesperson the contract is ready."""

        async def effect(conn: Connection) -> None:
            await handlers.on_contract_drafted(
                conn, event, event_id=str(msg.raw_message.message_id), console=console
            )

        await apply_once(runtime.pool, msg, consumer="notifier.contract-drafted", effect=effect)

    # documentation of what the outbox publishes (AsyncAPI); publishing goes through the outbox
    broker.publisher(
        "",
        EVENTS,
        routing_key=NotificationDelivered.message_type,
        schema=NotificationDelivered,
        title="notification.delivered",
        description="A notification reached its recipient on a channel.",
        include_in_schema=True,
    )
