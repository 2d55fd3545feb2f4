"""The bus trusts nobody by default, on the real broker: each user may do only what its
part needs (RabbitMQ refuses the rest), and a message the broker let through but the wrong
party sent changes nothing and lands in its queue's `.dlq` with the reason."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from orderflow import busaccess, topology
from orderflow.deadletters import replay
from orderflow.messages import OrderApproved, Totals
from orderflow_testkit.testing import (
    Infra,
    bearer,
    example_order,
    get_messages,
    issue_key_for,
    publish,
    queue_depth,
    service_processes,
    take_review,
    wait_status,
)

REFUSED = aiormq.exceptions.ChannelAccessRefused


@asynccontextmanager
async def connected(infra: Infra, role: str) -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(infra.url_as(role))
    try:
        yield connection
    finally:
        await connection.close()


async def refused(connection: AbstractConnection, act: Callable[[AbstractChannel], Any]) -> str:
    """Run `act` on a fresh channel; the broker must close it with ACCESS_REFUSED."""
    channel = await connection.channel(publisher_confirms=True)
    with pytest.raises(REFUSED) as caught:
        await act(channel)
    return str(caught.value)


async def publish_on(channel: AbstractChannel, exchange: str, key: str, user: str) -> None:
    target = await channel.get_exchange(exchange, ensure=False) if exchange else None
    await (target or channel.default_exchange).publish(
        aio_pika.Message(b"{}", type=key, user_id=user, message_id=str(uuid.uuid4())),
        routing_key=key,
    )


async def test_a_department_reads_only_its_own_queue_and_sends_only_verdicts(
    infra: Infra,
) -> None:
    user = infra.user("dept-production")
    async with connected(infra, "dept-production") as production:
        # its own queue: fine
        async with production.channel() as channel:
            own = await channel.declare_queue("review.production", passive=True)
            assert await own.get(fail=False) is None
        # another department's queue: neither read, nor purged, nor deleted
        other = "review.finance"

        async def read_other(ch: AbstractChannel) -> None:
            await (await ch.declare_queue(other, passive=True)).get(fail=False)

        async def purge_other(ch: AbstractChannel) -> None:
            await (await ch.declare_queue("review.technical", passive=True)).purge()

        async def delete_own(ch: AbstractChannel) -> None:
            await ch.queue_delete("review.production")

        async def bind_spy(ch: AbstractChannel) -> None:
            queue = await ch.declare_queue("review.production", passive=True)
            await queue.bind(topology.EVENTS, routing_key="#")

        async def declare_spy(ch: AbstractChannel) -> None:
            await ch.declare_queue("review.production.spy")

        async def forge_event(ch: AbstractChannel) -> None:
            await publish_on(ch, topology.EVENTS, "order.approved", user)

        async def straight_into_a_queue(ch: AbstractChannel) -> None:
            await publish_on(ch, "", "contracts.order-approved", user)

        reasons = [
            await refused(production, act)
            for act in (
                read_other,
                purge_other,
                delete_own,
                bind_spy,
                declare_spy,
                forge_event,
                straight_into_a_queue,
            )
        ]
        assert all("ACCESS_REFUSED" in r for r in reasons), reasons
        assert f"queue '{other}'" in reasons[0] and f"user '{user}'" in reasons[0]
        assert "exchange 'orderflow.events'" in reasons[5]
        assert "exchange 'amq.default'" in reasons[6]
        # and what it is there for: a verdict on orderflow.verdicts is accepted by the broker
        async with production.channel(publisher_confirms=True) as channel:
            await publish_on(channel, topology.VERDICTS, "production", user)


async def test_a_service_publishes_only_its_own_event_types(infra: Infra) -> None:
    async with connected(infra, "contracts") as contracts:
        user = infra.user("contracts")
        # its own: fine (the message waits in the notifier's and intake's queues)
        async with contracts.channel(publisher_confirms=True) as channel:
            await publish_on(channel, topology.EVENTS, "contract.drafted", user)

        async def approve(ch: AbstractChannel) -> None:
            await publish_on(ch, topology.EVENTS, "order.approved", user)

        async def submit(ch: AbstractChannel) -> None:
            await publish_on(ch, topology.EVENTS, "order.submitted", user)

        async def spy_on_everything(ch: AbstractChannel) -> None:
            queue = await ch.declare_queue(topology.CONTRACTS_APPROVED.name, passive=True)
            await queue.bind(topology.EVENTS, routing_key="#")

        async def read_another_service(ch: AbstractChannel) -> None:
            await (await ch.declare_queue(topology.NOTIFIER_APPROVED.name, passive=True)).get()

        async def as_someone_else(ch: AbstractChannel) -> None:
            await publish_on(ch, topology.EVENTS, "contract.drafted", infra.user("intake"))

        for act in (approve, submit, spy_on_everything, read_another_service):
            reason = await refused(contracts, act)
            assert "ACCESS_REFUSED" in reason, reason
        # a user_id other than the connection's own: the broker refuses it too
        channel = await contracts.channel(publisher_confirms=True)
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await as_someone_else(channel)


async def test_a_listener_and_a_submitter_get_only_their_own_part(infra: Infra) -> None:
    listener = infra.user("listener")
    async with connected(infra, "listener") as connection:
        async with connection.channel() as channel:
            queue = await channel.declare_queue(f"{listener}.approved", auto_delete=True)
            await queue.bind(topology.EVENTS, routing_key="order.approved")

        async def bind_wildcard(ch: AbstractChannel) -> None:
            own = await ch.declare_queue(f"{listener}.approved", passive=True)
            await own.bind(topology.EVENTS, routing_key="#")

        async def publish_event(ch: AbstractChannel) -> None:
            await publish_on(ch, topology.EVENTS, "order.approved", listener)

        for act in (bind_wildcard, publish_event):
            assert "ACCESS_REFUSED" in await refused(connection, act)

    submitter = infra.user("submitter")
    async with connected(infra, "submitter") as connection:

        async def foreign_queue(ch: AbstractChannel) -> None:
            await ch.declare_queue("intake.commands.spy")

        async def publish_event(ch: AbstractChannel) -> None:
            await publish_on(ch, topology.EVENTS, "order.submitted", submitter)

        for act in (foreign_queue, publish_event):
            assert "ACCESS_REFUSED" in await refused(connection, act)


# --- forged messages change nothing ------------------------------------------------------


def _wrong_producer(message_type: str) -> str:
    """A service whose user may write to the default exchange but did not produce this."""
    return "contracts" if busaccess.EVENT_PRODUCERS.get(message_type) == "intake" else "intake"


async def forge(
    infra: Infra, role: str, queue: str, message_type: str, body: bytes, **props: Any
) -> str:
    """Straight into `queue` through the default exchange, as `role` (its own user_id)."""
    mid = str(uuid.uuid4())
    async with (
        connected(infra, role) as connection,
        connection.channel(publisher_confirms=True) as channel,
    ):
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                message_id=mid,
                type=message_type,
                user_id=infra.user(role),
                content_type="application/json",
                **props,
            ),
            routing_key=queue,
            mandatory=True,
        )
    return mid


async def dead_letter(amqp: AbstractConnection, queue: str) -> AbstractIncomingMessage:
    [message] = await get_messages(amqp, topology.dead_letter_queue_name(queue), 1, timeout=30)
    return message


def reason_of(message: AbstractIncomingMessage) -> str:
    value = (message.headers or {})["x-orderflow-reason"]
    return value.decode() if isinstance(value, bytes) else str(value)


def approval_of(review: Any) -> OrderApproved:
    return OrderApproved(
        order_id=review.order_id,
        revision=review.revision,
        order=review.order,
        totals=Totals.of(review.order),
        approvals=[],
        approved_at=datetime.now(UTC),
        attachments=[],
    )


@pytest.mark.timeout(240)
async def test_messages_from_the_wrong_producer_change_nothing(
    infra: Infra, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    async with service_processes(infra, tmp_path) as services:
        key = bearer(await issue_key_for(infra.database_url))
        clients = [
            httpx.AsyncClient(base_url=services[name].url, timeout=10, headers=key)
            for name in ("intake", "contracts", "notifier")
        ]
        try:
            await _forged_approval(infra, amqp, *clients)
            await _every_consumed_type(infra, amqp)
        except BaseException:
            for s in services.values():
                print(f"----- {s.name} -----\n{s.log_tail(60)}")
            raise
        finally:
            for client in clients:
                await client.aclose()


async def _forged_approval(
    infra: Infra,
    amqp: AbstractConnection,
    intake: httpx.AsyncClient,
    contracts: httpx.AsyncClient,
    notifier: httpx.AsyncClient,
) -> None:
    # without technical requirements, so it needs no file and goes in one step
    order = {**example_order("order-product"), "technical_requirements": None}
    created = await intake.post("/api/v1/orders", params={"submit": "true"}, json=order)
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    review = await take_review(amqp, "supervisor")
    await wait_status(intake, order_id, "in_review")

    # a well-formed approval of the order in review, from intake's user instead of the router's
    body = approval_of(review).model_dump_json().encode()
    forger, router = infra.user("intake"), infra.user("review-router")
    queues = [
        topology.CONTRACTS_APPROVED.name,
        topology.NOTIFIER_APPROVED.name,
        topology.INTAKE_PROJECTION.name,
    ]
    for queue in queues:
        await forge(infra, "intake", queue, "order.approved", body)
    for queue in queues:
        reason = reason_of(await dead_letter(amqp, queue))
        assert reason == (
            f"order.approved from user {forger} refused: only {router} may publish it"
        ), reason
    # and without any user_id (the broker vouches for nobody): refused as well
    await publish(
        amqp,
        exchange="",
        routing_key=topology.CONTRACTS_APPROVED.name,
        body=body,
        message_type="order.approved",
        as_producer=False,
    )
    reason = reason_of(await dead_letter(amqp, topology.CONTRACTS_APPROVED.name))
    assert reason.startswith("order.approved without user_id refused: it must be published by")
    assert router in reason

    # the dead letters were the last thing each consumer did: nothing changed
    assert (await intake.get(f"/api/v1/orders/{order_id}")).json()["status"] == "in_review"
    listing = (await contracts.get("/api/v1/contracts", params={"order_id": order_id})).json()
    assert (listing["items"] if isinstance(listing, dict) else listing) == []
    salesperson = review.order.salesperson.id
    inbox = (await notifier.get(f"/api/v1/inbox/{salesperson}")).json()
    assert [n["title"] for n in inbox["items"]] == []


async def _every_consumed_type(infra: Infra, amqp: AbstractConnection) -> None:
    sent: list[tuple[str, str, str]] = []
    for specs in busaccess.OWN_QUEUES.values():
        for spec in specs:
            accepted = busaccess.accepted_types(spec) or tuple(busaccess.EVENT_PRODUCERS)
            kind = sorted(accepted)[0]
            role = _wrong_producer(kind)
            await forge(infra, role, spec.name, kind, b"{}", reply_to="nobody.replies")
            sent.append((spec.name, kind, infra.user(role)))
    for queue, kind, user in sent:
        reason = reason_of(await dead_letter(amqp, queue))
        assert reason.startswith(f"{kind} from user {user} refused: only "), (queue, reason)
        assert await queue_depth(amqp, queue) == 0


async def test_a_replay_by_the_service_keeps_the_original_producer(
    infra: Infra, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    queue = topology.CONTRACTS_APPROVED.name
    async with service_processes(infra, tmp_path, names=("contracts",)):
        # the router's message, dead-lettered for its body: a replay as contracts is heard
        # (and fails on the body again), one forged by intake stays refused
        mid = await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key="order.approved",
            body=json.dumps({"order_id": "not-a-uuid"}).encode(),
            message_type="order.approved",
        )
        first = await dead_letter(amqp, queue)
        assert reason_of(first).startswith("invalid message"), reason_of(first)
        assert _header(first, busaccess.ORIGINAL_USER) == infra.user("review-router")
        assert first.user_id == infra.user("contracts")
        await _replay_as(infra, "contracts", queue, first, mid)
        again = await dead_letter(amqp, queue)
        assert reason_of(again).startswith("invalid message"), reason_of(again)
        assert _header(again, busaccess.ORIGINAL_USER) == infra.user("review-router")

        forged = await forge(infra, "intake", queue, "order.approved", b"{}")
        refused_once = await dead_letter(amqp, queue)
        await _replay_as(infra, "contracts", queue, refused_once, forged)
        refused_again = await dead_letter(amqp, queue)
        assert reason_of(refused_again) == (
            f"order.approved from user {infra.user('contracts')} (replaying "
            f"{infra.user('intake')!r}) refused: only {infra.user('review-router')} may publish it"
        )


def _header(message: AbstractIncomingMessage, name: str) -> str:
    value = (message.headers or {}).get(name)
    return value.decode() if isinstance(value, bytes) else str(value)


async def _replay_as(
    infra: Infra, role: str, queue: str, taken: AbstractIncomingMessage, message_id: str
) -> None:
    """Put the dead letter back and replay it with the service's own credentials."""
    async with connected(infra, role) as connection:
        async with connection.channel(publisher_confirms=True) as channel:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    taken.body,
                    headers=dict(taken.headers or {}),
                    message_id=taken.message_id,
                    type=taken.type,
                    user_id=infra.user(role),
                ),
                routing_key=topology.dead_letter_queue_name(queue),
            )
        replayed = await replay(connection, topology.dead_letter_queue_name(queue))
    assert replayed == [message_id]
