"""Email through a real SMTP server (aiosmtpd on a free localhost port)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from structlog.testing import capture_logs

from orderflow import topology
from orderflow.messages import Salesperson
from orderflow_testkit.testing import eventually, nothing_more

LINES = {
    "zh": [
        ("/payment/terms", "财务部", "预付比例至少 50%"),
        ("/lines/0/unit_price", "生产部", "低于成本价 90.00"),
        ("/delivery/date", "生产部", "交期需延后两周"),
    ],
    "en": [
        ("/payment/terms", "Finance", "预付比例至少 50%"),
        ("/lines/0/unit_price", "Production", "低于成本价 90.00"),
        ("/delivery/date", "Production", "交期需延后两周"),
    ],
}


def person(language: str) -> dict[str, Any]:
    return {
        "id": "zhang.wei",
        "name": "张伟",
        "email": "zhang.wei@example.com",
        "language": language,
        "channels": ["inbox", "email"],
    }


def parts(message: Any) -> dict[str, str]:
    found = {}
    for part in message.walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            found[part.get_content_type()] = part.get_content()
    return found


@pytest.mark.parametrize(
    ("language", "subject", "checklist_line"),
    [
        (
            "zh",
            "订单 {ref} 需要修改（第 1 版）",
            "[ ] 付款 › 条款（/payment/terms）— 财务部：预付比例至少 50%",
        ),
        (
            "en",
            "Order {ref} needs changes (revision 1)",
            "[ ] Payment › Terms (/payment/terms) - Finance: 预付比例至少 50%",
        ),
    ],
)
async def test_changes_requested_email_has_both_parts_and_the_checklist(
    start_notifier: Any,
    smtp: Any,
    send_event: Any,
    changes_requested_event: Any,
    heard: Any,
    language: str,
    subject: str,
    checklist_line: str,
) -> None:
    async with start_notifier({"people": [person(language)]}, smtp=smtp) as service:
        event = changes_requested_event()
        await send_event(event)
        [mail] = await smtp.wait(1)

        assert mail.mail_from == "orderflow@example.com"
        assert mail.rcpt_tos == ["zhang.wei@example.com"]
        # the headers travel as RFC 2047 encoded words: 7-bit ASCII only
        assert mail.raw_headers.isascii()
        assert b"=?utf-8?" in mail.raw_headers.lower()
        message = mail.message
        ref = str(event.order_id)[:8]
        assert message["Subject"] == subject.format(ref=ref)
        [to] = message["To"].addresses
        assert (to.display_name, to.addr_spec) == ("张伟", "zhang.wei@example.com")
        [sender] = message["From"].addresses
        assert (sender.display_name, sender.addr_spec) == ("订单评审", "orderflow@example.com")
        assert message.get_content_type() == "multipart/alternative"
        # the language it is written in, for the mail client (spell check, translation)
        tag = {"zh": "zh-CN", "en": "en"}[language]
        assert message["Content-Language"] == tag
        assert [p["Content-Language"] for p in message.iter_parts()] == [tag, tag]

        body = parts(message)
        assert set(body) == {"text/plain", "text/html"}
        link = f"http://console.example/orders/{event.order_id}"
        for text in body.values():
            assert link in text
            for pointer, department, remark in LINES[language]:
                assert pointer in text and department in text and remark in text
        assert checklist_line in body["text/plain"]
        assert body["text/plain"].count("[ ] ") == 3
        assert body["text/html"].count("&#9744;") == 3

        email_row = await service.delivery_of("email")
        assert message["Message-ID"] == f"<{email_row['id']}@example.com>"
        assert message["X-Orderflow-Delivery"] == email_row["id"]
        delivered = await service.until_status(email_row["id"], "delivered")
        assert delivered["attempts"] == 1 and delivered["last_error"] is None
        [event_out] = await heard.of("notification.delivered", channel="email")
        assert event_out["notification_id"] == email_row["id"]
        assert event_out["order_id"] == str(event.order_id)

        # the inbox keeps its stable label, with the person's language in subject and body
        page = (await service.client.get("/api/v1/inbox/zhang.wei")).json()
        [note] = page["items"]
        assert note["title"] == "Changes requested"
        assert note["subject"] == subject.format(ref=ref)
        assert checklist_line in note["body"]


async def test_a_duplicated_event_sends_one_email(
    start_notifier: Any, smtp: Any, send_event: Any, changes_requested_event: Any, amqp: Any
) -> None:
    async with start_notifier({"people": [person("zh")]}, smtp=smtp) as service:
        event = changes_requested_event()
        message_id = "6f1c1c3e-3f43-4a35-9d4b-3a1d1f0c9e21"
        for _ in range(3):
            await send_event(event, message_id=message_id)
        await smtp.wait(1)
        row = await service.delivery_of("email")
        await service.until_status(row["id"], "delivered")
        # every copy handled: a marker behind them has passed through the notifier
        queue = topology.NOTIFIER_CHANGES_REQUESTED
        await nothing_more(amqp, queue.dlq, through=queue.name)
        assert len(smtp.received) == 1
        rows = await service.deliveries(order_id=str(event.order_id))
        assert sorted(r["channel"] for r in rows) == ["email", "inbox"]


async def test_an_address_the_order_gives_is_never_mailed(
    start_notifier: Any, smtp: Any, send_event: Any, changes_requested_event: Any
) -> None:
    """The order names its salesperson's address, but only the contacts file may choose a
    recipient: someone without an entry gets the in-app inbox, and the operator a hint."""
    stranger = changes_requested_event(salesperson="chen.jing", name="陈静")
    stranger = stranger.model_copy(
        update={"salesperson": Salesperson(id="chen.jing", name="陈静", email="chen@example.com")}
    )
    # a salesperson in the file whose order names another address: the file's is used
    known = changes_requested_event()
    known = known.model_copy(
        update={"salesperson": Salesperson(id="zhang.wei", name="张伟", email="other@example.net")}
    )
    with capture_logs() as logs:
        async with start_notifier({"people": [person("zh")]}, smtp=smtp) as service:
            await send_event(stranger)
            await send_event(known)
            [mail] = await smtp.wait(1)
            assert mail.rcpt_tos == ["zhang.wei@example.com"]
            [known_email] = await service.deliveries(order_id=str(known.order_id), channel="email")
            assert known_email["address"] == "zhang.wei@example.com"
            await service.until_status(known_email["id"], "delivered")

            # another order of the stranger's: still the inbox only, and no second hint
            again = stranger.model_copy(update={"order_id": uuid.uuid4()})
            await send_event(again)

            async def both_in_the_inbox() -> Any:
                page = (await service.client.get("/api/v1/inbox/chen.jing")).json()
                return page if page["total"] == 2 else None

            await eventually(both_in_the_inbox)
            for order in (stranger, again):
                rows = await service.deliveries(order_id=str(order.order_id))
                assert [r["channel"] for r in rows] == ["inbox"]
            addresses = {r["address"] for r in await service.deliveries(limit=200)}
            assert addresses == {None, "zhang.wei@example.com"}
            assert len(smtp.received) == 1
    hints = [e for e in logs if "no email address in the contacts file" in e["event"]]
    assert [h["person"] for h in hints] == ["chen.jing"]
