"""Delivery: retries with back-off, failure after the last attempt, an operator's retry,
slow receivers kept away from the other channels, robots' rate limits, quiet hours."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, Response

from orderflow_testkit.testing import eventually


def generic_hook(receiver: Any, path: str = "/hook") -> dict[str, Any]:
    return {"kind": "webhook", "url": receiver.url(path), "secret": "s3cret"}


def one_person(channels: list[str], **hooks: Any) -> dict[str, Any]:
    return {
        "people": [{"id": "zhang.wei", "name": "张伟", "channels": channels}],
        "webhooks": hooks,
    }


async def test_a_receiver_that_fails_twice_gets_exactly_one_successful_delivery(
    start_notifier: Any,
    receiver: Any,
    send_event: Any,
    changes_requested_event: Any,
    heard: Any,
) -> None:
    async def fails_twice(_: Any, seen: int) -> Response:
        return Response(status_code=503) if seen <= 2 else Response(status_code=204)

    receiver.on("/hook", fails_twice)
    contacts = one_person(["crm"], crm=generic_hook(receiver))
    async with start_notifier(contacts, delivery_max_attempts=5) as service:
        await send_event(changes_requested_event())
        row = await service.delivery_of("webhook:crm")
        done = await service.until_status(row["id"], "delivered")
        assert done["attempts"] == 3
        await asyncio.sleep(0.5)  # nothing more arrives after the success
        calls = receiver.at("/hook")
        assert [c.status for c in calls] == [503, 503, 204]
        assert {c.headers["x-orderflow-delivery"] for c in calls} == {row["id"]}
        # each retry waited longer than none at all: back-off, not a tight loop
        assert calls[1].at - calls[0].at >= 0.025 and calls[2].at - calls[1].at >= 0.025
        delivered = await heard.of("notification.delivered", channel="webhook:crm")
        assert [d["notification_id"] for d in delivered] == [row["id"]]
        assert not [m for m in heard.messages if m[0] == "notification.failed"]


async def test_a_dead_receiver_ends_failed_and_an_operator_retry_delivers_it(
    start_notifier: Any,
    receiver: Any,
    send_event: Any,
    changes_requested_event: Any,
    heard: Any,
) -> None:
    state = {"up": False}

    async def down_until_fixed(_: Any, __: int) -> Response:
        if state["up"]:
            return Response(status_code=200)
        return PlainTextResponse("upstream down", status_code=500)

    receiver.on("/hook", down_until_fixed)
    contacts = one_person(["inbox", "crm"], crm=generic_hook(receiver))
    async with start_notifier(contacts, delivery_max_attempts=3) as service:
        event = changes_requested_event()
        await send_event(event)
        row = await service.delivery_of("webhook:crm")
        failed = await service.until_status(row["id"], "failed")
        assert failed["attempts"] == 3
        # the status only: what the receiver wrote is not kept
        assert failed["last_error"] == "HTTP 500 Internal Server Error"
        assert failed["failed_at"] is not None and failed["next_attempt_at"] is None
        await asyncio.sleep(0.5)
        assert len(receiver.at("/hook")) == 3  # no attempt after the last one

        listed = (await service.client.get("/api/v1/deliveries?status=failed")).json()
        assert [d["id"] for d in listed["items"]] == [row["id"]] and listed["total"] == 1
        [failure] = await heard.of("notification.failed", channel="webhook:crm")
        assert failure["notification_id"] == row["id"]
        assert failure["order_id"] == str(event.order_id)
        assert "HTTP 500" in failure["error"]

        state["up"] = True
        answer = await service.client.post(f"/api/v1/deliveries/{row['id']}/retry")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] in ("pending", "sending", "delivered")
        done = await service.until_status(row["id"], "delivered")
        assert done["attempts"] == 1
        assert [c.status for c in receiver.at("/hook")] == [500, 500, 500, 200]
        await heard.of("notification.delivered", channel="webhook:crm")

        again = await service.client.post(f"/api/v1/deliveries/{row['id']}/retry")
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        missing = await service.client.post(
            "/api/v1/deliveries/8a0d3c52-0d5b-4a57-9d3c-2f2b8f4f6a11/retry"
        )
        assert missing.status_code == 404
        bad = await service.client.get("/api/v1/deliveries?status=lost")
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["pointer"].startswith("query:")


async def test_a_refusal_that_cannot_change_fails_at_once(
    start_notifier: Any, receiver: Any, send_event: Any, changes_requested_event: Any
) -> None:
    receiver.on("/hook", lambda _, __: _answer(Response(status_code=404)))
    contacts = one_person(["crm"], crm=generic_hook(receiver))
    async with start_notifier(contacts, delivery_max_attempts=8) as service:
        await send_event(changes_requested_event())
        row = await service.delivery_of("webhook:crm")
        failed = await service.until_status(row["id"], "failed")
        assert failed["attempts"] == 1 and "HTTP 404" in failed["last_error"]


async def _answer(response: Response) -> Response:
    return response


async def test_a_slow_webhook_holds_up_neither_email_nor_other_robots(
    start_notifier: Any,
    receiver: Any,
    smtp: Any,
    send_event: Any,
    changes_requested_event: Any,
) -> None:
    async def never_answers(_: Any, __: int) -> Response:
        await asyncio.sleep(30)
        return Response(status_code=204)

    async def wecom_ok(_: Any, __: int) -> Response:
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    receiver.on("/slow", never_answers)
    receiver.on("/wecom", wecom_ok)
    contacts = {
        "people": [
            {
                "id": "zhang.wei",
                "email": "zhang.wei@example.com",
                "channels": ["slow", "email", "group"],
            }
        ],
        "webhooks": {
            "slow": generic_hook(receiver, "/slow"),
            "group": {"kind": "wecom", "url": receiver.url("/wecom") + "?key=k"},
        },
    }
    timeout = 3.0
    async with start_notifier(
        contacts, smtp=smtp, delivery_timeout=timeout, delivery_concurrency=1
    ) as service:
        started = time.monotonic()
        for _ in range(3):
            await send_event(changes_requested_event())
        # the slow robot's single worker is stuck on its first message for `timeout`
        await eventually(lambda: len(receiver.at("/slow")) >= 1)
        mails = await smtp.wait(3, timeout=timeout)
        groups = await receiver.wait("/wecom", 3, timeout=timeout)
        assert max(m.received_at for m in mails) - started < timeout
        assert max(g.at for g in groups) - started < timeout
        assert len(receiver.at("/slow")) == 1  # still on the first one

        slow = await service.deliveries(channel="webhook:slow")
        assert len(slow) == 3 and all(d["status"] in ("pending", "sending") for d in slow)

        async def timed_out() -> Any:
            rows = await service.deliveries(channel="webhook:slow")
            return [r for r in rows if r["last_error"]]

        [first] = await eventually(timed_out, timeout=timeout + 5)
        assert first["last_error"] == f"no answer within {timeout:g}s"


async def test_a_robots_rate_limit_spreads_messages_and_drops_none(
    start_notifier: Any, receiver: Any, send_event: Any, changes_requested_event: Any
) -> None:
    async def ding_ok(_: Any, __: int) -> Response:
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    receiver.on("/dingtalk", ding_ok)
    contacts = one_person(
        ["group"],
        group={"kind": "dingtalk", "url": receiver.url("/dingtalk") + "?access_token=t"},
    )
    limit, window = 5, 2.0
    async with start_notifier(
        contacts,
        rate_limits={"dingtalk": {"limit": limit, "window": window}},
        delivery_concurrency=4,
    ) as service:
        await asyncio.gather(*(send_event(changes_requested_event()) for _ in range(25)))
        calls = await receiver.wait("/dingtalk", 25, timeout=30)
        arrivals = sorted(c.at for c in calls)
        for i, start in enumerate(arrivals):
            in_window = [t for t in arrivals[i:] if t < start + window]
            assert len(in_window) <= limit, f"{len(in_window)} messages within {window}s"
        # spread, not refused: 25 at 5 per 2 s take four full windows at least
        assert arrivals[-1] - arrivals[0] >= 4 * window
        rows = await service.deliveries(channel="webhook:group", limit=100)
        assert len(rows) == 25

        async def all_delivered() -> bool:
            rows = await service.deliveries(channel="webhook:group", limit=100)
            return all(r["status"] == "delivered" for r in rows)

        await eventually(all_delivered)
        assert len({c.headers["x-orderflow-delivery"] for c in calls}) == 25


async def test_quiet_hours_hold_email_but_not_the_inbox(
    start_notifier: Any,
    smtp: Any,
    send_event: Any,
    changes_requested_event: Any,
    quiet_hours_now: Any,
) -> None:
    contacts = {
        "people": [
            {
                "id": "zhang.wei",
                "email": "zhang.wei@example.com",
                "timezone": "UTC",
                "channels": ["inbox", "email"],
                "quiet_hours": quiet_hours_now(hours=1),
            }
        ]
    }
    async with start_notifier(contacts, smtp=smtp) as service:
        await send_event(changes_requested_event())

        async def inbox() -> Any:
            page = (await service.client.get("/api/v1/inbox/zhang.wei")).json()
            return page if page["unread"] == 1 else None

        await eventually(inbox, timeout=5)
        mail = await service.delivery_of("email")
        assert mail["status"] == "pending"
        due = datetime.fromisoformat(mail["next_attempt_at"])
        expected = datetime.now(UTC) + timedelta(hours=1)
        assert abs((due - expected).total_seconds()) < 120
        await asyncio.sleep(0.5)
        assert smtp.received == []


async def test_a_delivery_for_a_robot_no_longer_configured_ends_failed(
    start_notifier: Any, heard: Any
) -> None:
    import uuid

    import asyncpg

    async with start_notifier({"people": []}) as service:
        conn = await asyncpg.connect(service.settings.dsn)
        try:
            delivery_id = uuid.uuid4()
            await conn.execute(
                """INSERT INTO notifier.notifications
                       (id, event_id, event_type, recipient, channel, address, order_id, title,
                        body, link, status, next_attempt_at)
                   VALUES ($1, 'e1', 'order.approved', 'zhang.wei', 'webhook:gone', 'gone',
                           $2, 'Order approved', 'b', 'http://c', 'pending',
                           now() - interval '11 minutes')""",
                delivery_id,
                uuid.uuid4(),
            )
            row = await service.until_status(str(delivery_id), "failed")
            assert row["last_error"] == "channel webhook:gone is not configured on this service"
            await heard.of("notification.failed", channel="webhook:gone")
        finally:
            await conn.close()
