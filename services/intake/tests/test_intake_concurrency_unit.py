"""Fast checks, without servers, of how intake tells a conflict that can pass (retry) from a
refusal that cannot: the revision a sender based its revision on, the wait for the
departments' decision, and the caller's `Prefer: wait=`."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from intake import domain, handlers
from intake.domain import Status
from intake.entrypoints.http import decision_wait
from orderflow.messages import SubmitOrder, SubmitOrderReply


def test_a_revision_made_from_an_older_revision_is_a_conflict() -> None:
    domain.check_revises(None, status=Status.CHANGES_REQUESTED, current_revision=3)
    domain.check_revises(3, status=Status.CHANGES_REQUESTED, current_revision=3)
    with pytest.raises(domain.StaleRevision) as stale:
        domain.check_revises(2, status=Status.SUBMITTED, current_revision=3)
    assert isinstance(stale.value, domain.Conflict)
    assert not isinstance(stale.value, domain.RuleViolation)  # nothing wrong with the document
    assert "revision 3" in str(stale.value) and "revises 3" in str(stale.value)
    with pytest.raises(domain.UnknownRevision):
        domain.check_revises(4, status=Status.CHANGES_REQUESTED, current_revision=3)


@pytest.mark.parametrize("status", [Status.SUBMITTED, Status.IN_REVIEW])
def test_under_review_the_decision_is_awaited(status: Status) -> None:
    with pytest.raises(domain.DecisionPending) as pending:
        domain.check_decided(status, current_revision=2)
    assert pending.value.retry_after is None  # not yet waited
    for other in set(Status) - domain.DECIDING:
        domain.check_decided(other, current_revision=2)
    waited = domain.DecisionPending(status=status, revision=2, waited=20)
    assert waited.retry_after == 5
    assert "needs no change" in str(waited)


def test_the_decision_arrived_when_the_order_moved_on() -> None:
    state = {"status": "in_review", "current_revision": 2, "version": 4}
    assert not domain.decision_arrived(state, status=Status.IN_REVIEW, revision=2)
    assert domain.decision_arrived(
        {**state, "status": "changes_requested"}, status=Status.IN_REVIEW, revision=2
    )
    assert domain.decision_arrived(
        {**state, "current_revision": 3}, status=Status.IN_REVIEW, revision=2
    )
    assert domain.decision_arrived(None, status=Status.IN_REVIEW, revision=2)


def test_prefer_wait_only_shortens_the_wait() -> None:
    assert decision_wait(20, None) == 20
    assert decision_wait(20, "wait=3") == 3
    assert decision_wait(20, "respond-async, wait=0") == 0
    assert decision_wait(20, 'wait="100"') == 20
    assert decision_wait(20, "handling=strict") == 20


def test_revises_belongs_to_a_revision_and_replies_say_retryable(
    product_order: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match="send order_id"):
        SubmitOrder.model_validate({**product_order, "revises": 1})
    command = SubmitOrder.model_validate(
        {**product_order, "order_id": str(uuid.uuid4()), "revises": 1}
    )
    assert command.revises == 1
    assert SubmitOrderReply(accepted=True).retryable is False


class FakePool:
    """The order's state as a sequence of reads (the last one repeats)."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states
        self.reads = 0

    async def fetchrow(self, query: str, *args: Any) -> dict[str, Any]:
        state = self.states[min(self.reads, len(self.states) - 1)]
        self.reads += 1
        return state


async def test_a_revision_runs_again_once_the_decision_arrived() -> None:
    order_id = uuid.uuid4()
    in_review = {"status": "in_review", "current_revision": 1, "version": 2}
    pool = FakePool([in_review, in_review, {**in_review, "status": "changes_requested"}])
    tries: list[int] = []

    async def attempt() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise domain.DecisionPending(status=Status.IN_REVIEW, revision=1)
        return "revised"

    result = await handlers.when_decided(
        pool,  # type: ignore[arg-type]
        order_id=order_id,
        seconds=5,
        attempt=attempt,
    )
    assert result == "revised" and len(tries) == 2
    assert pool.reads == 3  # looked until the status moved, no fixed sleep


async def test_without_a_decision_in_time_the_revision_is_a_retryable_conflict() -> None:
    in_review = {"status": "in_review", "current_revision": 1, "version": 2}
    pool = FakePool([in_review])

    async def attempt() -> str:
        raise domain.DecisionPending(status=Status.IN_REVIEW, revision=1)

    with pytest.raises(domain.DecisionPending) as pending:
        await handlers.when_decided(
            pool,  # type: ignore[arg-type]
            order_id=uuid.uuid4(),
            seconds=0.3,
            attempt=attempt,
        )
    assert pending.value.waited == 0.3 and pending.value.retry_after == 1
    assert pool.reads >= 3
