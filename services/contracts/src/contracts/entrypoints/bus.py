"""Bus subscribers: parse, then call a handler inside the inbox transaction."""

from __future__ import annotations

from faststream.middlewares import AckPolicy
from faststream.rabbit.annotations import RabbitMessage

from orderflow import topology
from orderflow.consumer import apply_once
from orderflow.db import Connection
from orderflow.messages import ContractDrafted, OrderApproved
from orderflow.service import ServiceRuntime

from .. import handlers
from ..settings import Settings

EVENTS = topology.exchange(topology.EVENTS)
# The queue consumed here; the runtime declares every service queue besides, so that
# `contract.drafted` is routable even before its consumers are deployed.
QUEUES = (topology.CONTRACTS_APPROVED,)
CONSUMER = "contracts.order-approved"


def register(runtime: ServiceRuntime) -> None:
    broker = runtime.broker
    settings = runtime.settings
    assert isinstance(settings, Settings)
    drafting = handlers.Drafting(
        seller=settings.seller,
        number_pattern=settings.contract_number_pattern,
        timezone=settings.timezone,
    )

    @broker.subscriber(
        topology.CONTRACTS_APPROVED.rabbit_queue(),
        EVENTS,
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
    )
    async def order_approved(event: OrderApproved, msg: RabbitMessage) -> None:
        """Draft the contract of the approved revision."""

        async def effect(conn: Connection) -> None:
            await handlers.on_order_approved(conn, event, drafting=drafting)

        await apply_once(runtime.pool, msg, consumer=CONSUMER, effect=effect)

    # documentation of what the outbox publishes (AsyncAPI); publishing goes through the outbox
    broker.publisher(
        "",
        EVENTS,
        routing_key=ContractDrafted.message_type,
        schema=ContractDrafted,
        title="contract.drafted",
        description="A contract was drafted for an approved revision of an order.",
        include_in_schema=True,
    )
