"""Chat robots and the signed generic webhook, against a local HTTP receiver that checks
each platform's signature the way that platform documents it, and the payload's shape."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qs, unquote_plus

SECRETS = {
    "generic": "generic-secret-🔑",
    "dingtalk": "SEC1f3c0e7b9a1d2c3b4a5968778695a4b3c2d1e0f",
    "feishu": "feishu-secret-zxcv",
}


def robots(receiver: Any) -> dict[str, Any]:
    return {
        "crm": {
            "kind": "webhook",
            "url": receiver.url("/generic"),
            "secret": SECRETS["generic"],
        },
        "sales-wecom": {"kind": "wecom", "url": receiver.url("/wecom") + "?key=wecom-key-1"},
        "sales-dingtalk": {
            "kind": "dingtalk",
            "url": receiver.url("/dingtalk") + "?access_token=ding-token-1",
            "secret": SECRETS["dingtalk"],
        },
        "sales-feishu": {
            "kind": "feishu",
            "url": receiver.url("/feishu"),
            "secret": SECRETS["feishu"],
        },
        "sales-slack": {"kind": "slack", "url": receiver.url("/slack")},
    }


def contacts(receiver: Any, language: str = "zh") -> dict[str, Any]:
    hooks = robots(receiver)
    return {
        "people": [
            {
                "id": "zhang.wei",
                "name": "张伟",
                "language": language,
                "channels": ["inbox", *hooks],
            }
        ],
        "webhooks": hooks,
    }


# --- each platform's documented verification, written out here on purpose --------------


def verify_generic(got: Any, secret: str) -> None:
    timestamp = got.headers["x-orderflow-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + got.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(got.headers["x-orderflow-signature"], f"sha256={expected}")


def verify_dingtalk(got: Any, secret: str) -> None:
    # DingTalk: timestamp (ms) and sign in the query; sign = urlEncode(base64(
    # HmacSHA256(key=secret, "timestamp\nsecret")))
    raw = dict(pair.split("=", 1) for pair in got.query.decode().split("&"))
    assert raw["access_token"] == "ding-token-1"
    timestamp = raw["timestamp"]
    assert abs(int(timestamp) / 1000 - time.time()) < 3600  # DingTalk allows one hour
    string_to_sign = f"{timestamp}\n{secret}"
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode()
    # sent URL-encoded: base64's + / = never appear bare in the query
    assert not set("+/=") & set(raw["sign"])
    assert unquote_plus(raw["sign"]) == expected


def verify_feishu(body: dict[str, Any], secret: str) -> None:
    # Feishu: timestamp (s) and sign in the body; sign = base64(HmacSHA256(
    # key="timestamp\nsecret", message=empty))
    timestamp = body["timestamp"]
    assert isinstance(timestamp, str) and abs(int(timestamp) - time.time()) < 3600
    key = f"{timestamp}\n{secret}".encode()
    expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert body["sign"] == expected


async def test_each_platform_gets_its_payload_signed_as_it_documents(
    start_notifier: Any,
    receiver: Any,
    send_event: Any,
    changes_requested_event: Any,
    platform_answer: Any,
) -> None:
    for kind in ("generic", "wecom", "dingtalk", "feishu", "slack"):
        receiver.on(f"/{kind}", platform_answer(kind))
    async with start_notifier(contacts(receiver)) as service:
        event = changes_requested_event()
        await send_event(event)
        link = f"http://console.example/orders/{event.order_id}"
        ref = str(event.order_id)[:8]
        subject = f"订单 {ref} 需要修改（第 1 版）"
        remarks = ["预付比例至少 50%", "低于成本价 90.00", "交期需延后两周"]

        deliveries = {}
        for kind, name in [
            ("generic", "crm"),
            ("wecom", "sales-wecom"),
            ("dingtalk", "sales-dingtalk"),
            ("feishu", "sales-feishu"),
            ("slack", "sales-slack"),
        ]:
            [got] = await receiver.wait(f"/{kind}", 1)
            row = await service.delivery_of(f"webhook:{name}")
            deliveries[kind] = (got, row)
            # the same id on every try of this delivery, for the receiver to de-duplicate
            assert got.headers["x-orderflow-delivery"] == row["id"]
            assert got.headers["idempotency-key"] == row["id"]
            assert got.headers["content-type"].startswith("application/json")
            await service.until_status(row["id"], "delivered")

        got, row = deliveries["generic"]
        verify_generic(got, SECRETS["generic"])
        body = got.json()
        assert body["id"] == row["id"]
        assert body["event_type"] == "order.changes_requested"
        assert body["order_id"] == str(event.order_id)
        assert body["link"] == link
        assert body["subject"] == subject
        assert body["recipient"] == {"id": "zhang.wei", "name": "张伟"}
        assert [(c["field"], c["department"], c["message"]) for c in body["data"]["checklist"]] == [
            ("/payment/terms", "finance", remarks[0]),
            ("/lines/0/unit_price", "production", remarks[1]),
            ("/delivery/date", "production", remarks[2]),
        ]
        # a tampered body no longer verifies
        tampered = dataclasses.replace(got, body=got.body + b" ")
        try:
            verify_generic(tampered, SECRETS["generic"])
        except AssertionError:
            pass
        else:
            raise AssertionError("a tampered body must not verify")

        got, _ = deliveries["wecom"]
        assert parse_qs(got.query.decode()) == {"key": ["wecom-key-1"]}
        body = got.json()
        assert set(body) == {"msgtype", "markdown"} and body["msgtype"] == "markdown"
        content = body["markdown"]["content"]
        assert len(content.encode()) <= 4096
        assert link in content and all(r in content for r in remarks)

        got, _ = deliveries["dingtalk"]
        verify_dingtalk(got, SECRETS["dingtalk"])
        body = got.json()
        assert body["msgtype"] == "markdown"
        assert body["markdown"]["title"] == subject
        assert link in body["markdown"]["text"]
        assert all(r in body["markdown"]["text"] for r in remarks)

        got, _ = deliveries["feishu"]
        body = got.json()
        verify_feishu(body, SECRETS["feishu"])
        assert body["msg_type"] == "post"
        post = body["content"]["post"]["zh_cn"]
        assert post["title"] == subject
        elements = [e for paragraph in post["content"] for e in paragraph]
        assert {e["tag"] for e in elements} == {"text", "a"}
        assert [e["href"] for e in elements if e["tag"] == "a"] == [link]
        text = "\n".join(e["text"] for e in elements if e["tag"] == "text")
        assert all(r in text for r in remarks)

        got, _ = deliveries["slack"]
        body = got.json()
        assert subject in body["text"]
        header, section, actions = body["blocks"]
        assert header == {"type": "header", "text": {"type": "plain_text", "text": subject}}
        assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
        assert all(r in section["text"]["text"] for r in remarks)
        [button] = actions["elements"]
        assert button["type"] == "button" and button["url"] == link


async def test_robot_messages_follow_the_persons_language(
    start_notifier: Any,
    receiver: Any,
    send_event: Any,
    changes_requested_event: Any,
    platform_answer: Any,
) -> None:
    receiver.on("/feishu", platform_answer("feishu"))
    hooks = {"sales-feishu": robots(receiver)["sales-feishu"]}
    people = [{"id": "zhang.wei", "language": "en", "channels": ["sales-feishu"]}]
    async with start_notifier({"people": people, "webhooks": hooks}):
        event = changes_requested_event()
        await send_event(event)
        [got] = await receiver.wait("/feishu", 1)
        body = got.json()
        verify_feishu(body, SECRETS["feishu"])
        post = body["content"]["post"]["en_us"]
        assert post["title"] == f"Order {str(event.order_id)[:8]} needs changes (revision 1)"


async def test_a_platform_error_code_in_a_200_answer_is_retried(
    start_notifier: Any, receiver: Any, send_event: Any, changes_requested_event: Any
) -> None:
    from starlette.responses import JSONResponse

    async def sign_rejected_once(got: Any, seen: int) -> Any:
        if seen == 1:
            return JSONResponse({"errcode": 310000, "errmsg": "sign not match"})
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    receiver.on("/dingtalk", sign_rejected_once)
    hooks = {"sales-dingtalk": robots(receiver)["sales-dingtalk"]}
    people = [{"id": "zhang.wei", "channels": ["sales-dingtalk"]}]
    async with start_notifier({"people": people, "webhooks": hooks}) as service:
        await send_event(changes_requested_event())
        row = await service.delivery_of("webhook:sales-dingtalk")
        done = await service.until_status(row["id"], "delivered")
        assert done["attempts"] == 2
        first, second = receiver.at("/dingtalk")
        assert json.loads(first.body)["msgtype"] == "markdown"
        assert first.headers["x-orderflow-delivery"] == second.headers["x-orderflow-delivery"]
