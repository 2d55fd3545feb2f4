"""The Node.js department system of docs/integration.md (examples/department-node), run as
its own `node` process with the department's provisioned RabbitMQ user against the router:
an integrator in another language can build from the guide, and what it sends is what the
guide says."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from orderflow import topology
from orderflow_testkit.testing import Infra, eventually, get_messages, publish, running
from review_router.main import create_app

from .test_router import Events, give, product_order, rounds, settings, submit, take

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "department-node"
# what the department sends, and what it is sent, seen beside the router's own queues
SENT = topology.QueueSpec("probe.node-verdicts", topology.VERDICTS, ("finance",))
ASKED = topology.QueueSpec("probe.node-requests", topology.REVIEWS, ("finance",))
ROUTER_QUEUE = "review-router.verdicts"


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (EXAMPLE / "node_modules" / "amqplib").is_dir():
        raise AssertionError(
            "Node.js and the example's packages are needed: scripts/test.sh installs them "
            "(install_node_example in scripts/lib.sh, npm ci)"
        )
    return node


@pytest.fixture
async def events(amqp: Any) -> Events:
    collected = Events(amqp)
    await collected.start()
    return collected


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


async def _router_queue_empty(infra: Infra) -> bool:
    """No verdict waiting for the router, none in its hands unacknowledged (asked of the
    broker itself, not of the management API's statistics, which lag)."""
    ctl = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        "list_queues",
        "-p",
        infra.vhost,
        "name",
        "messages",
        "messages_unacknowledged",
        "--formatter",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await ctl.communicate()
    assert ctl.returncode == 0, err.decode(errors="replace")
    [row] = [q for q in json.loads(out) if q["name"] == ROUTER_QUEUE]
    return bool(row["messages"] == 0 and row["messages_unacknowledged"] == 0)


async def test_the_node_department_system_reviews_for_finance(
    infra: Infra, amqp: Any, events: Events
) -> None:
    node = _node()
    user = infra.user("dept-finance")  # provisioned as `orderflow-bus add-department` does
    async with amqp.channel() as channel:
        await topology.declare(channel, [SENT, ASKED])
    async with running(create_app(settings(infra))) as router:
        example = await asyncio.create_subprocess_exec(
            node,
            str(EXAMPLE / "department.js"),
            "--amqp-url",
            infra.url_as("dept-finance"),
            "--department",
            "finance",
            "--max-total",
            "50000.00",
            cwd=EXAMPLE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert example.stdout is not None
        printed: list[dict[str, Any]] = []

        async def read_verdicts() -> None:
            assert example.stdout is not None
            async for line in example.stdout:
                printed.append(json.loads(line))

        reader = asyncio.create_task(read_verdicts())
        try:
            within = product_order(technical=False)  # 20769.40 CNY
            flanges = within.lines[0].model_copy(update={"quantity": Decimal("2000")})
            beyond = within.model_copy(update={"lines": [flanges, *within.lines[1:]]})
            ok = (await submit(amqp, within)).order_id
            big = (await submit(amqp, beyond)).order_id
            for review in await take(amqp, "supervisor", 2):
                await give(amqp, review)
            for review in await take(amqp, "production", 2):
                await give(amqp, review)

            # the round decided on the Node system's verdicts, one of them a change request
            [approved] = await events.wait("order.approved", ok, timeout=20)
            assert approved["approvals"][2]["reviewer"]["id"] == "finance.system"
            [changes] = await events.wait("order.changes_requested", big, timeout=20)
            assert changes["annotations"] == [
                {
                    "field": "/lines",
                    "message": "Total 194676.40 CNY is above 50000.00",
                    "severity": "major",
                }
            ]
            for order_id, outcome in ((ok, "approve"), (big, "request_changes")):
                [round_] = await rounds(router, order_id)
                [finance] = [v for v in round_["verdicts"] if v["department"] == "finance"]
                assert (finance["user_id"], finance["outcome"]) == (user, "accepted")
                assert finance["decision"] == outcome

            # what travelled: one annotation (for the big order) and two verdicts
            sent = await get_messages(amqp, SENT.name, 3)
            by_type: dict[str, list[aio_pika.abc.AbstractIncomingMessage]] = {}
            for message in sent:
                by_type.setdefault(str(message.type), []).append(message)
            assert sorted((t, len(m)) for t, m in by_type.items()) == [
                ("review.annotation", 1),
                ("review.verdict", 2),
            ]
            for message in sent:
                body = json.loads(message.body)
                assert message.routing_key == "finance" == body["department"]
                assert message.content_type == "application/json"
                assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
                assert message.user_id == user
                assert message.correlation_id == body["order_id"]
                assert uuid.UUID(str(message.message_id)).version == 5
                assert message.timestamp is not None  # seconds: within a minute of now
                assert abs((datetime.now(UTC) - message.timestamp).total_seconds()) < 60
                headers = {k: _text(v) for k, v in message.headers.items()}
                assert headers["x-schema"] == f"orderflow.{message.type}"
                assert headers["x-schema-version"] == "1"
                assert str(headers["traceparent"]).startswith("00-")
            [annotation] = by_type["review.annotation"]
            assert json.loads(annotation.body)["order_id"] == str(big)

            # a request delivered again (as after a crash before the acknowledgement): the
            # same verdict, under the same message id, which the router applies once
            [request] = [
                m
                for m in await get_messages(amqp, ASKED.name, 2)
                if json.loads(m.body)["order_id"] == str(ok)
            ]
            await publish(
                amqp,
                exchange=topology.REVIEWS,
                routing_key="finance",
                body=request.body,
                message_type=request.type,
                correlation_id=request.correlation_id,
                as_producer=False,
            )
            [again] = await get_messages(amqp, SENT.name, 1)
            [first] = [
                m for m in by_type["review.verdict"] if json.loads(m.body)["order_id"] == str(ok)
            ]
            assert (again.message_id, again.body) == (first.message_id, first.body)
            await eventually(lambda: len(printed) == 3)
            await eventually(lambda: _router_queue_empty(infra), timeout=20)
            [round_] = await rounds(router, ok)
            assert [v["department"] for v in round_["verdicts"]].count("finance") == 1
            recorded = [
                e for e in events.of("review.verdict_recorded", ok) if e["department"] == "finance"
            ]
            assert len(recorded) == 1
        finally:
            example.send_signal(signal.SIGTERM)
            await asyncio.wait_for(example.wait(), timeout=20)
            await asyncio.wait_for(reader, timeout=5)
            assert example.stderr is not None
            err = await example.stderr.read()
    assert example.returncode == 0, err.decode(errors="replace")
    assert sorted((p["order_id"], p["decision"]) for p in printed) == sorted(
        [(str(ok), "approve"), (str(big), "request_changes"), (str(ok), "approve")]
    )
