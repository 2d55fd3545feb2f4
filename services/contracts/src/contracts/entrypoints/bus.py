"""Bus subscribers: each queue's handler, run by the runtime inside the inbox transaction."""

from __future__ import annotations

from orderflow import busaccess, topology
from orderflow.consumer import Delivery
from orderflow.db import Connection
from orderflow.messages import OrderApproved
from orderflow.service import ServiceRuntime

from .. import handlers
from ..settings import Settings

# The queue consumed (and declared) here; the provisioning step declares every other, so
# `contract.drafted` is routable even before its consumers are deployed.
QUEUES = busaccess.OWN_QUEUES["contracts"]


def register(runtime: ServiceRuntime, renderer: handlers.Renderer) -> None:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    drafting = handlers.Drafting(
        seller=settings.seller,
        number_pattern=settings.contract_number_pattern,
        timezone=settings.timezone,
        renderer=renderer,
    )

    async def order_approved(conn: Connection, event: OrderApproved, delivery: Delivery) -> None:
        """Number the contract of the approved revision; its document is typeset after."""
        await handlers.on_order_approved(
            conn, event, drafting=drafting, delivery=handlers.Delivery.of(delivery)
        )

    runtime.consume(topology.CONTRACTS_APPROVED, order_approved)
