"""One function per event: apply the review rules and write the messages they cause, all in
the caller's transaction (the inbox claim and the outbox commit with the state)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import structlog

from orderflow import outbox, topology
from orderflow.consumer import PermanentError
from orderflow.db import Connection
from orderflow.messages import (
    OrderApproved,
    OrderChangesRequested,
    OrderDocument,
    OrderSubmitted,
    OrderWithdrawn,
    Problem,
    ReviewCancelled,
    ReviewRequested,
    ReviewRoundOpened,
    Totals,
    VerdictGiven,
    VerdictRecorded,
)

from . import domain
from .adapters import repository

log = structlog.get_logger(__name__)


async def _request_reviews(
    conn: Connection,
    *,
    round_: domain.Round,
    requests: Iterable[domain.Request],
    order: OrderDocument,
    totals: Totals,
    at: datetime,
) -> None:
    for request in requests:
        await outbox.enqueue(
            conn,
            ReviewRequested(
                review_id=request.review_id,
                order_id=round_.order_id,
                revision=round_.revision,
                department=request.department,
                stage=request.stage,
                order=order,
                totals=totals,
                requested_at=at,
            ),
            exchange=topology.REVIEWS,
            routing_key=request.department,
            correlation_id=round_.order_id,
        )


async def _close(
    conn: Connection,
    round_: domain.Round,
    *,
    status: domain.RoundStatus,
    reason: str,
    at: datetime,
) -> None:
    """Close an undecided round and tell each department still reviewing to stop."""
    closed, cancelled = domain.close(round_, status)
    await repository.update_round(conn, round_=closed, decided_at=at, decision={"reason": reason})
    await repository.mark_cancelled(conn, review_ids=[r.review_id for r in cancelled], at=at)
    for request in cancelled:
        await outbox.enqueue(
            conn,
            ReviewCancelled(
                review_id=request.review_id,
                order_id=round_.order_id,
                revision=round_.revision,
                department=request.department,
                reason=reason,
                cancelled_at=at,
            ),
            exchange=topology.REVIEWS,
            routing_key=request.department,
            correlation_id=round_.order_id,
        )
    log.info(
        "review round closed",
        order_id=str(round_.order_id),
        revision=round_.revision,
        status=status.value,
        cancelled=[r.department for r in cancelled],
    )


async def on_order_submitted(conn: Connection, event: OrderSubmitted, *, now: datetime) -> None:
    """Open a round for the revision (replacing an older open one) and ask its first stage."""
    await repository.lock_order(conn, order_id=event.order_id)
    existing = await repository.rounds_of_order(conn, order_id=event.order_id)
    submission = domain.submission(existing, event.revision)
    if not submission.opens:
        log.info(
            "submission opens no round",
            order_id=str(event.order_id),
            revision=event.revision,
            reason=submission.ignored_because,
        )
        return
    for old in submission.supersede:
        await _close(
            conn,
            old,
            status=domain.RoundStatus.SUPERSEDED,
            reason=f"superseded by revision {event.revision}",
            at=now,
        )

    plan = domain.review_plan(event.order)
    round_ = domain.open_round(
        round_id=uuid.uuid4(),
        order_id=event.order_id,
        revision=event.revision,
        review_plan=plan,
        new_review_id=uuid.uuid4,
    )
    await repository.insert_round(
        conn, round_=round_, plan=plan, order=event.order, totals=event.totals, opened_at=now
    )
    await outbox.enqueue(
        conn,
        ReviewRoundOpened(
            round_id=round_.id,
            order_id=round_.order_id,
            revision=round_.revision,
            departments=plan.departments,
            opened_at=now,
        ),
        exchange=topology.EVENTS,
        correlation_id=round_.order_id,
    )
    await _request_reviews(
        conn,
        round_=round_,
        requests=round_.pending(),
        order=event.order,
        totals=event.totals,
        at=now,
    )


async def on_order_withdrawn(conn: Connection, event: OrderWithdrawn, *, now: datetime) -> None:
    """Close the order's open round; the departments still reviewing are told to stop."""
    await repository.lock_order(conn, order_id=event.order_id)
    existing = await repository.rounds_of_order(conn, order_id=event.order_id)
    reason = "order withdrawn" + (f": {event.reason}" if event.reason else "")
    for round_ in domain.withdrawal(existing, event.revision):
        await _close(conn, round_, status=domain.RoundStatus.WITHDRAWN, reason=reason, at=now)


