"""Dead-letter tooling on the real broker: list by queue and reason, replay after a fix,
discard with a note; from the command line and from a service's ops API."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from orderflow import deadletters, dlq_cli, refusals, topology
from orderflow.consumer import Delivery, PermanentError
from orderflow.db import Connection
from orderflow.http import create_service_app
from orderflow.messages import OrderWithdrawn
from orderflow.service import ServiceRuntime
from orderflow.settings import ServiceSettings
from orderflow_testkit.testing import Infra, eventually, get_messages, publish, queue_depth, running

QUEUE = topology.QueueSpec("probe.dlq-tools", topology.EVENTS, ("order.withdrawn",))


def probe_app(infra: Infra, applied: list[Any], broken: dict[str, bool]) -> Any:
    """A service whose consumer refuses orders while `broken` says so (a bug, then a fix)."""
    runtime = ServiceRuntime(
        service="probe",
        schema="probe",
        package="orderflow",
        settings=ServiceSettings(
            database_url=infra.database_url,
            amqp_url=infra.amqp_url,
            # a probe, not one of the services: it runs as the test administrator
            orderflow_allow_guest=True,
        ),
        queues=[QUEUE],
        declares_dead_letter_queues=True,
    )

    async def on_withdrawn(conn: Connection, event: OrderWithdrawn, _: Delivery) -> None:
        if broken["yes"]:
            raise PermanentError(f"order {event.order_id} unknown", code=refusals.UNKNOWN_ORDER)
        applied.append(event.order_id)

    # a probe's queue is of no contract: no producer to check
    runtime.consume(QUEUE, on_withdrawn, check_producer=False)
    return create_service_app(runtime, title="probe", description="probe")


async def send(amqp: Any, event: OrderWithdrawn) -> str:
    return await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key="order.withdrawn",
        body=event.model_dump_json().encode(),
        message_type="order.withdrawn",
        correlation_id=str(event.order_id),
    )


def withdrawn() -> OrderWithdrawn:
    return OrderWithdrawn(order_id=uuid.uuid4(), revision=1, withdrawn_at=datetime.now(UTC))


async def test_list_replay_and_discard_over_the_ops_api(infra: Infra, amqp: Any) -> None:
    applied: list[Any] = []
    broken = {"yes": True}
    async with running(probe_app(infra, applied, broken)) as client:
        events = [withdrawn() for _ in range(3)]
        ids = [await send(amqp, e) for e in events]
        await eventually(lambda: _depth_is(amqp, QUEUE.dlq, 3))

        listed = (await client.get("/ops/dead-letters")).json()
        assert sorted(d["message_id"] for d in listed) == sorted(ids)
        assert all(d["queue"] == QUEUE.name for d in listed)
        assert all("unknown" in d["reason"] for d in listed)
        assert all(d["code"] == refusals.UNKNOWN_ORDER for d in listed)
        by_code = await client.get("/ops/dead-letters", params={"code": refusals.UNKNOWN_ORDER})
        assert len(by_code.json()) == 3
        other = await client.get("/ops/dead-letters", params={"code": refusals.NOT_JSON})
        assert other.json() == []
        # listing took nothing away
        assert await queue_depth(amqp, QUEUE.dlq) == 3
        only = await client.get("/ops/dead-letters", params={"reason": str(events[0].order_id)})
        assert [d["message_id"] for d in only.json()] == [ids[0]]

        broken["yes"] = False  # the fix is deployed
        replayed = await client.post(
            f"/ops/dead-letters/{QUEUE.dlq}/replay", json={"message_ids": [ids[0], ids[1]]}
        )
        assert sorted(replayed.json()["replayed"]) == sorted(ids[:2])
        await eventually(
            lambda: sorted(map(str, applied)) == sorted(str(e.order_id) for e in events[:2])
        )

        refused = await client.post(
            f"/ops/dead-letters/{QUEUE.dlq}/discard", json={"message_ids": [ids[2]]}
        )
        assert refused.status_code == 422  # a note is required
        typo = await client.post(
            f"/ops/dead-letters/{QUEUE.dlq}/discard",
            json={"message_ids": [ids[2]], "note": "test order, cancelled", "by": "ops"},
        )
        assert typo.status_code == 422  # and a field it does not have is refused
        dropped = await client.post(
            f"/ops/dead-letters/{QUEUE.dlq}/discard",
            json={"message_ids": [ids[2]], "note": "test order, cancelled"},
        )
        assert dropped.json()["discarded"] == [ids[2]]
        assert await queue_depth(amqp, QUEUE.dlq) == 0
        [archived] = await get_messages(amqp, deadletters.DISCARDED, 1)
        record = json.loads(archived.body)
        assert record["note"] == "test order, cancelled"
        assert record["message_id"] == ids[2]
        assert "unknown" in record["reason"]
        assert len(applied) == 2


async def test_command_line_lists_and_replays(
    infra: Infra, amqp: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    applied: list[Any] = []
    broken = {"yes": True}
    async with running(probe_app(infra, applied, broken)):
        event = withdrawn()
        mid = await send(amqp, event)
        await eventually(lambda: _depth_is(amqp, QUEUE.dlq, 1))

        args = ["--amqp-url", infra.amqp_url]
        assert (
            await dlq_cli._run(dlq_cli._parser().parse_args([*args, "list", "--queue", QUEUE.dlq]))
            == 0
        )
        out = capsys.readouterr().out
        assert mid in out
        assert f"\t{refusals.UNKNOWN_ORDER}\t" in out
        listing = [*args, "--json", "list", "--queue", QUEUE.dlq, "--code"]
        assert await dlq_cli._run(dlq_cli._parser().parse_args([*listing, "not_json"])) == 0
        assert json.loads(capsys.readouterr().out) == []
        code = refusals.UNKNOWN_ORDER
        assert await dlq_cli._run(dlq_cli._parser().parse_args([*listing, code])) == 0
        assert [d["message_id"] for d in json.loads(capsys.readouterr().out)] == [mid]

        broken["yes"] = False
        code = await dlq_cli._run(
            dlq_cli._parser().parse_args([*args, "replay", QUEUE.dlq, "--all"])
        )
        assert code == 0
        await eventually(lambda: applied == [event.order_id])
        assert await queue_depth(amqp, QUEUE.dlq) == 0


async def _depth_is(amqp: Any, queue: str, n: int) -> bool:
    return await queue_depth(amqp, queue) == n
