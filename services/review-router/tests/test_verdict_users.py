"""Authenticated verdicts on the real broker: each department connects as its own RabbitMQ
user, which may only publish to `orderflow.verdicts` and read its own queue; the router
accepts a department message only from the user that speaks for that department."""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import aiormq
import httpx
import pytest

from orderflow import topology
from orderflow.messages import Decision, Reviewer, ReviewRequested, VerdictGiven
from orderflow_testkit.testing import Infra, Servers, eventually, get_messages, publish, running
from review_router.main import create_app

from .test_router import (
    VERDICTS_DLQ,
    Events,
    product_order,
    rounds,
    settings,
    simulating,
    submit,
    take,
)


@dataclass(frozen=True)
class DepartmentUser:
    name: str
    department: str
    url: str


def _api(servers: Servers) -> tuple[str, tuple[str, str]]:
    if not servers.management_api:
        raise AssertionError(
            "these tests need the RabbitMQ management API (ORDERFLOW_TEST_RABBITMQ_API)"
        )
    parts = urlsplit(servers.management_api)
    base = urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port or 15672}", "", "", ""))
    return base, (parts.username or "guest", parts.password or "guest")


@contextlib.contextmanager
def department_users(
    servers: Servers, infra: Infra, prefix: str, departments: Sequence[str]
) -> Iterator[dict[str, DepartmentUser]]:
    """RabbitMQ users `<prefix><department>` with the permissions of deploy/rabbitmq:
    configure nothing, write only `orderflow.verdicts`, read only `review.<department>`."""
    base, auth = _api(servers)
    vhost = quote(infra.vhost, safe="")
    made: dict[str, DepartmentUser] = {}
    amqp = urlsplit(infra.amqp_url)
    with httpx.Client(base_url=base, auth=auth, timeout=30) as client:
        try:
            for department in departments:
                name = f"{prefix}{department}"
                password = secrets.token_urlsafe(12)
                client.put(
                    f"/api/users/{quote(name, safe='')}", json={"password": password, "tags": ""}
                ).raise_for_status()
                client.put(
                    f"/api/permissions/{vhost}/{quote(name, safe='')}",
                    json={
                        "configure": "^$",
                        "write": r"^orderflow\.verdicts$",
                        "read": rf"^review\.{department}$",
                    },
                ).raise_for_status()
                credentials = f"{quote(name, safe='')}:{quote(password, safe='')}"
                netloc = f"{credentials}@{amqp.hostname}:{amqp.port or 5672}"
                made[department] = DepartmentUser(
                    name=name,
                    department=department,
                    url=urlunsplit((amqp.scheme, netloc, amqp.path, "", "")),
                )
            yield made
        finally:
            for user in made.values():
                client.delete(f"/api/users/{quote(user.name, safe='')}")


def verdict_for(
    review: ReviewRequested, decision: Decision = Decision.APPROVE, **change: Any
) -> VerdictGiven:
    return VerdictGiven(
        review_id=review.review_id,
        order_id=review.order_id,
        revision=review.revision,
        department=review.department,
        decision=decision,
        reviewer=Reviewer(id=f"{review.department}.system"),
    ).model_copy(update=change)


async def send_as(
    connection: aio_pika.abc.AbstractConnection,
    verdict: VerdictGiven,
    *,
    user_id: str | None,
) -> None:
    """Publish on a department's own connection (it may not declare the exchange)."""
    async with connection.channel(publisher_confirms=True, on_return_raises=True) as channel:
        exchange = await channel.get_exchange(topology.VERDICTS, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                verdict.model_dump_json().encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=str(uuid.uuid4()),
                type=verdict.message_type,
                correlation_id=str(verdict.order_id),
                user_id=user_id,
            ),
            routing_key=verdict.department,
            mandatory=True,
        )


@pytest.fixture
async def events(amqp: Any) -> Events:
    collected = Events(amqp)
    await collected.start()
    return collected


@contextlib.asynccontextmanager
async def connected(user: DepartmentUser) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(user.url)
    try:
        yield connection
    finally:
        await connection.close()


