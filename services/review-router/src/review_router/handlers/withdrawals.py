"""A withdrawal, decided against the round's decision: the round closed and its reviews
stopped, or the withdrawal refused because the approval came first."""

from __future__ import annotations

from datetime import datetime

import structlog

from orderflow.db import Connection
from orderflow.messages import OrderWithdrawalRefused, OrderWithdrawalRequested, OrderWithdrawn

from .. import domain
from ..adapters import repository
from ..store import Store
from .rounds import close_round, stop_lingering

log = structlog.get_logger(__name__)


async def on_withdrawal_requested(
    conn: Connection | Store, event: OrderWithdrawalRequested, *, now: datetime
) -> domain.WithdrawalOutcome:
    """Decide a withdrawal against the round's decision, under the order's lock and the
    round rows' locks (the ones a verdict takes): either the withdrawal wins (the round is
    closed, the departments still reviewing are told to stop, `order.withdrawn`) or the
    approval came first (`order.withdrawal_refused`). No approval follows a withdrawal."""
    store = repository.store_of(conn)
    await store.lock_order(order_id=event.order_id)
    existing = await store.rounds_of_order(order_id=event.order_id)
    decided = domain.decide_withdrawal(existing)
    if decided.outcome is domain.WithdrawalOutcome.REFUSED:
        await _refuse_withdrawal(store, event, decided, now=now)
        return decided.outcome
    reason = "order withdrawn" + (f": {event.reason}" if event.reason else "")
    for round_ in decided.close:
        await close_round(store, round_, status=domain.RoundStatus.WITHDRAWN, reason=reason, at=now)
    await stop_lingering(store, existing, reason=reason, at=now)
    await _record_withdrawal(store, event, decided, now=now)
    await store.publish_event(
        OrderWithdrawn(
            order_id=event.order_id,
            revision=event.revision,
            reason=event.reason,
            withdrawn_at=now,
            requested_by=event.requested_by,
            salesperson=event.salesperson,
        ),
        correlation_id=event.order_id,
    )
    log.info(
        "withdrawal won",
        order_id=str(event.order_id),
        revision=event.revision,
        closed=[r.revision for r in decided.close],
    )
    return decided.outcome


async def _record_withdrawal(
    store: Store,
    event: OrderWithdrawalRequested,
    decided: domain.WithdrawalDecision,
    *,
    now: datetime,
) -> None:
    """Keep the decision: a withdrawn one is the tombstone a later submission meets."""
    await store.record_withdrawal(
        order_id=event.order_id,
        revision=event.revision,
        outcome=decided.outcome,
        reason=event.reason,
        requested_by=event.requested_by,
        requested_at=event.requested_at,
        decided_at=now,
        round_id=decided.decided.id if decided.decided else None,
        refusal=decided.reason,
    )


async def _refuse_withdrawal(
    store: Store,
    event: OrderWithdrawalRequested,
    decided: domain.WithdrawalDecision,
    *,
    now: datetime,
) -> None:
    assert decided.decided is not None
    assert decided.reason is not None
    round_ = decided.decided
    await _record_withdrawal(store, event, decided, now=now)
    await store.publish_event(
        OrderWithdrawalRefused(
            order_id=event.order_id,
            revision=event.revision,
            decided_revision=round_.revision,
            decision=round_.status.value,
            reason=decided.reason,
            withdrawal_reason=event.reason,
            requested_by=event.requested_by,
            requested_at=event.requested_at,
            refused_at=now,
            salesperson=event.salesperson,
        ),
        correlation_id=event.order_id,
    )
    log.info(
        "withdrawal refused: the approval came first",
        order_id=str(event.order_id),
        revision=event.revision,
        approved_revision=round_.revision,
    )
