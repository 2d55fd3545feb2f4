"""Outbound calls go only where the configuration says and only to addresses checked at
send time: private, loopback, link-local, multicast, unspecified and reserved addresses
are refused unless NOTIFIER_OUTBOUND_ALLOW names them; redirects are not followed; a
failed delivery keeps a status and a short reason, never what the receiver answered.

Every connection these tests could make stays on the loopback range: the other classes
are checked by resolving alone."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import asyncpg
import pytest
from starlette.responses import JSONResponse, PlainTextResponse, Response

from notifier.adapters.outbound import OutboundPolicy, OutboundRefused, address_class

from .conftest import SmtpServer

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "non-public"),
    ("192.0.2.1", "private"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("ff02::1", "multicast"),
    ("::", "unspecified"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("::ffff:127.0.0.1", "loopback (IPv4 in IPv6)"),
    ("::ffff:10.0.0.1", "private (IPv4 in IPv6)"),
    ("::ffff:169.254.169.254", "link-local (IPv4 in IPv6)"),
    ("2002:7f00:1::", "loopback (IPv4 in IPv6)"),
]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
async def test_every_non_public_address_class_is_refused(address: str, kind: str) -> None:
    assert address_class(ipaddress.ip_address(address)) == kind
    with pytest.raises(OutboundRefused) as caught:
        await OutboundPolicy().resolve(address, 443)
    assert f"is a {kind} address" in str(caught.value)
    assert "NOTIFIER_OUTBOUND_ALLOW" in str(caught.value)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2001:4860:4860::8888"])
async def test_public_addresses_pass(address: str) -> None:
    assert address_class(ipaddress.ip_address(address)) is None
    assert await OutboundPolicy().resolve(address, 443) == [address]


async def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    with pytest.raises(OutboundRefused, match=r"localhost \((127\.0\.0\.1|::1)\) is a loopback"):
        await OutboundPolicy().resolve("localhost", 80)


async def test_the_allow_list_takes_hosts_addresses_and_networks() -> None:
    policy = OutboundPolicy.parse(["127.0.0.1", "10.20.0.0/16", "erp.internal", "fd00::/8"])
    assert await policy.resolve("127.0.0.1", 80) == ["127.0.0.1"]
    assert await policy.resolve("10.20.3.4", 80) == ["10.20.3.4"]
    assert await policy.resolve("fd00::5", 80) == ["fd00::5"]
    # the mapped form of an allowed IPv4 address is the same host
    assert await policy.resolve("::ffff:127.0.0.1", 80) == ["::ffff:7f00:1"]
    assert policy.refusal("erp.internal", ipaddress.ip_address("10.9.9.9")) is None
    for outside in ("10.21.0.1", "127.0.0.2", "192.168.0.1"):
        with pytest.raises(OutboundRefused):
            await policy.resolve(outside, 80)
    with pytest.raises(ValueError, match="'not a host!' is neither"):
        OutboundPolicy.parse(["not a host!"])


def test_a_bad_allow_entry_stops_the_service_named() -> None:
    from pydantic import ValidationError

    from notifier.settings import Settings

    with pytest.raises(ValidationError) as caught:
        Settings(
            database_url="postgresql://u@127.0.0.1/db",
            amqp_url="amqp://u:p@127.0.0.1/",
            outbound_allow="127.0.0.1,10.0.0.0/33",
        )
    assert "outbound_allow" in str(caught.value) and "10.0.0.0/33" in str(caught.value)
    assert Settings(
        database_url="postgresql://u@127.0.0.1/db",
        amqp_url="amqp://u:p@127.0.0.1/",
        outbound_allow="127.0.0.1, ::1",
    ).outbound_allow == ["127.0.0.1", "::1"]


# --- through the service -----------------------------------------------------------------


def robot(url: str, kind: str = "webhook") -> dict[str, Any]:
    hook: dict[str, Any] = {"kind": kind, "url": url}
    if kind == "webhook":
        hook["secret"] = "a-signing-secret-of-some-length"
    return {
        "people": [{"id": "zhang.wei", "channels": ["inbox", "hook"]}],
        "webhooks": {"hook": hook},
    }


async def test_a_contact_pointing_at_an_internal_service_is_refused_and_says_why(
    start_notifier: Any, receiver: Any, send_event: Any, changes_requested_event: Any
) -> None:
    """The finding of the review: a robot at 127.0.0.1:<port> made the notifier fetch an
    internal service. Without an allowance nothing connects, and the reason is stored."""
    contacts = robot(receiver.url("/metrics"))
    async with start_notifier(contacts, outbound_allow=[]) as service:
        await send_event(changes_requested_event())
        row = await service.delivery_of("webhook:hook")
        failed = await service.until_status(row["id"], "failed")
        assert failed["attempts"] == 1  # refused is final: no retries
        assert failed["last_error"] == (
            "refused: 127.0.0.1 is a loopback address; add it to NOTIFIER_OUTBOUND_ALLOW to "
            "allow it"
        )
        assert receiver.requests == []


async def test_a_name_resolving_to_loopback_is_refused_at_send_time(
    start_notifier: Any, receiver: Any, send_event: Any, changes_requested_event: Any
) -> None:
    contacts = robot(f"http://localhost:{receiver.port}/hook")
    async with start_notifier(contacts, outbound_allow=[]) as service:
        await send_event(changes_requested_event())
        row = await service.delivery_of("webhook:hook")
        failed = await service.until_status(row["id"], "failed")
        assert failed["last_error"].startswith("refused: localhost (")
        assert "is a loopback address" in failed["last_error"]
        assert receiver.requests == []


async def test_a_redirect_to_a_private_address_is_not_followed(
    start_notifier: Any, receiver: Any, send_event: Any, changes_requested_event: Any
) -> None:
    hits: list[Any] = []

    async def redirect(_: Any, __: int) -> Response:
        # 127.0.0.2: loopback, and not among the allowed addresses
        return Response(status_code=302, headers={"location": "http://127.0.0.2:9100/internal"})

    async def internal(got: Any, __: int) -> Response:
        hits.append(got)
        return PlainTextResponse("internal data")

    receiver.on("/hook", redirect)
    receiver.on("/internal", internal)
    async with start_notifier(robot(receiver.url("/hook"))) as service:
        await send_event(changes_requested_event())
        row = await service.delivery_of("webhook:hook")
        failed = await service.until_status(row["id"], "failed")
        assert failed["attempts"] == 1
        assert failed["last_error"] == "HTTP 302 Found: redirects are not followed"
        assert len(receiver.at("/hook")) == 1 and hits == []


async def test_the_connection_goes_to_the_address_that_was_checked(
    start_notifier: Any,
    receiver: Any,
    send_event: Any,
    changes_requested_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name answers an allowed address when checked and another one
    afterwards. The request must reach the checked one, with the name as its Host."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    answers = iter(["127.0.0.1"])
    asked: list[str] = []

    async def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "hooks.rebind.test":
            return await real(host, port, *args, **kwargs)
        asked.append(host)
        # the first answer is the allowed address; any later one is an unchecked address
        address = next(answers, "127.0.0.2")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(loop, "getaddrinfo", rebinding)
    contacts = robot(f"http://hooks.rebind.test:{receiver.port}/hook")
    async with start_notifier(contacts) as service:
        await send_event(changes_requested_event())
        row = await service.delivery_of("webhook:hook")
        await service.until_status(row["id"], "delivered")
        [got] = receiver.at("/hook")
        assert got.headers["host"] == f"hooks.rebind.test:{receiver.port}"
        assert asked == ["hooks.rebind.test"]  # resolved once, by the guard


async def test_a_failed_delivery_keeps_no_remote_body(
    start_notifier: Any, receiver: Any, send_event: Any, changes_requested_event: Any
) -> None:
    async def leaky(_: Any, __: int) -> Response:
        return PlainTextResponse("root:x:0:0 INTERNAL-ANSWER", status_code=400)

    async def platform_error(_: Any, __: int) -> Response:
        return JSONResponse({"errcode": 300001, "errmsg": "INTERNAL-ANSWER token invalid"})

    receiver.on("/hook", leaky)
    receiver.on("/ding", platform_error)
    contacts = {
        "people": [{"id": "zhang.wei", "channels": ["hook", "ding"]}],
        "webhooks": {
            "hook": robot(receiver.url("/hook"))["webhooks"]["hook"],
            "ding": {"kind": "dingtalk", "url": receiver.url("/ding") + "?access_token=t0k3n"},
        },
    }
    async with start_notifier(contacts, delivery_max_attempts=2) as service:
        await send_event(changes_requested_event())
        hook = await service.until_status(
            (await service.delivery_of("webhook:hook"))["id"], "failed"
        )
        ding = await service.until_status(
            (await service.delivery_of("webhook:ding"))["id"], "failed"
        )
        assert hook["last_error"] == "HTTP 400 Bad Request"
        assert ding["last_error"] == "dingtalk error code 300001"
        listing = (await service.client.get("/api/v1/deliveries")).text
        conn = await asyncpg.connect(service.settings.dsn)
        try:
            rows = await conn.fetch("SELECT t::text AS row FROM notifier.notifications t")
            outbox = await conn.fetch("SELECT t::text AS row FROM notifier.outbox t")
        finally:
            await conn.close()
        stored = "\n".join(r["row"] for r in [*rows, *outbox])
        assert "INTERNAL-ANSWER" not in listing + stored
        assert "t0k3n" not in listing + stored


async def test_smtp_to_a_server_not_allowed_is_refused(
    start_notifier: Any, smtp: SmtpServer, send_event: Any, changes_requested_event: Any
) -> None:
    person = {"id": "zhang.wei", "email": "zhang.wei@example.com", "channels": ["email"]}
    async with start_notifier({"people": [person]}, smtp=smtp, outbound_allow=[]) as service:
        await send_event(changes_requested_event())
        row = await service.delivery_of("email")
        failed = await service.until_status(row["id"], "failed")
        assert failed["last_error"] == (
            "refused: 127.0.0.1 is a loopback address; add it to NOTIFIER_OUTBOUND_ALLOW to "
            "allow it"
        )
        assert smtp.received == []


async def test_smtp_to_an_allowed_server_goes_to_the_checked_address(
    start_notifier: Any, smtp: SmtpServer, send_event: Any, changes_requested_event: Any
) -> None:
    person = {"id": "zhang.wei", "email": "zhang.wei@example.com", "channels": ["email"]}
    async with start_notifier(
        {"people": [person]}, smtp=smtp, smtp_host="localhost", outbound_allow=["localhost"]
    ) as service:
        await send_event(changes_requested_event())
        [mail] = await smtp.wait(1)
        assert mail.rcpt_tos == ["zhang.wei@example.com"]
        await service.until_status((await service.delivery_of("email"))["id"], "delivered")
