"""A submitted revision: its round opened (replacing an older one), whose approval stands,
and the first stage asked."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

import structlog

from orderflow.db import Connection
from orderflow.messages import FieldChange, OrderSubmitted, ReviewRoundOpened

from .. import domain
from .. import policy as policies
from ..adapters import repository
from ..store import Store, Submitted
from .common import Rules
from .rounds import approve_order, close_round, request_reviews, stop_lingering

log = structlog.get_logger(__name__)


async def on_order_submitted(
    conn: Connection | Store, event: OrderSubmitted, *, now: datetime, rules: Rules
) -> None:
    """Open a round for the revision (replacing an older open one) and ask its first stage
    that needs somebody."""
    store = repository.store_of(conn)
    await store.lock_order(order_id=event.order_id)
    existing = await store.rounds_of_order(order_id=event.order_id)
    submission = domain.submission(existing, event.revision)
    if not submission.opens:
        log.info(
            "submission opens no round",
            order_id=str(event.order_id),
            revision=event.revision,
            reason=submission.ignored_because,
        )
        return
    withdrawn_at = await store.withdrawn_revision(order_id=event.order_id)
    if domain.withdrawn_before(event.revision, withdrawn_at):
        await _record_withdrawn_submission(store, event, now=now, rules=rules)
        return
    reason = f"superseded by revision {event.revision}"
    for old in submission.supersede:
        await close_round(store, old, status=domain.RoundStatus.SUPERSEDED, reason=reason, at=now)
    await stop_lingering(store, existing, reason=reason, at=now)

    known = await store.customer_known(key=policies.customer_key(event.order))
    planned = domain.review_plan(
        rules.policy,
        policies.OrderFacts(order=event.order, totals=event.totals, new_customer=not known),
    )
    changes, kept = await _since_previous(store, event, submission.previous, planned, rules)
    submitted = Submitted(
        order=event.order,
        totals=event.totals,
        attachments=event.attachments,
        previous_revision=event.previous_revision,
        changes=changes,
    )
    round_ = await _open_round(store, event, planned, submitted, kept=kept, now=now)
    if round_.status == domain.RoundStatus.APPROVED:
        # nothing a department owns changed and each of them approved the revision before
        await approve_order(store, submitted=submitted, round_=round_, at=now)
        log.info("order approved: every approval kept", order_id=str(event.order_id))
        return
    await request_reviews(
        store, submitted=submitted, round_=round_, requests=round_.pending(), at=now
    )


async def _since_previous(
    store: Store,
    event: OrderSubmitted,
    previous: domain.Round | None,
    planned: domain.PlannedRound,
    rules: Rules,
) -> tuple[list[FieldChange], dict[str, domain.Kept]]:
    """What changed since the previous revision, and whose approval of it stands. The
    changes are intake's (`order.submitted`'s `changes`, which the departments get as they
    are); a revision announced without any is compared here with the document the previous
    round stored, fields only."""
    changes = list(event.changes)
    if previous is None:
        return changes, {}
    if not changes:
        before = await store.order_of_round(round_id=previous.id)
        changes = domain.changes_between(before, event.order)
    kept = domain.kept_approvals(
        previous=previous,
        plan=planned.plan,
        policy=rules.policy,
        changed=[c.pointer for c in changes],
    )
    return changes, kept


async def _open_round(
    store: Store,
    event: OrderSubmitted,
    planned: domain.PlannedRound,
    submitted: Submitted,
    *,
    kept: Mapping[str, domain.Kept],
    now: datetime,
) -> domain.Round:
    """Store the revision's new round (`review.round_opened`); nobody is asked yet."""
    round_ = domain.open_round(
        round_id=uuid.uuid4(),
        order_id=event.order_id,
        revision=event.revision,
        review_plan=planned.plan,
        new_review_id=uuid.uuid4,
        deadlines=planned.deadlines,
        kept=kept,
    )
    await store.insert_round(
        round_=round_,
        plan=planned.plan,
        submitted=submitted,
        opened_at=now,
        policy_version=planned.policy_version,
    )
    await store.publish_event(
        ReviewRoundOpened(
            round_id=round_.id,
            order_id=round_.order_id,
            revision=round_.revision,
            departments=planned.plan.departments,
            opened_at=now,
            policy_version=planned.policy_version,
        ),
        correlation_id=round_.order_id,
    )
    log.info(
        "review round opened",
        order_id=str(event.order_id),
        revision=event.revision,
        policy_version=planned.policy_version,
        departments=planned.plan.departments,
        kept=sorted(kept),
    )
    return round_


async def _record_withdrawn_submission(
    store: Store, event: OrderSubmitted, *, now: datetime, rules: Rules
) -> None:
    """A submission that arrives after its order was withdrawn (the two travel in separate
    queues): its round is recorded, closed as withdrawn from the start; nobody is asked."""
    planned = domain.review_plan(
        rules.policy,
        policies.OrderFacts(order=event.order, totals=event.totals, new_customer=False),
    )
    opened = domain.open_round(
        round_id=uuid.uuid4(),
        order_id=event.order_id,
        revision=event.revision,
        review_plan=planned.plan,
        new_review_id=uuid.uuid4,
        deadlines=planned.deadlines,
    )
    # its requests are stored unsent; none is ever sent
    closed = replace(opened, status=domain.RoundStatus.WITHDRAWN)
    await store.insert_round(
        round_=closed,
        plan=planned.plan,
        submitted=Submitted(
            order=event.order,
            totals=event.totals,
            attachments=event.attachments,
            previous_revision=event.previous_revision,
            changes=event.changes,
        ),
        opened_at=now,
        policy_version=planned.policy_version,
    )
    await store.update_round(
        round_=closed,
        decision={"reason": "the order was withdrawn before its submission arrived"},
    )
    log.info(
        "submission after the withdrawal: round recorded closed, nobody asked",
        order_id=str(event.order_id),
        revision=event.revision,
    )
