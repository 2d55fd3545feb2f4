"""The example department service of docs/integration.md, run as its own process with its
own RabbitMQ user against the router: what the guide shows works."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from orderflow.messages import Payment
from orderflow_testkit.testing import Infra, Servers, eventually, running
from review_router.main import create_app

from .test_router import Events, give, product_order, rounds, settings, submit, take
from .test_verdict_users import department_users

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "department_service" / "main.py"


@pytest.fixture
async def events(amqp: Any) -> Events:
    collected = Events(amqp)
    await collected.start()
    return collected


async def test_the_example_department_service_reviews_for_finance(
    servers: Servers, infra: Infra, amqp: Any, events: Events, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    with department_users(servers, infra, prefix, ["finance"]) as users:
        config = settings(infra, verdict_user_pattern=prefix + "{department}")
        async with running(create_app(config)) as router:
            example = await asyncio.create_subprocess_exec(
                sys.executable,
                str(EXAMPLE),
                "--amqp-url",
                users["finance"].url,
                "--department",
                "finance",
                "--max-settlement-days",
                "45",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                within = product_order(technical=False)
                beyond = within.model_copy(update={"payment": Payment(settlement_days=90)})
                ok = (await submit(amqp, within)).order_id
                late = (await submit(amqp, beyond)).order_id
                for review in await take(amqp, "supervisor", 2):
                    await give(amqp, review)
                for review in await take(amqp, "production", 2):
                    await give(amqp, review)

                [approved] = await events.wait("order.approved", ok, timeout=30)
                assert approved["approvals"][2]["reviewer"]["id"] == "finance.system"
                [changes] = await events.wait("order.changes_requested", late, timeout=30)
                assert changes["annotations"] == [
                    {
                        "field": "/payment/settlement_days",
                        "message": "Settlement in 90 days; at most 45 without approval",
                        "severity": "blocker",
                    }
                ]
                [round_] = await rounds(router, late)
                [finance] = [v for v in round_["verdicts"] if v["department"] == "finance"]
                assert finance["user_id"] == users["finance"].name

                # the annotation it posted while reviewing was received too, and listed once:
                # before the verdict it is accepted; after it, the review is already answered
                # (duplicate) or the round decided (round_closed); the two travel apart, so
                # any of these orders is right
                async def noted() -> list[dict[str, Any]] | None:
                    review = (await router.get(f"/api/v1/reviews/{finance['review_id']}")).json()
                    found: list[dict[str, Any]] = review["annotations"]
                    return found or None

                [annotation] = await eventually(noted)
                assert annotation["outcome"] in ("accepted", "duplicate", "round_closed")
                assert annotation["user_id"] == users["finance"].name
            finally:
                example.send_signal(signal.SIGTERM)
                out, err = await asyncio.wait_for(example.communicate(), timeout=30)
        assert example.returncode == 0, err.decode(errors="replace")
        printed = [json.loads(line) for line in out.decode().splitlines()]
        assert {(p["order_id"], p["decision"]) for p in printed} == {
            (str(ok), "approve"),
            (str(late), "request_changes"),
        }
