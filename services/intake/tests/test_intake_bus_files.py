"""Files on the bus, against the real broker and database: an `order.submit` command names
its files by URL, intake fetches them (from a local HTTP server here) through the outbound
guard under the upload limits, and stores them with the revision before the self-check."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aio_pika
import httpx
import pytest
from fastapi import FastAPI

from orderflow import topology
from orderflow.messages import OrderSubmitted, SubmitOrderReply
from orderflow_testkit.testing import Infra, get_messages, publish, queue_depth, running

from .conftest import PDF, intake_app

COMMAND = "order.submit"
#: The upload limit of the service under test: small, so a file over it is cheap to serve.
LIMIT = 4096


class FileServer:
    """A file server on 127.0.0.1 (port 0): path -> (status, body, send Content-Length);
    a path may answer a list of statuses in turn (503 first, then 200). Counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[list[int], bytes, bool]] = {}
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path
                server.hits[path] += 1
                statuses, body, with_length = server.routes.get(path, ([404], b"", True))
                status = statuses[min(server.hits[path], len(statuses)) - 1]
                self.send_response(status)
                if status != 200:
                    body = b"no"
                if with_length or status != 200:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]

    def serve(
        self, path: str, body: bytes, *, statuses: list[int] | None = None, length: bool = True
    ) -> str:
        self.routes[path] = (statuses or [200], body, length)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    thread.join()


@pytest.fixture
async def bus_app(infra: Infra) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # the test's file server is on loopback: allowed here as an operator would allow an
    # internal file server; every other non-public address stays refused
    application = intake_app(infra, outbound_allow=["127.0.0.1"], max_attachment_bytes=LIMIT)
    async with running(application) as client:
        yield application, client


@asynccontextmanager
async def reply_queue(amqp: Any) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    async with amqp.channel() as channel:
        yield await channel.declare_queue(exclusive=True)


async def next_reply(queue: aio_pika.abc.AbstractQueue, timeout: float = 20) -> SubmitOrderReply:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        msg = await queue.get(fail=False, no_ack=True)
        if msg is not None:
            return SubmitOrderReply.model_validate_json(msg.body)
        await asyncio.sleep(0.05)
    raise AssertionError("no reply")


async def send_command(
    amqp: Any, body: dict[str, Any], *, reply_to: str, message_id: str | None = None
) -> str:
    return await publish(
        amqp,
        exchange=topology.COMMANDS,
        routing_key=COMMAND,
        body=json.dumps(body).encode(),
        message_id=message_id,
        message_type=COMMAND,
        reply_to=reply_to,
    )


async def submit(amqp: Any, body: dict[str, Any], **kwargs: Any) -> SubmitOrderReply:
    async with reply_queue(amqp) as replies:
        await send_command(amqp, body, reply_to=replies.name, **kwargs)
        return await next_reply(replies)


def spec(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "kind": "requirements_spec", "filename": "需求规格书.pdf", **extra}


async def stored_attachments(app: FastAPI) -> int:
    return int(await app.state.runtime.pool.fetchval("SELECT count(*) FROM attachments"))


