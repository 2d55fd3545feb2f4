"""Races against the real broker and database, each repeated: two PUTs with one ETag, two
revisions over the bus, a revision sent at once after `order.changes_requested`, and events
that arrive before their order or revision. Every trial checks the answers, the order's
status, its revisions and its timeline; a few trials in the default run, 50 in the slow one.
The test plays the router (it publishes the departments' events) and the outside systems."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import aio_pika
import httpx
import pytest
from fastapi import FastAPI

from intake import handlers
from intake.adapters import repository
from intake.handlers import orders as order_handlers
from orderflow import topology
from orderflow.messages import (
    Annotation,
    Decision,
    DepartmentFeedback,
    Message,
    NotificationDelivered,
    OrderChangesRequested,
    Reviewer,
    ReviewRoundOpened,
    Salesperson,
    SubmitOrderReply,
    VerdictRecorded,
)
from orderflow_testkit.testing import eventually, publish, queue_depth

DEFAULT_TRIALS = 3
SLOW_TRIALS = 50

Trial = Callable[[int], Awaitable[list[str]]]


async def run_trials(name: str, trials: int, trial: Trial) -> None:
    """Every trial's wrong answers, all reported at once; the figures are printed."""
    wrong: list[str] = []
    for n in range(trials):
        wrong += [f"trial {n}: {w}" for w in await trial(n)]
    print(f"\n{name}: trials={trials} wrong={len(wrong)}")
    assert wrong == []


# --- playing the departments and the outside systems ------------------------------------


async def send_event(amqp: Any, event: Message) -> None:
    await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key=event.message_type,
        body=event.model_dump_json().encode(),
        message_type=event.message_type,
        correlation_id=str(getattr(event, "order_id", "")),
    )


def changes_requested(order_id: Any, revision: int) -> OrderChangesRequested:
    annotation = Annotation(field="/payment/terms", message="预付比例至少 50%", severity="blocker")
    return OrderChangesRequested(
        order_id=order_id,
        revision=revision,
        salesperson=Salesperson(id="zhang.wei"),
        feedback=[
            DepartmentFeedback(
                department="finance",
                decision=Decision.REQUEST_CHANGES,
                reviewer=Reviewer(id="wang.fang", name="王芳"),
                comment="付款条件需调整",
                annotations=[annotation],
            )
        ],
        annotations=[annotation],
        decided_at=datetime.now(UTC),
    )


def round_opened(order_id: Any, revision: int) -> ReviewRoundOpened:
    return ReviewRoundOpened(
        round_id=uuid.uuid4(),
        order_id=order_id,
        revision=revision,
        departments=["supervisor", "finance"],
        opened_at=datetime.now(UTC),
    )


def verdict(order_id: Any, revision: int) -> VerdictRecorded:
    return VerdictRecorded(
        review_id=uuid.uuid4(),
        order_id=order_id,
        revision=revision,
        department="supervisor",
        decision=Decision.APPROVE,
        reviewer=Reviewer(id="li.ming", name="李明"),
        recorded_at=datetime.now(UTC),
    )


def delivered(order_id: Any) -> NotificationDelivered:
    return NotificationDelivered(
        notification_id=uuid.uuid4(),
        order_id=order_id,
        recipient="zhang.wei",
        channel="inbox",
        event_type="order.changes_requested",
        delivered_at=datetime.now(UTC),
    )


@asynccontextmanager
async def reply_queue(amqp: Any) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    async with amqp.channel() as channel:
        yield await channel.declare_queue(exclusive=True)


async def replies(queue: aio_pika.abc.AbstractQueue, count: int, timeout: float = 30) -> list[Any]:
    got: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < count and loop.time() < deadline:
        msg = await queue.get(fail=False, no_ack=True)
        if msg is None:
            await asyncio.sleep(0.02)
            continue
        got.append(msg)
    assert len(got) == count, f"{len(got)} of {count} replies"
    return got


