"""The read model: how an event moves the order's status."""

from __future__ import annotations

from dataclasses import dataclass

from .statuses import BEFORE_DECISION, Status
from .timeline import DESCRIBED_EVENTS

#: The status each event announces, by AMQP type.
EVENT_STATUS: dict[str, Status] = {
    "order.submitted": Status.SUBMITTED,
    "review.round_opened": Status.IN_REVIEW,
    "order.changes_requested": Status.CHANGES_REQUESTED,
    "order.approved": Status.APPROVED,
    "contract.drafted": Status.CONTRACT_DRAFTED,
    "contract.signed": Status.CONTRACT_SIGNED,
    "order.withdrawn": Status.WITHDRAWN,
}

# From which statuses each status can be reached. Events of different services arrive in
# any order, so a step may be skipped (a contract drafted before the approval reached us),
# but a status never goes back: a late `review.round_opened` after the approval is history.
_REACHABLE_FROM: dict[Status, frozenset[Status]] = {
    Status.SUBMITTED: frozenset({Status.DRAFT}),
    Status.IN_REVIEW: frozenset({Status.DRAFT, Status.SUBMITTED}),
    # one round decides once: approval and a request for changes exclude each other
    Status.CHANGES_REQUESTED: BEFORE_DECISION,
    Status.APPROVED: BEFORE_DECISION,
    Status.CONTRACT_DRAFTED: BEFORE_DECISION | {Status.APPROVED},
    Status.CONTRACT_SIGNED: BEFORE_DECISION | {Status.APPROVED, Status.CONTRACT_DRAFTED},
    # withdrawn from any state before approval (architecture, order states), when the
    # review-router decided the withdrawal came first
    Status.WITHDRAWN: BEFORE_DECISION | {Status.CHANGES_REQUESTED, Status.WITHDRAWAL_REQUESTED},
}


@dataclass(frozen=True)
class Projection:
    """What an event does to the order: its new status (None: unchanged) and why; while a
    withdrawal waits for its answer, the status the review's events reach meanwhile
    (`held`), which the order takes if the withdrawal is refused."""

    status: Status | None
    outcome: str
    held: Status | None = None
    #: whether the event's details (approved_at, the contract) are kept though the status
    #: does not move: it is held, or the status is the event's already
    details: bool = False


#: The router's answers to a withdrawal.
WITHDRAWN_EVENT = "order.withdrawn"
REFUSED_EVENT = "order.withdrawal_refused"
_DECIDED = frozenset({Status.APPROVED, Status.CONTRACT_DRAFTED, Status.CONTRACT_SIGNED})


def _revision_problem(current_revision: int, event_revision: int) -> Projection | None:
    if event_revision < current_revision:
        return Projection(
            None,
            f"ignored: revision {event_revision} is older than the current revision "
            f"{current_revision}",
        )
    if event_revision > current_revision:
        # only intake makes revisions; a later one cannot be ours
        return Projection(
            None, f"ignored: revision {event_revision} is unknown (current {current_revision})"
        )
    return None


def _move(status: Status, target: Status) -> Projection:
    if status == target:
        return Projection(None, f"unchanged: already {status.value}", details=True)
    if status not in _REACHABLE_FROM[target]:
        return Projection(
            None, f"unchanged: {status.value} does not go back or over to {target.value}"
        )
    return Projection(target, f"{status.value} -> {target.value}")


def _while_withdrawal_requested(event_type: str, held: Status | None) -> Projection:
    """The order told its caller `withdrawal_requested` and must not contradict that before
    the router's answer: the answer moves it; the review's other events (an approval that
    was decided before the withdrawal arrived, its contract) are recorded and held."""
    base = held or Status.SUBMITTED
    if event_type == WITHDRAWN_EVENT:
        return Projection(Status.WITHDRAWN, "withdrawal_requested -> withdrawn")
    if event_type == REFUSED_EVENT:
        # the refusal says the round was approved; a contract may be known already
        target = base if base in _DECIDED else Status.APPROVED
        return Projection(target, f"withdrawal refused: withdrawal_requested -> {target.value}")
    target = EVENT_STATUS[event_type]
    moved = _move(base, target)
    if moved.status is None:
        return Projection(None, f"{moved.outcome} (withdrawal requested)")
    return Projection(
        None,
        f"held while the withdrawal waits for its answer: {base.value} -> {target.value}",
        held=moved.status,
        details=True,
    )


def project(
    *,
    status: Status,
    current_revision: int,
    event_type: str,
    event_revision: int | None,
    held: Status | None = None,
) -> Projection:
    target = EVENT_STATUS.get(event_type)
    if event_type == REFUSED_EVENT:
        target = Status.APPROVED
    if target is None or event_revision is None:
        return Projection(None, "recorded")
    problem = _revision_problem(current_revision, event_revision)
    if problem is not None:
        return problem
    if status is Status.WITHDRAWAL_REQUESTED:
        return _while_withdrawal_requested(event_type, held)
    if event_type == REFUSED_EVENT:
        return Projection(None, f"unchanged: no withdrawal waits (the order is {status.value})")
    return _move(status, target)


#: The events the projection takes: those that move the status, and those the timeline
#: shows (`review.annotation_recorded` is documented as shown there, in its raw form);
#: the queue could be bound to these alone once the events exchange has a catch-all.
PROJECTED_EVENTS: frozenset[str] = (
    frozenset(EVENT_STATUS)
    | {WITHDRAWN_EVENT, REFUSED_EVENT}
    | DESCRIBED_EVENTS
    | {"review.annotation_recorded"}
)
