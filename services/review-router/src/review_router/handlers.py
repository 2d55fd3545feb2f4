"""One function per event or command: apply the review rules and write the messages they
cause, all in the caller's transaction (the inbox claim and the outbox commit with the
state)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from orderflow import refusals
from orderflow.consumer import PermanentError
from orderflow.db import Connection
from orderflow.messages import (
    FieldChange,
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
from .store import LoadedRound, Store, Submitted, Timer

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


async def _cancel(
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


async def _close(
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
    await _cancel(store, round_, cancelled, reason=reason, at=at)
    log.info(
        "review round closed",
        order_id=str(round_.order_id),
        revision=round_.revision,
        status=status.value,
        cancelled=[r.department for r in cancelled],
    )


async def _stop_lingering(
    store: Store, existing: Iterable[domain.Round], *, reason: str, at: datetime
) -> None:
    for round_ in domain.lingering(list(existing)):
        _, cancelled = domain.cancel_pending(round_)
        await _cancel(store, round_, cancelled, reason=reason, at=at)


async def _approve(
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
        await _close(store, old, status=domain.RoundStatus.SUPERSEDED, reason=reason, at=now)
    await _stop_lingering(store, existing, reason=reason, at=now)

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
        await _approve(store, submitted=submitted, round_=round_, at=now)
        log.info("order approved: every approval kept", order_id=str(event.order_id))
        return
    await _request_reviews(
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
        await _close(store, round_, status=domain.RoundStatus.WITHDRAWN, reason=reason, at=now)
    await _stop_lingering(store, existing, reason=reason, at=now)
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


@contextmanager
def _refused() -> Iterator[None]:
    """A department message that can never be applied is refused (dead-lettered with its
    code and problems), not retried."""
    try:
        yield
    except (domain.VerdictMismatch, domain.Unauthorized) as exc:
        raise PermanentError(str(exc), exc.problems, code=exc.code) from exc


def _authorize(rules: Rules, sender: Sender, *, department: str, kind: str) -> None:
    with _refused():
        domain.authorize(
            rules.access,
            user_id=sender.user_id,
            department=department,
            routing_key=sender.routing_key,
            kind=kind,
        )


async def _round_of(store: Store, review_id: uuid.UUID) -> LoadedRound:
    round_id = await store.round_of_review(review_id=review_id)
    if round_id is None:
        raise PermanentError(
            f"unknown review_id {review_id}",
            [Problem(pointer="/review_id", detail="no review was requested with this id")],
            code=refusals.UNKNOWN_REVIEW,
        )
    return await store.lock_round(round_id=round_id)


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
    _authorize(rules, sender, department=verdict.department, kind="verdict")
    loaded = await _round_of(store, verdict.review_id)
    with _refused():
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
        await _cancel(
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
        await _request_reviews(
            store, submitted=loaded.submitted, round_=round_, requests=step.opened, at=at
        )
        log.info("stage opened", stage=round_.current_stage)
    elif step.decision == domain.RoundStatus.APPROVED:
        await _approve(store, submitted=loaded.submitted, round_=round_, at=at)
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
    _authorize(rules, sender, department=command.department, kind="annotation")
    loaded = await _round_of(store, command.review_id)
    with _refused():
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
    _authorize(rules, sender, department=command.department, kind="reassignment")
    loaded = await _round_of(store, command.review_id)
    with _refused():
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


async def on_timer(conn: Connection | Store, timer: Timer, *, now: datetime) -> str:
    """A review's deadline passed: remind (`review.overdue`), and later escalate to the
    department's contact (`review.escalated`), while it is still pending. Returns what was
    done."""
    store = repository.store_of(conn)
    loaded = await _round_of(store, timer.review_id)
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
