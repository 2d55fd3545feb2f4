"""One function per event or command: apply the review rules and write the messages they
cause, all in the caller's transaction (the inbox claim and the outbox commit with the
state)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from orderflow import outbox, refusals, topology
from orderflow.consumer import PermanentError
from orderflow.db import Connection
from orderflow.messages import (
    OrderApproved,
    OrderChangesRequested,
    OrderSubmitted,
    OrderWithdrawalRefused,
    OrderWithdrawalRequested,
    OrderWithdrawn,
    Problem,
    ReassignReview,
    ReviewAnnotated,
    ReviewAnnotationRecorded,
    ReviewCancelled,
    ReviewEscalated,
    ReviewOverdue,
    ReviewReassigned,
    ReviewRequested,
    ReviewRoundOpened,
    ReviewSent,
    VerdictGiven,
    VerdictRecorded,
)

from . import domain
from . import policy as policies
from .adapters import repository

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Rules:
    """What the handlers decide with, built once at start: the review policy, and who may
    speak for which department."""

    policy: policies.Policy
    access: domain.VerdictAccess


@dataclass(frozen=True)
class Sender:
    """Who published a department message, as the broker delivered it."""

    message_id: str
    user_id: str | None
    routing_key: str | None


async def _request_reviews(
    conn: Connection,
    *,
    loaded: repository.LoadedRound,
    round_: domain.Round,
    requests: Iterable[domain.Request],
    at: datetime,
) -> None:
    """Send review requests (with their due time, and a reminder timer at that moment), and
    announce each one sent with `review.sent`: the one event that says a department was
    asked (the round's plan may name departments that are never asked)."""
    requests = list(requests)
    due = await repository.mark_requested(conn, review_ids=[r.review_id for r in requests], at=at)
    for request in requests:
        await outbox.enqueue(
            conn,
            ReviewRequested(
                review_id=request.review_id,
                order_id=round_.order_id,
                revision=round_.revision,
                department=request.department,
                stage=request.stage,
                order=loaded.order,
                totals=loaded.totals,
                requested_at=at,
                due_at=due.get(request.review_id),
                attachments=loaded.attachments,
                previous_revision=loaded.previous_revision,
                changes=loaded.changes,
            ),
            exchange=topology.REVIEWS,
            routing_key=request.department,
            correlation_id=round_.order_id,
        )
        await outbox.publish_event(
            conn,
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


async def _cancel(
    conn: Connection,
    round_: domain.Round,
    requests: Iterable[domain.Request],
    *,
    reason: str,
    at: datetime,
) -> None:
    """Tell each department still reviewing to stop."""
    requests = list(requests)
    await repository.mark_cancelled(conn, review_ids=[r.review_id for r in requests], at=at)
    for request in requests:
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
    await _cancel(conn, round_, cancelled, reason=reason, at=at)
    log.info(
        "review round closed",
        order_id=str(round_.order_id),
        revision=round_.revision,
        status=status.value,
        cancelled=[r.department for r in cancelled],
    )


async def _stop_lingering(
    conn: Connection, existing: Iterable[domain.Round], *, reason: str, at: datetime
) -> None:
    for round_ in domain.lingering(list(existing)):
        _, cancelled = domain.cancel_pending(round_)
        await _cancel(conn, round_, cancelled, reason=reason, at=at)


async def _approve(
    conn: Connection,
    *,
    loaded: repository.LoadedRound,
    round_: domain.Round,
    at: datetime,
) -> None:
    approvals = list(round_.feedback())
    await repository.update_round(
        conn,
        round_=round_,
        decided_at=at,
        decision={"feedback": [f.model_dump(mode="json") for f in approvals]},
    )
    await repository.remember_customer(
        conn, key=policies.customer_key(loaded.order), order_id=round_.order_id, at=at
    )
    await outbox.publish_event(
        conn,
        OrderApproved(
            order_id=round_.order_id,
            revision=round_.revision,
            order=loaded.order,
            totals=loaded.totals,
            approvals=approvals,
            approved_at=at,
            attachments=loaded.attachments,
        ),
        correlation_id=round_.order_id,
    )


async def on_order_submitted(
    conn: Connection, event: OrderSubmitted, *, now: datetime, rules: Rules
) -> None:
    """Open a round for the revision (replacing an older open one) and ask its first stage
    that needs somebody."""
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
    withdrawn_at = await repository.withdrawn_revision(conn, order_id=event.order_id)
    if domain.withdrawn_before(event.revision, withdrawn_at):
        await _record_withdrawn_submission(conn, event, now=now, rules=rules)
        return
    reason = f"superseded by revision {event.revision}"
    for old in submission.supersede:
        await _close(conn, old, status=domain.RoundStatus.SUPERSEDED, reason=reason, at=now)
    await _stop_lingering(conn, existing, reason=reason, at=now)

    new_customer = not await repository.customer_known(conn, key=policies.customer_key(event.order))
    planned = domain.review_plan(
        rules.policy,
        policies.OrderFacts(order=event.order, totals=event.totals, new_customer=new_customer),
    )
    previous = submission.previous
    changes = list(event.changes)
    kept: dict[str, domain.Kept] = {}
    if previous is not None:
        before = await repository.order_of_round(conn, round_id=previous.id)
        computed = domain.changes_between(before, event.order)
        # the stored documents are the source of truth; announced changes can only add
        changed = domain.changed_fields(computed, event.changes)
        kept = domain.kept_approvals(
            previous=previous, plan=planned.plan, policy=rules.policy, changed=changed
        )
        changes = changes or computed

    round_ = domain.open_round(
        round_id=uuid.uuid4(),
        order_id=event.order_id,
        revision=event.revision,
        review_plan=planned.plan,
        new_review_id=uuid.uuid4,
        deadlines=planned.deadlines,
        kept=kept,
    )
    await repository.insert_round(
        conn,
        round_=round_,
        plan=planned.plan,
        order=event.order,
        totals=event.totals,
        opened_at=now,
        policy_version=planned.policy_version,
        attachments=event.attachments,
        previous_revision=event.previous_revision,
        changes=changes,
    )
    await outbox.publish_event(
        conn,
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
    loaded = repository.LoadedRound(
        round=round_,
        order=event.order,
        totals=event.totals,
        plan=planned.plan,
        attachments=list(event.attachments),
        previous_revision=event.previous_revision,
        changes=changes,
    )
    log.info(
        "review round opened",
        order_id=str(event.order_id),
        revision=event.revision,
        policy_version=planned.policy_version,
        departments=planned.plan.departments,
        kept=sorted(kept),
    )
    if round_.status == domain.RoundStatus.APPROVED:
        # nothing a department owns changed and each of them approved the revision before
        await _approve(conn, loaded=loaded, round_=round_, at=now)
        log.info("order approved: every approval kept", order_id=str(event.order_id))
        return
    await _request_reviews(conn, loaded=loaded, round_=round_, requests=round_.pending(), at=now)


async def _record_withdrawn_submission(
    conn: Connection, event: OrderSubmitted, *, now: datetime, rules: Rules
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
    await repository.insert_round(
        conn,
        round_=closed,
        plan=planned.plan,
        order=event.order,
        totals=event.totals,
        opened_at=now,
        policy_version=planned.policy_version,
        attachments=event.attachments,
        previous_revision=event.previous_revision,
        changes=event.changes,
    )
    await repository.update_round(
        conn,
        round_=closed,
        decision={"reason": "the order was withdrawn before its submission arrived"},
    )
    log.info(
        "submission after the withdrawal: round recorded closed, nobody asked",
        order_id=str(event.order_id),
        revision=event.revision,
    )


async def on_withdrawal_requested(
    conn: Connection, event: OrderWithdrawalRequested, *, now: datetime
) -> domain.WithdrawalOutcome:
    """Decide a withdrawal against the round's decision, under the order's lock and the
    round rows' locks (the ones a verdict takes): either the withdrawal wins (the round is
    closed, the departments still reviewing are told to stop, `order.withdrawn`) or the
    approval came first (`order.withdrawal_refused`). No approval follows a withdrawal."""
    await repository.lock_order(conn, order_id=event.order_id)
    existing = await repository.rounds_of_order(conn, order_id=event.order_id)
    decided = domain.decide_withdrawal(existing)
    if decided.outcome is domain.WithdrawalOutcome.REFUSED:
        await _refuse_withdrawal(conn, event, decided, now=now)
        return decided.outcome
    reason = "order withdrawn" + (f": {event.reason}" if event.reason else "")
    for round_ in decided.close:
        await _close(conn, round_, status=domain.RoundStatus.WITHDRAWN, reason=reason, at=now)
    await _stop_lingering(conn, existing, reason=reason, at=now)
    await _record_withdrawal(conn, event, decided, now=now)
    await outbox.publish_event(
        conn,
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
    conn: Connection,
    event: OrderWithdrawalRequested,
    decided: domain.WithdrawalDecision,
    *,
    now: datetime,
) -> None:
    """Keep the decision: a withdrawn one is the tombstone a later submission meets."""
    await repository.record_withdrawal(
        conn,
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
    conn: Connection,
    event: OrderWithdrawalRequested,
    decided: domain.WithdrawalDecision,
    *,
    now: datetime,
) -> None:
    assert decided.decided is not None
    assert decided.reason is not None
    round_ = decided.decided
    await _record_withdrawal(conn, event, decided, now=now)
    await outbox.publish_event(
        conn,
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


def _authorize(rules: Rules, sender: Sender, *, department: str, kind: str) -> None:
    try:
        domain.authorize(
            rules.access,
            user_id=sender.user_id,
            department=department,
            routing_key=sender.routing_key,
            kind=kind,
        )
    except domain.Unauthorized as exc:
        raise PermanentError(str(exc), exc.problems, code=exc.code) from exc


async def _round_of(conn: Connection, review_id: uuid.UUID) -> repository.LoadedRound:
    round_id = await repository.round_of_review(conn, review_id=review_id)
    if round_id is None:
        raise PermanentError(
            f"unknown review_id {review_id}",
            [Problem(pointer="/review_id", detail="no review was requested with this id")],
            code=refusals.UNKNOWN_REVIEW,
        )
    return await repository.lock_round(conn, round_id=round_id)


async def on_verdict(
    conn: Connection, verdict: VerdictGiven, *, sender: Sender, now: datetime, rules: Rules
) -> domain.VerdictOutcome:
    """Record a department's verdict and, when it completes a stage, move the round on."""
    _authorize(rules, sender, department=verdict.department, kind="verdict")
    loaded = await _round_of(conn, verdict.review_id)
    try:
        step = domain.apply_verdict(loaded.round, verdict)
    except domain.VerdictMismatch as exc:
        raise PermanentError(str(exc), exc.problems, code=exc.code) from exc

    verdict_id = await repository.record_verdict(
        conn,
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

    await repository.mark_answered(
        conn,
        review_id=step.answered.review_id,
        status=step.answered.status,
        verdict_id=verdict_id,
        at=now,
    )
    order_id = verdict.order_id
    await outbox.publish_event(
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
            on_behalf_of=verdict.on_behalf_of,
        ),
        correlation_id=order_id,
    )
    if step.cancelled:
        await _cancel(
            conn,
            step.round,
            step.cancelled,
            reason=f"the round was decided: {verdict.department} asked for changes",
            at=now,
        )

    if step.opened:
        await repository.update_round(conn, round_=step.round)
        await _request_reviews(conn, loaded=loaded, round_=step.round, requests=step.opened, at=now)
        bound.info("stage opened", stage=step.round.current_stage)
    elif step.decision == domain.RoundStatus.APPROVED:
        await _approve(conn, loaded=loaded, round_=step.round, at=now)
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
        await outbox.publish_event(
            conn,
            OrderChangesRequested(
                order_id=order_id,
                revision=verdict.revision,
                salesperson=loaded.order.salesperson,
                feedback=list(step.feedback),
                annotations=step.annotations,
                decided_at=now,
            ),
            correlation_id=order_id,
        )
        bound.info("changes requested", annotations=len(step.annotations))
    return step.outcome


async def on_annotations(
    conn: Connection, command: ReviewAnnotated, *, sender: Sender, now: datetime, rules: Rules
) -> domain.VerdictOutcome:
    """Record a department's remarks made while reviewing; they go to the salesperson with
    the round's change request."""
    _authorize(rules, sender, department=command.department, kind="annotation")
    loaded = await _round_of(conn, command.review_id)
    try:
        noted = domain.apply_annotations(loaded.round, command, command.annotations)
    except domain.VerdictMismatch as exc:
        raise PermanentError(str(exc), exc.problems, code=exc.code) from exc
    await repository.record_annotations(
        conn,
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
        await outbox.publish_event(
            conn,
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
    conn: Connection, command: ReassignReview, *, sender: Sender, now: datetime, rules: Rules
) -> domain.VerdictOutcome:
    """Hand a pending review to another reviewer of the department."""
    _authorize(rules, sender, department=command.department, kind="reassignment")
    loaded = await _round_of(conn, command.review_id)
    try:
        outcome, _ = domain.reassignment(loaded.round, command)
    except domain.VerdictMismatch as exc:
        raise PermanentError(str(exc), exc.problems, code=exc.code) from exc
    await repository.record_assignment(
        conn,
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
        await outbox.publish_event(
            conn,
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


async def on_timer(conn: Connection, timer: repository.Timer, *, now: datetime) -> str:
    """A review's deadline passed: remind (`review.overdue`), and later escalate to the
    department's contact (`review.escalated`), while it is still pending. Returns what was
    done."""
    loaded = await _round_of(conn, timer.review_id)
    request = loaded.round.request(timer.review_id)
    if request is None or request.status != domain.RequestStatus.PENDING:
        return f"skipped: review {request.status.value if request else 'missing'}"
    round_ = loaded.round
    if timer.kind == "overdue":
        await outbox.publish_event(
            conn,
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
            await repository.schedule(
                conn,
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
        return "sent"
    contact = request.deadline.escalate_to if request.deadline else None
    if not contact:
        return "skipped: no contact to escalate to"
    await outbox.publish_event(
        conn,
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