async def test_a_file_named_by_url_passes_the_self_check_that_needs_it(
    bus_app: tuple[FastAPI, httpx.AsyncClient],
    amqp: Any,
    files: FileServer,
    technical_order: dict[str, Any],
) -> None:
    application, client = bus_app
    # the order has technical requirements: without the specification it is refused
    refusal = await submit(amqp, technical_order)
    assert not refusal.accepted
    assert [p.pointer for p in refusal.problems] == ["/attachments"]
    await get_messages(amqp, topology.INTAKE_COMMANDS.dlq, 1)

    url = files.serve("/files/spec.pdf?signature=s3cr3t", PDF)
    sha = hashlib.sha256(PDF).hexdigest()
    command = {
        **technical_order,
        "attachments": [spec(url, media_type="application/pdf", sha256=sha.upper())],
    }
    reply = await submit(amqp, command)
    assert reply.accepted, reply.problems
    assert reply.revision == 1 and reply.status == "submitted"

    listed = (await client.get(f"/api/v1/orders/{reply.order_id}/attachments")).json()
    [attachment] = listed["items"]
    assert attachment["kind"] == "requirements_spec"
    assert attachment["name"] == "需求规格书.pdf"
    assert attachment["content_type"] == "application/pdf"
    assert attachment["sha256"] == sha
    download = await client.get(attachment["download_path"])
    assert download.status_code == 200 and download.content == PDF

    # the departments are told of the file with the revision
    [event] = await get_messages(amqp, topology.ROUTER_SUBMITTED.name, 1)
    submitted = OrderSubmitted.model_validate_json(event.body)
    assert [a.id for a in submitted.attachments] == [uuid.UUID(attachment["id"])]

    # a revision of a draft over the bus: the file joins that revision, which keeps its own
    draft = (await client.post("/api/v1/orders", json=technical_order)).json()
    program = files.serve("/program", b"MZ\x90\x00" + b"\x00" * 60 + b"PE\x00\x00")
    refusal = await submit(
        amqp, {**technical_order, "order_id": draft["id"], "attachments": [spec(program)]}
    )
    assert not refusal.accepted
    assert [p.pointer for p in refusal.problems] == ["/attachments/0/url"]
    await get_messages(amqp, topology.INTAKE_COMMANDS.dlq, 1)
    reply = await submit(
        amqp, {**technical_order, "order_id": draft["id"], "attachments": [spec(url)]}
    )
    assert reply.accepted and str(reply.order_id) == draft["id"] and reply.revision == 1
    listed = (await client.get(f"/api/v1/orders/{draft['id']}/attachments")).json()
    assert [a["sha256"] for a in listed["items"]] == [sha]
    # the same bytes twice: stored once
    assert await application.state.runtime.pool.fetchval("SELECT count(*) FROM blobs") == 1


async def test_a_custom_order_names_its_confirmation_by_the_id_it_chose(
    bus_app: tuple[FastAPI, httpx.AsyncClient],
    amqp: Any,
    files: FileServer,
    technical_order: dict[str, Any],
) -> None:
    _, client = bus_app
    order = {**technical_order, "order_type": "custom"}
    confirmation_id = str(uuid.uuid4())
    order["customer_confirmation"] = {
        **order["customer_confirmation"],
        "attachment_id": confirmation_id,
    }
    url = files.serve("/confirmation.txt", "客户确认：同意。".encode())
    command = {
        **order,
        "attachments": [
            spec(files.serve("/spec.pdf", PDF)),
            {
                "url": url,
                "kind": "customer_confirmation",
                "filename": "确认.txt",
                "id": confirmation_id,
            },
        ],
    }
    reply = await submit(amqp, command)
    assert reply.accepted, reply.problems
    listed = (await client.get(f"/api/v1/orders/{reply.order_id}/attachments")).json()
    assert confirmation_id in [a["id"] for a in listed["items"]]

    # the id is taken now: another command cannot use it
    command["external_ref"] = "PO-other"
    refusal = await submit(amqp, command)
    assert not refusal.accepted
    assert [p.pointer for p in refusal.problems] == ["/attachments/1/id"]


