"""The router's formats as a department system in another language meets them, against the
real broker: a verdict with a field the contract does not know is refused (dead-lettered,
the field named), not read as if the field were not there; every time it writes, on the bus
and over HTTP, is written one way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orderflow import topology
from orderflow.messages import Reviewer, VerdictGiven
from orderflow_testkit.testing import (
    Infra,
    badly_written_times,
    get_messages,
    publish,
    running,
    times_in,
)
from review_router.main import create_app

from .test_router import (
    VERDICTS_DLQ,
    Events,
    give,
    rounds,
    service_order,
    settings,
    submit,
    take,
)


@pytest.fixture
async def events(amqp: Any) -> Events:
    collected = Events(amqp)
    await collected.start()
    return collected


@pytest.fixture
async def router(infra: Infra, events: Events) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings(infra))) as client:
        yield client


async def test_a_verdict_with_an_unknown_field_is_dead_lettered_naming_it(
    amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    oid = (await submit(amqp, service_order())).order_id
    [review] = await take(amqp, "supervisor")
    verdict = VerdictGiven(
        review_id=review.review_id,
        order_id=review.order_id,
        revision=review.revision,
        department=review.department,
        decision="approve",
        reviewer=Reviewer(id="supervisor.lead"),
    ).model_dump(mode="json")

    async def send(body: dict[str, Any]) -> str:
        return await publish(
            amqp,
            exchange=topology.VERDICTS,
            routing_key="supervisor",
            body=json.dumps(body).encode(),
            message_type=VerdictGiven.message_type,
            correlation_id=str(oid),
            user_id=amqp.url.user,
        )

    # a typo of a field name, and a field of a newer contract than the router's
    typo = await send({**verdict, "coment": "fine by me"})
    nested = await send({**verdict, "reviewer": {"id": "supervisor.lead", "title": "Head"}})
    dead = {m.message_id: m for m in await get_messages(amqp, VERDICTS_DLQ, 2)}
    assert set(dead) == {typo, nested}
    for message_id, field in ((typo, "coment"), (nested, "reviewer/title")):
        reason = str(dead[message_id].headers["x-orderflow-reason"])
        assert field in reason, reason
        assert dead[message_id].headers["x-orderflow-queue"] == "review-router.verdicts"

    # neither was taken as the approval: the round waits for one the router can read
    [round_] = await rounds(router, oid)
    assert round_["verdicts"] == [] and round_["current_stage"] == 1
    await give(amqp, review)
    [recorded] = await events.wait("review.verdict_recorded", oid)
    assert recorded["review_id"] == str(review.review_id)


async def test_every_time_the_router_writes_is_written_one_way(
    amqp: Any, events: Events, router: httpx.AsyncClient
) -> None:
    oid = (await submit(amqp, service_order())).order_id
    [review] = await take(amqp, "supervisor")
    assert badly_written_times(json.loads(review.model_dump_json())) == []
    await give(amqp, review)
    await events.wait("review.verdict_recorded", oid)
    [finance] = await take(amqp, "finance")
    assert finance.order_id == oid

    written = [json.loads(m.body) for m in events.messages(oid)]
    assert {"review.round_opened", "review.sent", "review.verdict_recorded"} <= {
        m.type for m in events.messages(oid)
    }
    for path in (
        f"/api/v1/rounds?order_id={oid}",
        f"/api/v1/reviews/{review.review_id}",
    ):
        response = await router.get(path)
        assert response.status_code == 200, response.text
        written.append(response.json())
    assert all(times_in(body) for body in written)
    assert [badly_written_times(body) for body in written] == [[]] * len(written)
