"""Intake's test fixtures: the example orders and a running service on the test's own
broker vhost and database."""

from __future__ import annotations

import copy
import json
import struct
import zlib
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from intake.main import create_app
from intake.settings import Settings
from orderflow_testkit.testing import Infra, running

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"

#: Before both examples' delivery dates and after their customers' confirmations.
TODAY = date(2026, 12, 1)


def example(name: str) -> dict[str, Any]:
    """An example order exactly as an outside system sends it (a fresh copy each time)."""
    return copy.deepcopy(json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8")))


def without_technical_requirements(document: dict[str, Any]) -> dict[str, Any]:
    """An order the technical department does not review, so it needs no requirement
    specification: one that can be submitted in one step."""
    document.pop("technical_requirements", None)
    return document


@pytest.fixture
def product_order() -> dict[str, Any]:
    """The product example without its technical requirements: it passes the self-check
    with no file, so it can be submitted in one step."""
    return without_technical_requirements(example("order-product"))


@pytest.fixture
def technical_order() -> dict[str, Any]:
    """The product example as it is, with technical requirements: the technical department
    reviews it, and it is submitted from a draft with the customer's requirement
    specification attached (`IntakeApi.submit_with_spec`)."""
    return example("order-product")


@pytest.fixture
def service_order() -> dict[str, Any]:
    return example("order-service")


def intake_app(infra: Infra, **settings: Any) -> FastAPI:
    app = create_app(
        Settings(database_url=infra.database_url, amqp_url=infra.url_as("intake"), **settings)
    )
    app.state.today = lambda: TODAY
    return app


# --- files as salespeople upload them -------------------------------------------------

#: A small but well-formed PDF.
PDF = (
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
    b"trailer <</Root 1 0 R>>\n%%EOF\n"
)


def png(width: int = 1, height: int = 1) -> bytes:
    """A real PNG image (grey pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


#: The start of a Windows executable, as a file renamed to .pdf would begin.
EXE = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"PE\x00\x00" * 8
)


class IntakeApi:
    """What a salesperson's console does over intake's HTTP API, for tests (a fixture: test
    modules are imported by path and cannot import each other)."""

    pdf = PDF
    exe = EXE
    png = staticmethod(png)

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def create(self, document: dict[str, Any], **params: Any) -> dict[str, Any]:
        response = await self.client.post("/api/v1/orders", json=document, params=params)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def attach(
        self,
        order_id: str,
        *,
        kind: str = "requirements_spec",
        name: str = "需求规格书.pdf",
        content: bytes = PDF,
        content_type: str | None = "application/pdf",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Upload a file as a browser does: multipart, `kind` and `file`."""
        file: tuple[Any, ...] = (
            (name, content) if content_type is None else (name, content, content_type)
        )
        return await self.client.post(
            f"/api/v1/orders/{order_id}/attachments",
            data={"kind": kind},
            files={"file": file},
            headers=headers,
        )

    async def attached(self, order_id: str, **kwargs: Any) -> dict[str, Any]:
        """Upload a file that must be accepted; the stored attachment."""
        response = await self.attach(order_id, **kwargs)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()["attachment"]
        return body

    async def etag(self, order_id: str) -> str:
        response = await self.client.get(f"/api/v1/orders/{order_id}")
        assert response.status_code == 200, response.text
        return response.headers["etag"]

    async def put(self, order_id: str, document: dict[str, Any]) -> httpx.Response:
        """Edit the order as it is now (If-Match with its current ETag)."""
        return await self.client.put(
            f"/api/v1/orders/{order_id}",
            json=document,
            headers={"If-Match": await self.etag(order_id)},
        )

    async def submit(self, order_id: str) -> dict[str, Any]:
        response = await self.client.post(f"/api/v1/orders/{order_id}/submit")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def submit_with_spec(self, document: dict[str, Any]) -> dict[str, Any]:
        """An order with technical requirements, submitted the only way it can be: a draft,
        the customer's requirement specification uploaded, then submitted."""
        draft = await self.create(document)
        await self.attached(draft["id"])
        return await self.submit(draft["id"])


@pytest.fixture
def api(client: httpx.AsyncClient) -> IntakeApi:
    return IntakeApi(client)


@pytest.fixture
async def app(infra: Infra) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = intake_app(infra)
    async with running(application) as client:
        yield application, client


@pytest.fixture
def client(app: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app[1]