async def test_a_file_that_cannot_be_fetched_refuses_the_command_naming_it(
    bus_app: tuple[FastAPI, httpx.AsyncClient],
    amqp: Any,
    files: FileServer,
    product_order: dict[str, Any],
) -> None:
    application, client = bus_app
    good = files.serve("/ok.pdf", PDF)
    big = b"%PDF-1.4\n" + b"0" * LIMIT
    cases = [
        (spec(files.url("/missing.pdf")), "/attachments/0/url", "404"),
        (spec(files.serve("/big.pdf", big)), "/attachments/0/url", f"larger than {LIMIT}"),
        (
            spec(files.serve("/big-streamed.pdf", big, length=False)),
            "/attachments/0/url",
            f"larger than {LIMIT}",
        ),
        (spec("http://10.255.255.1/spec.pdf"), "/attachments/0/url", "INTAKE_OUTBOUND_ALLOW"),
        (spec(f"http://127.0.0.2:{files.port}/ok.pdf"), "/attachments/0/url", "loopback"),
        (spec(good, sha256="0" * 64), "/attachments/0/sha256", hashlib.sha256(PDF).hexdigest()),
        (spec(good, media_type="image/png"), "/attachments/0/media_type", "PDF"),
        (spec(files.serve("/prog.exe", b"MZ" + b"\0" * 64)), "/attachments/0/url", "not accepted"),
    ]
    for attachment, pointer, words in cases:
        reply = await submit(amqp, {**product_order, "attachments": [attachment]})
        assert not reply.accepted and not reply.retryable
        assert reply.code == "file_refused", reply.code
        assert [p.pointer for p in reply.problems] == [pointer], reply.problems
        assert words in reply.problems[0].detail
        # the URL (a pre-signed one carries a credential) is not repeated back
        assert attachment["url"] not in (reply.reason or "")

    # every file's problem at once; a malformed reference is refused as the document is
    reply = await submit(
        amqp,
        {
            **product_order,
            "attachments": [spec(good), spec(files.url("/gone")), spec("ftp://x/y")],
        },
    )
    assert [p.pointer for p in reply.problems] == ["/attachments/2/url"]
    reply = await submit(
        amqp, {**product_order, "attachments": [spec(good), spec(files.url("/gone"))]}
    )
    assert [p.pointer for p in reply.problems] == ["/attachments/1/url"]

    assert (await client.get("/api/v1/orders")).json()["total"] == 0
    assert await stored_attachments(application) == 0
    assert await queue_depth(amqp, topology.INTAKE_COMMANDS.dlq) == len(cases) + 2


async def test_a_file_server_that_fails_for_a_moment_is_asked_again(
    bus_app: tuple[FastAPI, httpx.AsyncClient],
    amqp: Any,
    files: FileServer,
    technical_order: dict[str, Any],
) -> None:
    application, _ = bus_app
    url = files.serve("/flaky.pdf", PDF, statuses=[503, 502, 200])
    reply = await submit(amqp, {**technical_order, "attachments": [spec(url)]})
    assert reply.accepted, reply.problems
    assert files.hits["/flaky.pdf"] == 3
    assert await stored_attachments(application) == 1
    assert await queue_depth(amqp, topology.INTAKE_COMMANDS.dlq) == 0


async def test_a_redelivered_command_stores_its_file_once(
    bus_app: tuple[FastAPI, httpx.AsyncClient],
    amqp: Any,
    files: FileServer,
    technical_order: dict[str, Any],
) -> None:
    application, client = bus_app
    command = {**technical_order, "attachments": [spec(files.serve("/spec.pdf", PDF))]}
    mid = str(uuid.uuid4())
    async with reply_queue(amqp) as replies:
        for _ in range(3):
            await send_command(amqp, command, reply_to=replies.name, message_id=mid)
        first = await next_reply(replies)
        # a sentinel behind the duplicates: once it is answered they were all handled
        await send_command(amqp, {**command, "external_ref": "sentinel"}, reply_to=replies.name)
        sentinel = await next_reply(replies)
        assert first.accepted and sentinel.accepted
        assert await replies.get(fail=False) is None  # one reply for the three deliveries
    assert (await client.get("/api/v1/orders")).json()["total"] == 2
    assert await stored_attachments(application) == 2  # one per order
    pool = application.state.runtime.pool
    per_order = await pool.fetchval(
        "SELECT count(*) FROM attachments WHERE order_id = $1", first.order_id
    )
    assert per_order == 1
    assert await queue_depth(amqp, topology.INTAKE_COMMANDS.dlq) == 0
