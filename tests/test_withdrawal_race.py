"""Withdrawal races, on the real broker and database with the four services running: the
review-router decides a withdrawal against the round's decision under one lock, so every
answer given is true and nothing contradicts it later.

- Withdraw against the last approval: a service order, the supervisor and service delivery
  approve, then finance's approval and `POST /withdraw` go out at the same moment.
- Withdraw right after `POST /orders?submit=true`: `order.submitted` and the withdrawal
  travel in separate queues; the withdrawal may overtake the submission.

Each trial waits for its outcome by a positive signal, then checks that the HTTP answer,
intake's status, the router's round, the contracts, the departments' queues and the
salesperson's inbox all tell the same story."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from contracts.main import create_app as create_contracts
from contracts.settings import Settings as ContractsSettings
from intake.main import create_app as create_intake
from intake.settings import Settings as IntakeSettings
from notifier.main import create_app as create_notifier
from notifier.settings import Settings as NotifierSettings
from orderflow.messages import ReviewCancelled, ReviewRequested
from orderflow_testkit.testing import (
    Infra,
    answer_review,
    eventually,
    example_order,
    get_messages,
    running,
    take_review,
)
from review_router.main import create_app as create_router
from review_router.settings import Settings as RouterSettings

DEFAULT_TRIALS = 3
SLOW_TRIALS = 50
OUTCOME_TIMEOUT = 45.0


@dataclass
class System:
    amqp: Any
    intake: httpx.AsyncClient
    router: httpx.AsyncClient
    contracts: httpx.AsyncClient
    notifier: httpx.AsyncClient
    figures: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.figures[what] = self.figures.get(what, 0) + 1


@contextlib.asynccontextmanager
async def system(infra: Infra, amqp: Any) -> AsyncIterator[System]:
    """The four services in this process, each as its own bus user."""
    common = {"database_url": infra.database_url}
    async with (
        running(create_intake(IntakeSettings(amqp_url=infra.url_as("intake"), **common))) as i,
        running(
            create_router(RouterSettings(amqp_url=infra.url_as("review-router"), **common))
        ) as r,
        running(
            create_contracts(
                ContractsSettings(
                    amqp_url=infra.url_as("contracts"),
                    seller_name="Orderflow Test Seller Ltd.",
                    **common,
                )
            )
        ) as c,
        running(
            create_notifier(NotifierSettings(amqp_url=infra.url_as("notifier"), **common))
        ) as n,
    ):
        yield System(amqp, i, r, c, n)


def service_order(trial: str) -> dict[str, Any]:
    """The example service order, with a salesperson of the trial's own, so their inbox
    holds this trial's notifications only."""
    order = example_order("order-service")
    order["salesperson"]["id"] = f"sales.{trial}"
    order["external_ref"] = f"PO-RACE-{trial}"
    return order


async def order_of(s: System, order_id: str) -> dict[str, Any]:
    got = await s.intake.get(f"/api/v1/orders/{order_id}")
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


async def round_of(s: System, order_id: str) -> dict[str, Any] | None:
    got = await s.router.get("/api/v1/rounds", params={"order_id": order_id})
    if got.status_code == 404:
        return None
    assert got.status_code == 200, got.text
    items: list[dict[str, Any]] = got.json()["items"]
    assert len(items) <= 1, items
    return items[0] if items else None


async def contracts_of(s: System, order_id: str) -> list[dict[str, Any]]:
    got = await s.contracts.get("/api/v1/contracts", params={"order_id": order_id})
    if got.status_code == 404:
        return []
    assert got.status_code == 200, got.text
    items: list[dict[str, Any]] = got.json()["items"]
    return items


async def inbox_of(s: System, person: str, order_id: str) -> list[str]:
    got = await s.notifier.get(f"/api/v1/inbox/{person}", params={"limit": 100})
    if got.status_code == 404:
        return []
    assert got.status_code == 200, got.text
    return sorted(n["event_type"] for n in got.json()["items"] if n["order_id"] == order_id)


async def take(s: System, department: str, order_id: str) -> ReviewRequested:
    review = await take_review(s.amqp, department)
    assert str(review.order_id) == order_id, (department, review.order_id, order_id)
    return review


