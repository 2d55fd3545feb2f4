"""A review's deadline passed: the reminder, then the escalation to the department's
contact, while the review is still pending."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from orderflow.db import Connection
from orderflow.messages import ReviewEscalated, ReviewOverdue

from .. import domain
from ..adapters import repository
from ..store import Store, Timer
from .common import round_of

log = structlog.get_logger(__name__)


async def on_timer(conn: Connection | Store, timer: Timer, *, now: datetime) -> str:
    """A review's deadline passed: remind (`review.overdue`), and later escalate to the
    department's contact (`review.escalated`), while it is still pending. Returns what was
    done."""
    store = repository.store_of(conn)
    loaded = await round_of(store, timer.review_id)
    request = loaded.round.request(timer.review_id)
    if request is None or request.status != domain.RequestStatus.PENDING:
        return f"skipped: review {request.status.value if request else 'missing'}"
    if timer.kind == "overdue":
        await _overdue(store, loaded.round, request, timer, now=now)
        return "sent"
    return await _escalate(store, loaded.round, request, timer, now=now)


async def _overdue(
    store: Store, round_: domain.Round, request: domain.Request, timer: Timer, *, now: datetime
) -> None:
    """The reminder, and the escalation timer when the department has a contact."""
    await store.publish_event(
        ReviewOverdue(
            review_id=request.review_id,
            order_id=round_.order_id,
            revision=round_.revision,
            department=request.department,
            due_at=timer.due_at,
        ),
        correlation_id=round_.order_id,
    )
    deadline = request.deadline
    if deadline and deadline.escalate_after_hours and deadline.escalate_to:
        await store.schedule(
            review_id=request.review_id,
            kind="escalate",
            due_at=timer.due_at,
            fire_at=now + timedelta(hours=deadline.escalate_after_hours),
        )
    log.info(
        "review overdue",
        order_id=str(round_.order_id),
        department=request.department,
        review_id=str(request.review_id),
    )


async def _escalate(
    store: Store, round_: domain.Round, request: domain.Request, timer: Timer, *, now: datetime
) -> str:
    contact = request.deadline.escalate_to if request.deadline else None
    if not contact:
        return "skipped: no contact to escalate to"
    await store.publish_event(
        ReviewEscalated(
            review_id=request.review_id,
            order_id=round_.order_id,
            revision=round_.revision,
            department=request.department,
            due_at=timer.due_at,
            escalate_to=contact,
            escalated_at=now,
        ),
        correlation_id=round_.order_id,
    )
    log.warning(
        "review escalated",
        order_id=str(round_.order_id),
        department=request.department,
        review_id=str(request.review_id),
        escalate_to=contact,
    )
    return "sent"
