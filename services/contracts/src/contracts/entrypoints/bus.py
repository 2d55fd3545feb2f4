"""Bus subscribers: parse, then call a handler inside the inbox transaction."""

from __future__ import annotations

from faststream.rabbit.annotations import RabbitMessage

from orderflow import busaccess, topology
from orderflow.consumer import apply_once
from orderflow.db import Connection
from orderflow.messages import (
    ContractDrafted,
    ContractSent,
    ContractSigned,
    ContractVoided,
    Message,
    OrderApproved,
)
from orderflow.service import ServiceRuntime

from .. import handlers
from ..settings import Settings

EVENTS = topology.exchange(topology.EVENTS)
# The queue consumed (and declared) here; the provisioning step declares every other, so
# `contract.drafted` is routable even before its consumers are deployed.
QUEUES = busaccess.OWN_QUEUES["contracts"]
CONSUMER = "contracts.order-approved"


#: What the outbox publishes, for the AsyncAPI document.
PUBLISHED: tuple[tuple[type[Message], str], ...] = (
    (ContractDrafted, "A contract was drafted for an approved revision; its PDF is stored."),
    (ContractSent, "The drafted contract went to the customer for signature."),
    (ContractSigned, "The customer's signed copy was uploaded; its SHA-256 is recorded."),
    (ContractVoided, "The contract will not be signed; the reason says why."),
)


def register(runtime: ServiceRuntime, renderer: handlers.Renderer) -> None:
    broker = runtime.broker
    settings = runtime.settings
    assert isinstance(settings, Settings)
    drafting = handlers.Drafting(
        seller=settings.seller,
        number_pattern=settings.contract_number_pattern,
        timezone=settings.timezone,
        renderer=renderer,
    )

    @runtime.subscriber(topology.CONTRACTS_APPROVED)
    async def order_approved(event: OrderApproved, msg: RabbitMessage) -> None:
        """Draft the contract of the approved revision."""

        async def effect(conn: Connection) -> None:
            await handlers.on_order_approved(
                conn, event, drafting=drafting, delivery=handlers.Delivery.of(msg.raw_message)
            )

        await apply_once(runtime.pool, msg, consumer=CONSUMER, effect=effect)

    # documentation of what the outbox publishes (AsyncAPI); publishing goes through the outbox
    for message, description in PUBLISHED:
        broker.publisher(
            "",
            EVENTS,
            routing_key=message.message_type,
            schema=message,
            title=message.message_type,
            description=description,
            include_in_schema=True,
        )
