"""A department's verdict: recorded, and the round moved on when it completes a stage."""

from __future__ import annotations

from datetime import datetime

import structlog

from orderflow.db import Connection
from orderflow.messages import OrderChangesRequested, VerdictGiven, VerdictRecorded

from .. import domain
from ..adapters import repository
from ..store import LoadedRound, Store
from .common import Rules, Sender, authorize, refused, round_of
from .rounds import approve_order, cancel_requests, request_reviews

log = structlog.get_logger(__name__)


async def on_verdict(
    conn: Connection | Store,
    verdict: VerdictGiven,
    *,
    sender: Sender,
    now: datetime,
    rules: Rules,
) -> domain.VerdictOutcome:
    """Record a department's verdict and, when it completes a stage, move the round on."""
    store = repository.store_of(conn)
    authorize(rules, sender, department=verdict.department, kind="verdict")
    loaded = await round_of(store, verdict.review_id)
    with refused():
        step = domain.apply_verdict(loaded.round, verdict)
    verdict_id = await store.record_verdict(
        verdict=verdict,
        message_id=sender.message_id,
        round_id=loaded.round.id,
        outcome=step.outcome,
        received_at=now,
        user_id=sender.user_id,
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

    await store.mark_answered(
        review_id=step.answered.review_id,
        status=step.answered.status,
        verdict_id=verdict_id,
        at=now,
    )
    await store.publish_event(_recorded(verdict, at=now), correlation_id=verdict.order_id)
    if step.cancelled:
        await cancel_requests(
            store,
            step.round,
            step.cancelled,
            reason=f"the round was decided: {verdict.department} asked for changes",
            at=now,
        )
    await _move_on(store, loaded, step, at=now, log=bound)
    return step.outcome


def _recorded(verdict: VerdictGiven, *, at: datetime) -> VerdictRecorded:
    return VerdictRecorded(
        review_id=verdict.review_id,
        order_id=verdict.order_id,
        revision=verdict.revision,
        department=verdict.department,
        decision=verdict.decision,
        reviewer=verdict.reviewer,
        comment=verdict.comment,
        annotations=verdict.annotations,
        recorded_at=at,
        on_behalf_of=verdict.on_behalf_of,
    )


async def _move_on(
    store: Store,
    loaded: LoadedRound,
    step: domain.Step,
    *,
    at: datetime,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """What a counted verdict does to its round: the next stage asked, the order approved,
    or the changes requested; or nothing yet, while its stage waits for others."""
    round_ = step.round
    if step.opened:
        await store.update_round(round_=round_)
        await request_reviews(
            store, submitted=loaded.submitted, round_=round_, requests=step.opened, at=at
        )
        log.info("stage opened", stage=round_.current_stage)
    elif step.decision == domain.RoundStatus.APPROVED:
        await approve_order(store, submitted=loaded.submitted, round_=round_, at=at)
        log.info("order approved")
    elif step.decision == domain.RoundStatus.CHANGES_REQUESTED:
        await store.update_round(
            round_=round_,
            decided_at=at,
            decision={
                "feedback": [f.model_dump(mode="json") for f in step.feedback],
                "annotations": [a.model_dump(mode="json") for a in step.annotations],
            },
        )
        await store.publish_event(
            OrderChangesRequested(
                order_id=round_.order_id,
                revision=round_.revision,
                salesperson=loaded.submitted.salesperson,
                feedback=list(step.feedback),
                annotations=step.annotations,
                decided_at=at,
            ),
            correlation_id=round_.order_id,
        )
        log.info("changes requested", annotations=len(step.annotations))