async def verdict_outcome(s: System, order_id: str, department: str) -> str:
    """The outcome the router recorded for the department's verdict, once it has one."""

    async def recorded() -> str | None:
        round_ = await round_of(s, order_id)
        found = [v for v in (round_ or {}).get("verdicts", []) if v["department"] == department]
        return str(found[-1]["outcome"]) if found else None

    outcome: str = await eventually(recorded, timeout=OUTCOME_TIMEOUT)
    return outcome


async def settled(s: System, order_id: str, answered: int) -> dict[str, Any]:
    """Intake's view once the withdrawal is answered: withdrawn, or (the approval won) the
    contract drafted and, when intake had accepted the request, the refusal recorded."""

    async def final() -> dict[str, Any] | None:
        order = await order_of(s, order_id)
        if order["status"] == "withdrawn":
            return order
        if order["status"] == "contract_drafted":
            refused = (order.get("withdrawal") or {}).get("outcome") == "refused"
            return order if refused or answered == 409 else None
        return None

    try:
        result: dict[str, Any] = await eventually(final, timeout=OUTCOME_TIMEOUT, interval=0.1)
    except AssertionError:
        raise AssertionError(f"no outcome: {await order_of(s, order_id)}") from None
    return result


async def cancelled_review(s: System, department: str, review: ReviewRequested) -> None:
    [message] = await get_messages(s.amqp, f"review.{department}", 1, timeout=OUTCOME_TIMEOUT)
    assert message.type == "review.cancelled", message.type
    cancelled = ReviewCancelled.model_validate_json(message.body)
    assert cancelled.review_id == review.review_id


# --- withdraw against the last approval ------------------------------------------------


async def withdraw_against_last_approval(s: System, trial: int) -> str:
    tag = f"a{trial}-{uuid.uuid4().hex[:6]}"
    document = service_order(tag)
    salesperson = document["salesperson"]["id"]
    created = await s.intake.post("/api/v1/orders", params={"submit": "true"}, json=document)
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]

    await answer_review(s.amqp, await take(s, "supervisor", order_id))
    delivery = await take(s, "service_delivery", order_id)
    finance = await take(s, "finance", order_id)
    await answer_review(s.amqp, delivery)
    assert await verdict_outcome(s, order_id, "service_delivery") == "accepted"

    # spread the starts a little, one side or the other, so both orders of arrival occur
    head_start = (trial % 5) * 0.03

    async def withdraw() -> httpx.Response:
        await asyncio.sleep(head_start if trial % 2 else 0)
        return await s.intake.post(
            f"/api/v1/orders/{order_id}/withdraw", json={"reason": "客户取消"}
        )

    async def approve() -> None:
        await asyncio.sleep(0 if trial % 2 else head_start)
        await answer_review(s.amqp, finance)

    _, answer = await asyncio.gather(approve(), withdraw())
    # 202: asked; 409 only when intake already knew of the approval, which is then true
    assert answer.status_code in (202, 409), answer.text
    if answer.status_code == 202:
        assert answer.json()["status"] == "withdrawal_requested"
    else:
        assert answer.json()["current_status"] in ("approved", "contract_drafted")

    final = await settled(s, order_id, answer.status_code)
    round_ = await round_of(s, order_id)
    assert round_ is not None
    if final["status"] == "withdrawn":
        s.count("withdrawal won")
        assert answer.status_code == 202
        assert final["withdrawal"]["outcome"] == "withdrawn"
        assert round_["status"] == "withdrawn"
        # finance was still reviewing: told to stop; its verdict then counts for nothing
        await cancelled_review(s, "finance", finance)
        assert await verdict_outcome(s, order_id, "finance") == "round_closed"
        round_ = await round_of(s, order_id)
        assert round_ is not None and round_["status"] == "withdrawn"
        assert await contracts_of(s, order_id) == []
        assert "order.approved" not in await inbox_of(s, salesperson, order_id)
        assert (await order_of(s, order_id))["status"] == "withdrawn"
        return "withdrawn"

    s.count("approval won")
    assert round_["status"] == "approved"
    assert {r["department"]: r["status"] for r in round_["requests"]}["finance"] == "approved"
    assert final["withdrawn_at"] is None
    [contract] = await contracts_of(s, order_id)
    assert final["contract"]["contract_id"] == contract["id"]
    told = ["contract.drafted", "order.approved"]
    if answer.status_code == 202:
        assert final["withdrawal"]["outcome"] == "refused"
        assert "approved before the withdrawal" in final["withdrawal"]["refusal"]
        told = ["contract.drafted", "order.approved", "order.withdrawal_refused"]

    async def notified() -> bool:
        return await inbox_of(s, salesperson, order_id) == told

    await eventually(notified, timeout=OUTCOME_TIMEOUT)
    items = (await s.intake.get(f"/api/v1/orders/{order_id}/timeline")).json()["items"]
    kinds = [i["type"] for i in items]
    assert "order.withdrawn" not in kinds
    assert ("order.withdrawal_refused" in kinds) is (answer.status_code == 202)
    return "approved"