async def send_revision(
    amqp: Any, document: dict[str, Any], *, reply_to: str, correlation_id: str
) -> None:
    await publish(
        amqp,
        exchange=topology.COMMANDS,
        routing_key="order.submit",
        body=json.dumps(document).encode(),
        message_type="order.submit",
        reply_to=reply_to,
        correlation_id=correlation_id,
    )


class Orders:
    """The salesperson's side over HTTP, for the races."""

    def __init__(self, client: httpx.AsyncClient, api: Any, document: dict[str, Any]) -> None:
        self.client = client
        self.api = api
        self.document = document

    def doc(self, notes: str) -> dict[str, Any]:
        document = copy.deepcopy(self.document)
        document["notes"] = notes
        return document

    async def submitted(self) -> str:
        """A new order, with the customer's specification, submitted (two steps)."""
        order = await self.api.create(self.doc("first"))
        await self.api.attached(order["id"])
        await self.api.submit(order["id"])
        return str(order["id"])

    async def get(self, order_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/v1/orders/{order_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def status(self, order_id: str, status: str) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            order = await self.get(order_id)
            return order if order["status"] == status else None

        result: dict[str, Any] = await eventually(reached, interval=0.02)
        return result

    async def put(self, order_id: str, notes: str, etag: str) -> httpx.Response:
        return await self.client.put(
            f"/api/v1/orders/{order_id}", json=self.doc(notes), headers={"If-Match": etag}
        )

    async def revisions(self, order_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/api/v1/orders/{order_id}/revisions")
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def timeline(self, order_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/api/v1/orders/{order_id}/timeline")
        items: list[dict[str, Any]] = response.json()["items"]
        return items


@pytest.fixture
def orders(client: httpx.AsyncClient, api: Any, product_order: dict[str, Any]) -> Orders:
    return Orders(client, api, product_order)


# --- two PUTs with one ETag ---------------------------------------------------------------


def two_puts(orders: Orders, amqp: Any) -> Trial:
    async def trial(n: int) -> list[str]:
        wrong: list[str] = []
        order_id = await orders.submitted()
        await send_event(amqp, changes_requested(order_id, 1))
        await orders.status(order_id, "changes_requested")
        etag = await orders.api.etag(order_id)
        a, b = await asyncio.gather(
            orders.put(order_id, f"A{n}", etag), orders.put(order_id, f"B{n}", etag)
        )
        codes = sorted([a.status_code, b.status_code])
        if codes != [200, 409]:
            return [f"answers {codes}: {a.text[:200]} | {b.text[:200]}"]
        winner, loser = (a, b) if a.status_code == 200 else (b, a)
        problem = loser.json()
        if problem["type"] != "urn:orderflow:problem:stale-revision":
            wrong.append(f"409 of type {problem['type']}")
        if problem.get("current_etag") != winner.headers["etag"]:
            wrong.append(f"409 names {problem.get('current_etag')}, not the winner's ETag")
        if problem.get("current_revision") != 2 or "changed" not in problem["detail"]:
            wrong.append(f"409 does not say the order changed: {problem}")
        order = await orders.get(order_id)
        if (order["status"], order["current_revision"]) != ("changes_requested", 2):
            wrong.append(f"order is {order['status']} at revision {order['current_revision']}")
        if order["document"]["notes"] != winner.json()["document"]["notes"]:
            wrong.append("the stored document is not the one answered 200")
        revisions = await orders.revisions(order_id)
        if [(r["revision"], r["submitted_at"] is not None) for r in revisions] != [
            (1, True),
            (2, False),
        ]:
            wrong.append(f"revisions {revisions}")
        return wrong

    return trial


async def test_two_puts_with_one_etag(orders: Orders, amqp: Any) -> None:
    await run_trials("two PUTs with one ETag", DEFAULT_TRIALS, two_puts(orders, amqp))


@pytest.mark.slow
async def test_two_puts_with_one_etag_many(orders: Orders, amqp: Any) -> None:
    await run_trials("two PUTs with one ETag", SLOW_TRIALS, two_puts(orders, amqp))


# --- two revisions over the bus -----------------------------------------------------------


def two_bus_revisions(orders: Orders, amqp: Any, *, revises: bool) -> Trial:
    async def trial(n: int) -> list[str]:
        wrong: list[str] = []
        order_id = await orders.submitted()
        await send_event(amqp, changes_requested(order_id, 1))
        await orders.status(order_id, "changes_requested")
        sent = {}
        async with reply_queue(amqp) as queue:
            commands = []
            for side in ("A", "B"):
                sent[side] = f"{side}{n}"
                body: dict[str, Any] = {**orders.doc(sent[side]), "order_id": order_id}
                if revises:
                    body["revises"] = 1
                commands.append(send_revision(amqp, body, reply_to=queue.name, correlation_id=side))
            await asyncio.gather(*commands)
            got = await replies(queue, 2)
        answers = {m.correlation_id: SubmitOrderReply.model_validate_json(m.body) for m in got}
        accepted = [side for side, r in answers.items() if r.accepted]
        if len(accepted) != 1:
            return [f"{len(accepted)} accepted: {answers}"]
        [won] = accepted
        [lost] = set(answers) - {won}
        win, loss = answers[won], answers[lost]
        if (win.revision, win.status) != (2, "submitted"):
            wrong.append(f"accepted as {win.revision} {win.status}")
        if not loss.retryable or not (loss.reason or "").startswith("conflict"):
            wrong.append(f"the other is not a retryable conflict: {loss}")
        if loss.revision != 2 or str(loss.order_id) != order_id:
            wrong.append(f"the conflict names revision {loss.revision} of {loss.order_id}")
        order = await orders.get(order_id)
        if (order["status"], order["current_revision"], order["submitted_revision"]) != (
            "submitted",
            2,
            2,
        ):
            wrong.append(f"order {order['status']} {order['current_revision']}")
        if order["document"]["notes"] != sent[won]:
            wrong.append("the stored revision is not the accepted one")
        if len(await orders.revisions(order_id)) != 2:
            wrong.append("not exactly two revisions")
        if await queue_depth(amqp, topology.INTAKE_COMMANDS.dlq):
            wrong.append("a command was dead-lettered")
        return wrong

    return trial


async def test_two_bus_revisions(orders: Orders, amqp: Any) -> None:
    trial = two_bus_revisions(orders, amqp, revises=True)
    await run_trials("two bus revisions (revises)", DEFAULT_TRIALS, trial)


async def test_two_bus_revisions_without_revises(
    app: tuple[FastAPI, httpx.AsyncClient], orders: Orders, amqp: Any
) -> None:
    """The later one cannot be told from a revision answering a decision on its way: it waits
    for one (here 1 s), then it is a retryable conflict too."""
    application, _ = app
    settings = application.state.settings
    application.state.settings = settings.model_copy(update={"revision_decision_wait": 1.0})
    trial = two_bus_revisions(orders, amqp, revises=False)
    await run_trials("two bus revisions (no revises)", DEFAULT_TRIALS, trial)


@pytest.mark.slow
async def test_two_bus_revisions_many(orders: Orders, amqp: Any) -> None:
    trial = two_bus_revisions(orders, amqp, revises=True)
    await run_trials("two bus revisions (revises)", SLOW_TRIALS, trial)


# --- a revision sent at once after the change request ---------------------------------------


def revision_right_after(orders: Orders, amqp: Any) -> Trial:
    async def trial(n: int) -> list[str]:
        wrong: list[str] = []
        over_http, over_bus = await asyncio.gather(orders.submitted(), orders.submitted())
        for order_id in (over_http, over_bus):
            await send_event(amqp, round_opened(order_id, 1))
        for order_id in (over_http, over_bus):
            await orders.status(order_id, "in_review")
        etag = await orders.api.etag(over_http)

        # over HTTP: the PUT goes out together with the decision, nobody sleeps
        _, revised = await asyncio.gather(
            send_event(amqp, changes_requested(over_http, 1)),
            orders.put(over_http, f"http {n}", etag),
        )
        if revised.status_code != 200:
            wrong.append(f"PUT answered {revised.status_code}: {revised.text[:300]}")
        else:
            body = revised.json()
            if (body["status"], body["current_revision"]) != ("changes_requested", 2):
                wrong.append(f"PUT left {body['status']} at {body['current_revision']}")

        # over the bus: the command goes out together with the decision
        async with reply_queue(amqp) as queue:
            command = {**orders.doc(f"bus {n}"), "order_id": over_bus, "revises": 1}
            await asyncio.gather(
                send_event(amqp, changes_requested(over_bus, 1)),
                send_revision(amqp, command, reply_to=queue.name, correlation_id="now"),
            )
            [msg] = await replies(queue, 1)
        reply = SubmitOrderReply.model_validate_json(msg.body)
        if not reply.accepted or (reply.revision, reply.status) != (2, "submitted"):
            wrong.append(f"bus revision answered {reply}")
        order = await orders.get(over_bus)
        if (order["status"], order["current_revision"], order["submitted_revision"]) != (
            "submitted",
            2,
            2,
        ):
            wrong.append(f"bus order {order['status']} at {order['current_revision']}")
        if await queue_depth(amqp, topology.INTAKE_COMMANDS.dlq):
            wrong.append("a command was dead-lettered")
        return wrong

    return trial


async def test_revision_right_after_the_change_request(orders: Orders, amqp: Any) -> None:
    trial = revision_right_after(orders, amqp)
    await run_trials("revision right after the change request", DEFAULT_TRIALS, trial)


@pytest.mark.slow
async def test_revision_right_after_the_change_request_many(orders: Orders, amqp: Any) -> None:
    trial = revision_right_after(orders, amqp)
    await run_trials("revision right after the change request", SLOW_TRIALS, trial)


# --- events before their order or revision ------------------------------------------------


def early_events(app: FastAPI, orders: Orders, amqp: Any, monkeypatch: pytest.MonkeyPatch) -> Trial:
    # the order's id is intake's to choose; to have events come before it, the test knows
    # the id intake will give the next order
    next_ids: deque[uuid.UUID] = deque()
    real = uuid.uuid4
    monkeypatch.setattr(
        order_handlers,
        "uuid",
        SimpleNamespace(uuid4=lambda: next_ids.popleft() if next_ids else real()),
    )
    pool = app.state.runtime.pool

    async def kept(order_id: Any) -> int:
        return int(
            await pool.fetchval(
                "SELECT count(*) FROM pending_events WHERE order_id = $1", uuid.UUID(str(order_id))
            )
        )

    async def on_timeline(order_id: str, wanted: set[tuple[str, int | None]]) -> bool:
        entries = await orders.timeline(order_id)
        return wanted <= {(e["type"], e["revision"]) for e in entries}

    async def trial(n: int) -> list[str]:
        wrong: list[str] = []
        # before the order: published while the order is being created
        order_id = uuid.uuid4()
        next_ids.append(order_id)
        early = [delivered(order_id), verdict(order_id, 1)]
        created, *_ = await asyncio.gather(
            orders.client.post("/api/v1/orders", json=orders.doc(f"early {n}")),
            *(send_event(amqp, e) for e in early),
        )
        if created.status_code != 201 or created.json()["id"] != str(order_id):
            return [f"created {created.status_code} {created.text[:200]}"]
        wanted = {("notification.delivered", None), ("review.verdict_recorded", 1)}
        try:
            await eventually(lambda: on_timeline(str(order_id), wanted), interval=0.02)
        except AssertionError:
            wrong.append(f"timeline misses events: {await orders.timeline(str(order_id))}")
        if await kept(order_id):
            wrong.append("events still kept for an order that is here")
        if (await orders.get(str(order_id)))["status"] != "draft":
            wrong.append("the early events moved the draft")

        # before the revision: a verdict on revision 2 while revision 2 is being made
        sent_back = await orders.submitted()
        await send_event(amqp, changes_requested(sent_back, 1))
        await orders.status(sent_back, "changes_requested")
        etag = await orders.api.etag(sent_back)
        revised, *_ = await asyncio.gather(
            orders.put(sent_back, f"revised {n}", etag),
            send_event(amqp, verdict(sent_back, 2)),
            send_event(amqp, delivered(sent_back)),
        )
        if revised.status_code != 200:
            wrong.append(f"PUT answered {revised.status_code}")
        wanted = {
            ("order.changes_requested", 1),
            ("notification.delivered", None),
            ("review.verdict_recorded", 2),
        }
        try:
            await eventually(lambda: on_timeline(sent_back, wanted), interval=0.02)
        except AssertionError:
            wrong.append(f"timeline misses events: {await orders.timeline(sent_back)}")
        if await kept(sent_back):
            wrong.append("events still kept for a revision that is here")
        if (await orders.get(sent_back))["status"] != "changes_requested":
            wrong.append("the status moved")
        return wrong

    return trial


async def test_events_kept_until_their_order_and_revision_come(
    app: tuple[FastAPI, httpx.AsyncClient],
    orders: Orders,
    amqp: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a race: the events are seen kept first, then the order and the revision come."""
    application, _ = app
    pool = application.state.runtime.pool
    order_id = uuid.uuid4()
    monkeypatch.setattr(order_handlers, "uuid", SimpleNamespace(uuid4=lambda: order_id))

    async def kept(of: Any, count: int) -> bool:
        found = await pool.fetchval(
            "SELECT count(*) FROM pending_events WHERE order_id = $1", uuid.UUID(str(of))
        )
        return bool(found == count)

    await send_event(amqp, verdict(order_id, 1))
    await send_event(amqp, delivered(order_id))
    await eventually(lambda: kept(order_id, 2))
    created = await orders.api.create(orders.doc("late"))
    assert created["id"] == str(order_id) and created["status"] == "draft"
    # applied in the creation's transaction: on the timeline at once, in the order they were
    types = [(e["type"], e["revision"]) for e in await orders.timeline(str(order_id))]
    assert types == [
        ("review.verdict_recorded", 1),
        ("notification.delivered", None),
        ("order.created", 1),
    ]
    assert await kept(order_id, 0)
    monkeypatch.undo()

    # a verdict on revision 2 before revision 2 is made: kept, then applied by the PUT
    sent_back = await orders.submitted()
    await send_event(amqp, changes_requested(sent_back, 1))
    await orders.status(sent_back, "changes_requested")
    await send_event(amqp, verdict(sent_back, 2))
    await eventually(lambda: kept(sent_back, 1))
    revised = await orders.put(sent_back, "revised", await orders.api.etag(sent_back))
    assert revised.status_code == 200 and revised.json()["current_revision"] == 2
    entries = await orders.timeline(sent_back)
    assert ("review.verdict_recorded", 2) in {(e["type"], e["revision"]) for e in entries}
    assert await kept(sent_back, 0)


async def test_events_before_their_order(
    app: tuple[FastAPI, httpx.AsyncClient],
    orders: Orders,
    amqp: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    application, _ = app
    trial = early_events(application, orders, amqp, monkeypatch)
    await run_trials("events before their order", DEFAULT_TRIALS, trial)

    # an order that never comes here (another system's): its event is kept, and counted
    stranger = uuid.uuid4()
    await send_event(amqp, delivered(stranger))
    pool = application.state.runtime.pool

    async def kept() -> bool:
        return bool(
            await pool.fetchval("SELECT count(*) FROM pending_events WHERE order_id = $1", stranger)
        )

    await eventually(kept)
    assert await repository.count_pending_events(pool) == 1
    assert handlers.PENDING_EVENTS._value.get() == 1


@pytest.mark.slow
async def test_events_before_their_order_many(
    app: tuple[FastAPI, httpx.AsyncClient],
    orders: Orders,
    amqp: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    application, _ = app
    trial = early_events(application, orders, amqp, monkeypatch)
    await run_trials("events before their order", SLOW_TRIALS, trial)
