"""One function per event, in the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

import structlog

from orderflow import outbox, topology
from orderflow.consumer import PermanentError
from orderflow.db import Connection
from orderflow.messages import ContractDrafted, OrderApproved

from . import domain
from .adapters import repository

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Drafting:
    """What every contract takes from the service's settings."""

    seller: domain.Party
    number_pattern: str
    timezone: tzinfo


async def on_order_approved(
    conn: Connection, event: OrderApproved, *, drafting: Drafting
) -> uuid.UUID | None:
    """Draft the approved revision's contract; the new contract's id, None when there is
    nothing to draft."""
    bound = log.bind(order_id=str(event.order_id), revision=event.revision)
    await repository.lock_order(conn, order_id=event.order_id)
    drafted = await repository.revisions(conn, order_id=event.order_id)
    if event.revision in drafted:
        # the same approval again (a new message id for the same revision): one contract
        bound.info("contract already drafted for this revision")
        return None
    if drafted and max(drafted) > event.revision:
        # approvals arrived out of order; the later revision's contract is the one that counts
        bound.info("approval of an older revision ignored", newest=max(drafted))
        return None

    now = datetime.now(UTC)
    year = now.astimezone(drafting.timezone).year
    pattern = drafting.number_pattern
    seq = await repository.next_number(conn, key=domain.sequence_key(pattern, year=year))
    try:
        content = domain.draft(
            event,
            number=domain.format_number(pattern, year=year, seq=seq),
            seller=drafting.seller,
            drafted_at=now,
        )
    except domain.IncompleteOrder as exc:
        # raising rolls the transaction back, the number with it
        raise PermanentError(f"cannot draft a contract: {exc}", problems=exc.problems) from exc

    contract_id = uuid.uuid4()
    await repository.add(conn, contract_id=contract_id, content=content)
    superseded = await repository.supersede(
        conn, order_id=event.order_id, before_revision=event.revision, by=contract_id, at=now
    )
    await outbox.enqueue(
        conn,
        ContractDrafted(
            contract_id=contract_id,
            contract_number=content.number,
            order_id=event.order_id,
            revision=event.revision,
            salesperson=content.salesperson,
            customer_name=content.buyer.name,
            currency=content.currency,
            total=content.total,
            drafted_at=now,
        ),
        exchange=topology.EVENTS,
        correlation_id=event.order_id,
    )
    bound.info("contract drafted", contract_number=content.number, superseded=superseded)
    return contract_id