# --- withdraw right after submission ---------------------------------------------------


async def withdraw_right_after_submission(s: System, trial: int) -> str:
    tag = f"b{trial}-{uuid.uuid4().hex[:6]}"
    document = service_order(tag)
    salesperson = document["salesperson"]["id"]
    created = await s.intake.post("/api/v1/orders", params={"submit": "true"}, json=document)
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    answer = await s.intake.post(f"/api/v1/orders/{order_id}/withdraw")
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "withdrawal_requested"

    final = await settled(s, order_id, 202)
    assert final["status"] == "withdrawn"

    # the submission reaches the router too, before or after: its round ends withdrawn
    async def closed_round() -> dict[str, Any] | None:
        round_ = await round_of(s, order_id)
        return round_ if round_ is not None and round_["status"] == "withdrawn" else None

    round_ = await eventually(closed_round, timeout=OUTCOME_TIMEOUT)
    supervisor = {r["department"]: r["status"] for r in round_["requests"]}["supervisor"]
    if supervisor == "cancelled":
        # asked before the withdrawal came: asked, then told to stop
        s.count("round opened, then withdrawn")
        requested, stop = await get_messages(s.amqp, "review.supervisor", 2, timeout=30)
        assert requested.type == "review.requested" and stop.type == "review.cancelled"
        review = ReviewRequested.model_validate_json(requested.body)
        assert str(review.order_id) == order_id
        # approving now changes nothing
        await answer_review(s.amqp, review)
        assert await verdict_outcome(s, order_id, "supervisor") == "round_closed"
    else:
        # the withdrawal overtook the submission: the round was recorded closed, never sent
        s.count("withdrawal before the submission")
        assert supervisor == "not_sent"
        assert round_["decision"]["reason"].startswith("the order was withdrawn before")
    assert (await round_of(s, order_id) or {}).get("status") == "withdrawn"
    assert await contracts_of(s, order_id) == []
    assert "order.approved" not in await inbox_of(s, salesperson, order_id)
    assert (await order_of(s, order_id))["status"] == "withdrawn"
    return "withdrawn"


# --- the runs --------------------------------------------------------------------------


async def trials(infra: Infra, amqp: Any, race: Any, count: int) -> dict[str, int]:
    async with system(infra, amqp) as s:
        for trial in range(count):
            await race(s, trial)
    print(f"{race.__name__}: {count} trials, {s.figures}")
    return s.figures


@pytest.mark.timeout(240)
async def test_withdraw_against_the_last_approval(infra: Infra, amqp: Any) -> None:
    figures = await trials(infra, amqp, withdraw_against_last_approval, DEFAULT_TRIALS)
    assert sum(figures.values()) == DEFAULT_TRIALS


@pytest.mark.timeout(240)
async def test_withdraw_right_after_submission(infra: Infra, amqp: Any) -> None:
    figures = await trials(infra, amqp, withdraw_right_after_submission, DEFAULT_TRIALS)
    assert sum(figures.values()) == DEFAULT_TRIALS


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_withdraw_against_the_last_approval_many_times(infra: Infra, amqp: Any) -> None:
    figures = await trials(infra, amqp, withdraw_against_last_approval, SLOW_TRIALS)
    assert sum(figures.values()) == SLOW_TRIALS


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_withdraw_right_after_submission_many_times(infra: Infra, amqp: Any) -> None:
    figures = await trials(infra, amqp, withdraw_right_after_submission, SLOW_TRIALS)
    assert sum(figures.values()) == SLOW_TRIALS
