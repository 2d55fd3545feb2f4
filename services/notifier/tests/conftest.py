"""The notifier's test fixtures: a real SMTP server (aiosmtpd) and a real HTTP receiver on
free localhost ports, the service itself on the test's own vhost and database, events to
publish, and a queue that hears what the notifier publishes."""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from notifier.main import create_app
from notifier.settings import Settings
from orderflow import topology
from orderflow.messages import (
    Annotation,
    Decision,
    DepartmentFeedback,
    Message,
    OrderChangesRequested,
    Reviewer,
    Salesperson,
)
from orderflow_testkit.testing import Infra, eventually, free_port, publish, running

CONSOLE = "http://console.example"
MAIL_FROM = "orderflow@example.com"


# --- SMTP ----------------------------------------------------------------------------------


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    received_at: float

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def raw_headers(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[0]


class _MailHandler:
    def __init__(self, inbox: list[Mail]) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.inbox.append(
            Mail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, time.monotonic())
        )
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    received: list[Mail] = field(default_factory=list)

    async def wait(self, count: int, timeout: float = 15) -> list[Mail]:
        async def enough() -> list[Mail] | None:
            return list(self.received) if len(self.received) >= count else None

        result: list[Mail] = await eventually(enough, timeout=timeout)
        return result


#: the Content-Language of each template language
CONTENT_LANGUAGES = {"zh": "zh-CN", "en": "en"}
_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


def written_in(mail: Mail) -> str:
    """The language a mail's own words are in, judged from its subject: the templates' fixed
    words are Chinese or English, and the values put in them (order refs, department
    names in the reader's language, contract numbers) do not change that."""
    return "zh" if _CJK.search(str(mail.message["Subject"])) else "en"


def language_problems(mails: list[Mail]) -> list[str]:
    """Every mail must say the language it is written in, on the message and on each part."""
    problems = []
    for mail in mails:
        message = mail.message
        expected = CONTENT_LANGUAGES[written_in(mail)]
        for part in [message, *message.iter_parts()]:
            got = part["Content-Language"]
            if got != expected:
                problems.append(
                    f"{message['Subject']!r} ({part.get_content_type()}): Content-Language "
                    f"{got!r}, expected {expected!r}"
                )
    return problems


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer("127.0.0.1", free_port())
    controller = Controller(_MailHandler(server.received), hostname=server.host, port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
    # whatever the test was about: every email it sent carries its language
    problems = language_problems(server.received)
    assert not problems, problems


# --- an HTTP receiver standing in for the chat platforms -------------------------------------


@dataclass
class Received:
    path: str
    query: bytes
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


Behaviour = Callable[[Received, int], Awaitable[Response]]


async def ok(_: Received, __: int) -> Response:
    return PlainTextResponse("ok")


@dataclass
class Receiver:
    port: int
    requests: list[Received] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, behaviour: Behaviour) -> None:
        self.behaviours[path] = behaviour

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait(self, path: str, count: int, timeout: float = 15) -> list[Received]:
        async def enough() -> list[Received] | None:
            got = [r for r in self.at(path) if r.status]
            return got if len(got) >= count else None

        result: list[Received] = await eventually(enough, timeout=timeout)
        return result

    async def handle(self, request: Request) -> Response:
        got = Received(
            path=request.url.path,
            query=request.scope.get("query_string", b""),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
            at=time.monotonic(),
        )
        self.requests.append(got)
        seen = len(self.at(got.path))
        response = await self.behaviours.get(got.path, ok)(got, seen)
        got.status = response.status_code
        return response


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(free_port())
    app = Starlette(routes=[Route("/{path:path}", rec.handle, methods=["POST"])])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=rec.port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, timeout=10)
    try:
        yield rec
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)


def platform_ok(kind: str) -> Behaviour:
    """What each platform answers when it took the message."""

    async def answer(_: Received, __: int) -> Response:
        if kind in ("wecom", "dingtalk"):
            return JSONResponse({"errcode": 0, "errmsg": "ok"})
        if kind == "feishu":
            return JSONResponse({"code": 0, "msg": "success", "data": {}})
        if kind == "slack":
            return PlainTextResponse("ok")
        return Response(status_code=204)

    return answer


@pytest.fixture
def platform_answer() -> Callable[[str], Behaviour]:
    return platform_ok


# --- the service ---------------------------------------------------------------------------


@dataclass
class Running:
    client: httpx.AsyncClient
    settings: Settings

    async def deliveries(self, **query: Any) -> list[dict[str, Any]]:
        page = (await self.client.get("/api/v1/deliveries", params=query)).json()
        items: list[dict[str, Any]] = page["items"]
        return items

    async def delivery_of(self, channel: str, **query: Any) -> dict[str, Any]:
        async def one() -> dict[str, Any] | None:
            rows = await self.deliveries(channel=channel, **query)
            return rows[0] if rows else None

        found: dict[str, Any] = await eventually(one)
        return found

    async def until_status(
        self, delivery_id: str, status: str, timeout: float = 15
    ) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            row = (await self.client.get(f"/api/v1/deliveries/{delivery_id}")).json()
            return row if row["status"] == status else None

        found: dict[str, Any] = await eventually(reached, timeout=timeout)
        return found


