"""What a department sends while reviewing, besides its verdict: annotations (remarks for
the salesperson) and the reassignment of a review to another reviewer."""

from __future__ import annotations

from datetime import datetime

import structlog

from orderflow.db import Connection
from orderflow.messages import (
    ReassignReview,
    ReviewAnnotated,
    ReviewAnnotationRecorded,
    ReviewReassigned,
)

from .. import domain
from ..adapters import repository
from ..store import Store
from .common import Rules, Sender, authorize, refused, round_of

log = structlog.get_logger(__name__)


async def on_annotations(
    conn: Connection | Store,
    command: ReviewAnnotated,
    *,
    sender: Sender,
    now: datetime,
    rules: Rules,
) -> domain.VerdictOutcome:
    """Record a department's remarks made while reviewing; they go to the salesperson with
    the round's change request."""
    store = repository.store_of(conn)
    authorize(rules, sender, department=command.department, kind="annotation")
    loaded = await round_of(store, command.review_id)
    with refused():
        noted = domain.apply_annotations(loaded.round, command, command.annotations)
    await store.record_annotations(
        message_id=sender.message_id,
        review_id=command.review_id,
        round_id=loaded.round.id,
        department=command.department,
        reviewer=command.reviewer,
        on_behalf_of=command.on_behalf_of,
        annotations=command.annotations,
        outcome=noted.outcome,
        user_id=sender.user_id,
        received_at=now,
    )
    if noted.outcome in (domain.VerdictOutcome.ACCEPTED, domain.VerdictOutcome.AFTER_DECISION):
        await store.publish_event(
            ReviewAnnotationRecorded(
                review_id=command.review_id,
                order_id=command.order_id,
                revision=command.revision,
                department=command.department,
                reviewer=command.reviewer,
                on_behalf_of=command.on_behalf_of,
                annotations=command.annotations,
                recorded_at=now,
            ),
            correlation_id=command.order_id,
        )
    log.info(
        "annotations received",
        order_id=str(command.order_id),
        department=command.department,
        review_id=str(command.review_id),
        count=len(command.annotations),
        outcome=noted.outcome.value,
    )
    return noted.outcome


async def on_reassign(
    conn: Connection | Store,
    command: ReassignReview,
    *,
    sender: Sender,
    now: datetime,
    rules: Rules,
) -> domain.VerdictOutcome:
    """Hand a pending review to another reviewer of the department."""
    store = repository.store_of(conn)
    authorize(rules, sender, department=command.department, kind="reassignment")
    loaded = await round_of(store, command.review_id)
    with refused():
        outcome, _ = domain.reassignment(loaded.round, command)
    await store.record_assignment(
        message_id=sender.message_id,
        review_id=command.review_id,
        round_id=loaded.round.id,
        department=command.department,
        assigned_by=command.assigned_by,
        assignee=command.assignee,
        reason=command.reason,
        outcome=outcome,
        user_id=sender.user_id,
        received_at=now,
    )
    if outcome == domain.VerdictOutcome.ACCEPTED:
        await store.publish_event(
            ReviewReassigned(
                review_id=command.review_id,
                order_id=command.order_id,
                revision=command.revision,
                department=command.department,
                assigned_by=command.assigned_by,
                assignee=command.assignee,
                reason=command.reason,
                reassigned_at=now,
            ),
            correlation_id=command.order_id,
        )
    log.info(
        "reassignment received",
        order_id=str(command.order_id),
        department=command.department,
        review_id=str(command.review_id),
        assignee=command.assignee.id,
        outcome=outcome.value,
    )
    return outcome
