"""What happens to a round, whichever message moved it: review requests sent, pending
reviews cancelled, a round closed, an order approved."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import structlog

from orderflow.messages import OrderApproved, ReviewCancelled, ReviewRequested, ReviewSent

from .. import domain
from .. import policy as policies
from ..store import Store, Submitted

log = structlog.get_logger(__name__)


async def request_reviews(
    store: Store,
    *,
    submitted: Submitted,
    round_: domain.Round,
    requests: Iterable[domain.Request],
    at: datetime,
) -> None:
    """Send review requests (with their due time, and a reminder timer at that moment), and
    announce each one sent with `review.sent`: the one event that says a department was
    asked (the round's plan may name departments that are never asked)."""
    requests = list(requests)
    due = await store.mark_requested(review_ids=[r.review_id for r in requests], at=at)
    for request in requests:
        await store.send_to_department(
            ReviewRequested(
                review_id=request.review_id,
                order_id=round_.order_id,
                revision=round_.revision,
                department=request.department,
                stage=request.stage,
                order=submitted.order,
                totals=submitted.totals,
                requested_at=at,
                due_at=due.get(request.review_id),
                attachments=submitted.attachments,
                previous_revision=submitted.previous_revision,
                changes=submitted.changes,
            ),
            department=request.department,
            correlation_id=round_.order_id,
        )
        await store.publish_event(
            ReviewSent(
                review_id=request.review_id,
                round_id=round_.id,
                order_id=round_.order_id,
                revision=round_.revision,
                department=request.department,
                stage=request.stage,
                sent_at=at,
                due_at=due.get(request.review_id),
            ),
            correlation_id=round_.order_id,
        )


async def cancel_requests(
    store: Store,
    round_: domain.Round,
    requests: Iterable[domain.Request],
    *,
    reason: str,
    at: datetime,
) -> None:
    """Tell each department still reviewing to stop."""
    requests = list(requests)
    await store.mark_cancelled(review_ids=[r.review_id for r in requests], at=at)
    for request in requests:
        await store.send_to_department(
            ReviewCancelled(
                review_id=request.review_id,
                order_id=round_.order_id,
                revision=round_.revision,
                department=request.department,
                reason=reason,
                cancelled_at=at,
            ),
            department=request.department,
            correlation_id=round_.order_id,
        )


async def close_round(
    store: Store,
    round_: domain.Round,
    *,
    status: domain.RoundStatus,
    reason: str,
    at: datetime,
) -> None:
    """Close an undecided round and tell each department still reviewing to stop."""
    closed, cancelled = domain.close(round_, status)
    await store.update_round(round_=closed, decided_at=at, decision={"reason": reason})
    await cancel_requests(store, round_, cancelled, reason=reason, at=at)
    log.info(
        "review round closed",
        order_id=str(round_.order_id),
        revision=round_.revision,
        status=status.value,
        cancelled=[r.department for r in cancelled],
    )


async def stop_lingering(
    store: Store, existing: Iterable[domain.Round], *, reason: str, at: datetime
) -> None:
    for round_ in domain.lingering(list(existing)):
        _, cancelled = domain.cancel_pending(round_)
        await cancel_requests(store, round_, cancelled, reason=reason, at=at)


async def approve_order(
    store: Store, *, submitted: Submitted, round_: domain.Round, at: datetime
) -> None:
    approvals = list(round_.feedback())
    await store.update_round(
        round_=round_,
        decided_at=at,
        decision={"feedback": [f.model_dump(mode="json") for f in approvals]},
    )
    await store.remember_customer(
        key=policies.customer_key(submitted.order), order_id=round_.order_id, at=at
    )
    await store.publish_event(
        OrderApproved(
            order_id=round_.order_id,
            revision=round_.revision,
            order=submitted.order,
            totals=submitted.totals,
            approvals=approvals,
            approved_at=at,
            attachments=submitted.attachments,
        ),
        correlation_id=round_.order_id,
    )