async def on_verdict(
    conn: Connection, verdict: VerdictGiven, *, message_id: str, now: datetime
) -> domain.VerdictOutcome:
    """Record a department's verdict and, when it completes a stage, move the round on."""
    round_id = await repository.round_of_review(conn, review_id=verdict.review_id)
    if round_id is None:
        raise PermanentError(
            f"unknown review_id {verdict.review_id}",
            [Problem(pointer="/review_id", detail="no review was requested with this id")],
        )
    loaded = await repository.lock_round(conn, round_id=round_id)
    try:
        step = domain.apply_verdict(loaded.round, verdict)
    except domain.VerdictMismatch as exc:
        raise PermanentError(str(exc), exc.problems) from exc

    verdict_id = await repository.record_verdict(
        conn,
        verdict=verdict,
        message_id=message_id,
        round_id=round_id,
        outcome=step.outcome,
        received_at=now,
    )
    bound = log.bind(
        order_id=str(verdict.order_id),
        revision=verdict.revision,
        department=verdict.department,
        review_id=str(verdict.review_id),
        outcome=step.outcome.value,
    )
    if step.answered is None:
        # kept for the record only: nothing else happens, not even `review.verdict_recorded`,
        # which tells readers of the events that a verdict counts
        bound.info("verdict changes nothing")
        return step.outcome

    await repository.mark_answered(
        conn,
        review_id=step.answered.review_id,
        status=step.answered.status,
        verdict_id=verdict_id,
        at=now,
    )
    order_id = verdict.order_id
    await outbox.enqueue(
        conn,
        VerdictRecorded(
            review_id=verdict.review_id,
            order_id=order_id,
            revision=verdict.revision,
            department=verdict.department,
            decision=verdict.decision,
            reviewer=verdict.reviewer,
            comment=verdict.comment,
            annotations=verdict.annotations,
            recorded_at=now,
        ),
        exchange=topology.EVENTS,
        correlation_id=order_id,
    )

    if step.opened:
        await repository.update_round(conn, round_=step.round)
        await repository.mark_requested(conn, review_ids=[r.review_id for r in step.opened], at=now)
        await _request_reviews(
            conn,
            round_=step.round,
            requests=step.opened,
            order=loaded.order,
            totals=loaded.totals,
            at=now,
        )
        bound.info("stage opened", stage=step.round.current_stage)
    elif step.decision == domain.RoundStatus.APPROVED:
        await repository.update_round(
            conn,
            round_=step.round,
            decided_at=now,
            decision={"feedback": [f.model_dump(mode="json") for f in step.feedback]},
        )
        await outbox.enqueue(
            conn,
            OrderApproved(
                order_id=order_id,
                revision=verdict.revision,
                order=loaded.order,
                totals=loaded.totals,
                approvals=list(step.feedback),
                approved_at=now,
            ),
            exchange=topology.EVENTS,
            correlation_id=order_id,
        )
        bound.info("order approved")
    elif step.decision == domain.RoundStatus.CHANGES_REQUESTED:
        await repository.update_round(
            conn,
            round_=step.round,
            decided_at=now,
            decision={
                "feedback": [f.model_dump(mode="json") for f in step.feedback],
                "annotations": [a.model_dump(mode="json") for a in step.annotations],
            },
        )
        await outbox.enqueue(
            conn,
            OrderChangesRequested(
                order_id=order_id,
                revision=verdict.revision,
                salesperson=loaded.order.salesperson,
                feedback=list(step.feedback),
                annotations=step.annotations,
                decided_at=now,
            ),
            exchange=topology.EVENTS,
            correlation_id=order_id,
        )
        bound.info("changes requested", annotations=len(step.annotations))
    return step.outcome