Start = Callable[..., contextlib.AbstractAsyncContextManager[Running]]


@pytest.fixture
def start_notifier(infra: Infra, tmp_path: Path) -> Start:
    """Run the notifier with a contacts file and settings for a fast test."""

    @contextlib.asynccontextmanager
    async def start(
        contacts: dict[str, Any] | None = None,
        smtp: SmtpServer | None = None,
        **overrides: Any,
    ) -> AsyncIterator[Running]:
        values: dict[str, Any] = {
            "database_url": infra.database_url,
            "amqp_url": infra.url_as("notifier"),
            "console_base_url": CONSOLE,
            "delivery_poll_interval": 0.1,
            "delivery_backoff_base": 0.05,
            "delivery_backoff_max": 0.2,
            "delivery_timeout": 5.0,
            # the local receivers and SMTP server: allowed explicitly, as a deployment would
            "outbound_allow": ["127.0.0.1"],
        }
        if contacts is not None:
            path = tmp_path / f"contacts-{uuid.uuid4().hex[:6]}.json"
            path.write_text(json.dumps(contacts, ensure_ascii=False), encoding="utf-8")
            values["contacts_file"] = path
        if smtp is not None:
            values.update(
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                smtp_security="none",
                mail_from=MAIL_FROM,
                mail_from_name="订单评审",
            )
        values.update(overrides)
        settings = Settings(**values)
        async with running(create_app(settings)) as client:
            yield Running(client, settings)

    return start


# --- events in, events out -------------------------------------------------------------------


async def send(amqp: Any, event: Message, *, message_id: str | None = None) -> str:
    return await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key=event.message_type,
        body=event.model_dump_json().encode(),
        message_id=message_id or str(uuid.uuid4()),
        message_type=event.message_type,
        correlation_id=str(getattr(event, "order_id", "")) or None,
    )


@pytest.fixture
def send_event(amqp: Any) -> Callable[..., Awaitable[str]]:
    async def do(event: Message, *, message_id: str | None = None) -> str:
        return await send(amqp, event, message_id=message_id)

    return do


def changes_requested(salesperson: str = "zhang.wei", name: str | None = "张伟") -> Any:
    finance = [
        Annotation(field="/payment/terms", message="预付比例至少 50%", severity="blocker"),
    ]
    production = [
        Annotation(field="/lines/0/unit_price", message="低于成本价 90.00", severity="blocker"),
        Annotation(field="/delivery/date", message="交期需延后两周", severity="major"),
    ]
    return OrderChangesRequested(
        order_id=uuid.uuid4(),
        revision=1,
        salesperson=Salesperson(id=salesperson, name=name),
        feedback=[
            DepartmentFeedback(
                department="finance",
                decision=Decision.REQUEST_CHANGES,
                reviewer=Reviewer(id="wang.fang"),
                annotations=finance,
            ),
            DepartmentFeedback(
                department="production",
                decision=Decision.REQUEST_CHANGES,
                reviewer=Reviewer(id="li.qiang"),
                annotations=production,
            ),
        ],
        annotations=finance + production,
        decided_at=datetime.now(UTC),
    )


@pytest.fixture
def changes_requested_event() -> Callable[..., Any]:
    return changes_requested


class Heard:
    """The notifier's own events (notification.delivered / .failed), from a test queue."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.messages: list[tuple[str, dict[str, Any]]] = []

    async def _drain(self) -> None:
        while True:
            msg = await self._queue.get(fail=False, no_ack=True)
            if msg is None:
                return
            self.messages.append((msg.type, json.loads(msg.body)))

    async def of(
        self, message_type: str, count: int = 1, timeout: float = 15, **match: Any
    ) -> list[dict[str, Any]]:
        async def enough() -> list[dict[str, Any]] | None:
            await self._drain()
            got = [
                body
                for kind, body in self.messages
                if kind == message_type and all(body.get(k) == v for k, v in match.items())
            ]
            return got if len(got) >= count else None

        result: list[dict[str, Any]] = await eventually(enough, timeout=timeout)
        return result


@pytest.fixture
async def heard(amqp: Any) -> AsyncIterator[Heard]:
    async with amqp.channel() as channel:
        exchange = await channel.declare_exchange(
            topology.EVENTS, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="notification.*")
        yield Heard(queue)


def quiet_now(hours: int = 1) -> dict[str, str]:
    """Quiet hours (UTC) around this moment."""
    now = datetime.now(UTC)
    start = (now - timedelta(hours=hours)).strftime("%H:%M")
    end = (now + timedelta(hours=hours)).strftime("%H:%M")
    return {"start": start, "end": end}


@pytest.fixture
def quiet_hours_now() -> Callable[..., dict[str, str]]:
    return quiet_now