async def test_only_the_department_user_speaks_for_its_department(
    servers: Servers, infra: Infra, amqp: Any, events: Events
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    with department_users(servers, infra, prefix, ["supervisor", "finance"]) as users:
        config = settings(
            infra,
            require_verdict_user=True,
            verdict_user_pattern=prefix + "{department}",
            # the test's own user stands in for the console, answering for production
            verdict_acting_users=[amqp.url.user],
        )
        supervisor_user, finance_user = users["supervisor"], users["finance"]
        async with (
            running(create_app(config)) as router,
            connected(supervisor_user) as supervisor_system,
            connected(finance_user) as finance_system,
        ):
            oid = (await submit(amqp, product_order(technical=False))).order_id
            # each department system reads its own queue
            [supervisor] = await take_as(supervisor_system, "supervisor")
            await send_as(supervisor_system, verdict_for(supervisor), user_id=supervisor_user.name)
            [finance] = await take_as(finance_system, "finance")
            [production] = await take(amqp, "production")

            # RabbitMQ itself refuses a user_id that is not the connection's user
            with pytest.raises(Exception, match="user_id") as refused:
                await send_as(finance_system, verdict_for(finance), user_id=supervisor_user.name)
            assert "PRECONDITION" in type(refused.value).__name__.upper() or "406" in str(
                refused.value
            )
            # finance's user may not speak for production: the router refuses it
            await send_as(finance_system, verdict_for(production), user_id=finance_user.name)
            # a verdict without user_id proves nothing about its sender
            await send_as(amqp, verdict_for(finance, Decision.REQUEST_CHANGES), user_id=None)
            # a department's user reads only its own queue and writes only verdicts
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await take_as(finance_system, "supervisor")
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await publish_event_as(finance_system)

            dead = await get_messages(amqp, VERDICTS_DLQ, 2)
            by_code = {
                str(m.headers["x-orderflow-reason-code"]): str(m.headers["x-orderflow-reason"])
                for m in dead
            }
            assert sorted(by_code) == ["missing_user_id", "wrong_department"]
            reasons = [by_code["wrong_department"], by_code["missing_user_id"]]
            assert reasons[0] == (
                f"verdict refused: RabbitMQ user '{finance_user.name}' speaks "
                "for finance, not production: /department: user "
                f"'{finance_user.name}' may act for finance only"
            )
            # refused before the router looks at it: nobody vouches for the sender
            assert reasons[1].startswith(
                "review.verdict without user_id refused: it must be published by "
            ), reasons[1]
            assert finance_user.name in reasons[1] and "AMQP user_id" in reasons[1]
            assert {json.loads(m.body)["review_id"] for m in dead} == {
                str(production.review_id),
                str(finance.review_id),
            }

            # the right users, with their own user_id, are heard
            await send_as(finance_system, verdict_for(finance), user_id=finance_user.name)
            await publish(
                amqp,
                exchange=topology.VERDICTS,
                routing_key="production",
                body=verdict_for(production).model_dump_json().encode(),
                message_type=VerdictGiven.message_type,
                user_id=amqp.url.user,
            )
            await events.wait("order.approved", oid)
            [round_] = await rounds(router, oid)
            assert {v["department"]: v["user_id"] for v in round_["verdicts"]} == {
                "supervisor": supervisor_user.name,
                "finance": finance_user.name,
                "production": amqp.url.user,
            }
            assert [v["outcome"] for v in round_["verdicts"]] == ["accepted"] * 3


async def publish_event_as(connection: aio_pika.abc.AbstractConnection) -> None:
    async with connection.channel() as channel:
        exchange = await channel.get_exchange(topology.EVENTS, ensure=False)
        await exchange.publish(
            aio_pika.Message(b"{}", type="order.approved"), routing_key="order.approved"
        )


async def take_as(
    connection: aio_pika.abc.AbstractConnection, department: str
) -> list[ReviewRequested]:
    """A department system taking its next review request from its own queue."""
    async with connection.channel() as channel:
        queue = await channel.get_queue(f"review.{department}", ensure=False)

        async def one() -> aio_pika.abc.AbstractIncomingMessage | None:
            return await queue.get(fail=False, no_ack=True)

        message = await eventually(one, timeout=15)
    assert message.type == "review.requested"
    return [ReviewRequested.model_validate_json(message.body)]


async def test_the_simulator_answers_as_each_department_user(
    servers: Servers, infra: Infra, amqp: Any, events: Events
) -> None:
    departments = ["supervisor", "production", "finance"]
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    with department_users(servers, infra, prefix, departments) as users:
        config = settings(
            infra, verdict_user_pattern=prefix + "{department}", verdict_acting_users=[]
        )
        async with (
            running(create_app(config)) as router,
            simulating(
                infra,
                departments=tuple(departments),
                department_urls={d: u.url for d, u in users.items()},
                seed=3,
            ) as simulator,
        ):
            oid = (await submit(amqp, product_order(technical=False))).order_id
            await events.wait("order.approved", oid, timeout=30)
            [round_] = await rounds(router, oid)
            assert {v["department"]: v["user_id"] for v in round_["verdicts"]} == {
                d: users[d].name for d in departments
            }
        assert simulator.stats["approve"] == 3
