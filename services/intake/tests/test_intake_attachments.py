"""Files of an order against the real broker and database: upload, download, refusals that
leave nothing behind, names made safe, files frozen with a submitted revision, and the
customer's written confirmation."""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from orderflow import topology
from orderflow.messages import (
    Decision,
    DepartmentFeedback,
    OrderChangesRequested,
    OrderSubmitted,
    Reviewer,
    Salesperson,
)
from orderflow_testkit.testing import Infra, eventually, get_messages, publish, running

PROBLEM_JSON = "application/problem+json"


async def stored(app: FastAPI) -> dict[str, int]:
    """How many files, blobs and chunks of bytes the database holds."""
    pool = app.state.runtime.pool
    return {
        table: await pool.fetchval(f"SELECT count(*) FROM {table}")
        for table in ("attachments", "revision_attachments", "blobs", "blob_chunks")
    }


NOTHING = {"attachments": 0, "revision_attachments": 0, "blobs": 0, "blob_chunks": 0}


def docx() -> bytes:
    """A minimal Word document, its identifying entry last, as some tools write them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("docProps/app.xml", "<Properties/>" * 2000)
        archive.writestr("word/document.xml", "<w:document/>")
    return buffer.getvalue()


async def send_changes_requested(amqp: Any, order_id: str, revision: int) -> None:
    event = OrderChangesRequested(
        order_id=order_id,
        revision=revision,
        salesperson=Salesperson(id="zhang.wei"),
        feedback=[
            DepartmentFeedback(
                department="technical",
                decision=Decision.REQUEST_CHANGES,
                reviewer=Reviewer(id="zhao.min"),
                comment="规格书版本过旧",
            )
        ],
        annotations=[],
        decided_at=datetime.now(UTC),
    )
    await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key=event.message_type,
        body=event.model_dump_json().encode(),
        message_type=event.message_type,
        correlation_id=order_id,
    )


async def test_upload_list_and_download(
    app: tuple[FastAPI, httpx.AsyncClient], api: Any, product_order: dict[str, Any]
) -> None:
    application, client = app
    order = await api.create(product_order)
    before = await api.etag(order["id"])

    response = await api.attach(order["id"], name="需求规格书 v1.pdf")
    assert response.status_code == 201, response.text
    body = response.json()
    spec = body["attachment"]
    assert body["revision"] == 1
    assert spec["kind"] == "requirements_spec"
    assert spec["name"] == "需求规格书 v1.pdf"
    assert spec["content_type"] == "application/pdf"
    assert spec["size"] == len(api.pdf)
    assert spec["sha256"] == hashlib.sha256(api.pdf).hexdigest()
    assert spec["download_path"] == f"/api/v1/orders/{order['id']}/attachments/{spec['id']}"
    assert response.headers["location"] == spec["download_path"]
    # the order changed: a new ETag, in the header and the body
    assert response.headers["etag"] == body["etag"] != before
    assert await api.etag(order["id"]) == body["etag"]

    drawing = await api.attached(
        order["id"], kind="drawing", name="法兰图.png", content=api.png(4, 3), content_type=None
    )
    assert drawing["content_type"] == "image/png"
    word = await api.attached(
        order["id"],
        kind="other",
        name="说明.docx",
        content=docx(),
        content_type="application/octet-stream",
    )
    assert word["content_type"].endswith("wordprocessingml.document")
    bom = await api.attached(
        order["id"],
        kind="other",
        name="物料清单.csv",
        content="物料,数量\n法兰,200\n".encode(),
        content_type="application/vnd.ms-excel",  # how Windows browsers label a .csv
    )
    assert bom["content_type"] == "text/csv"
    # the same bytes again: another file of the order, stored once
    again = await api.attached(order["id"], kind="contract", name="合同草稿.pdf")
    assert again["sha256"] == spec["sha256"] and again["id"] != spec["id"]
    assert await stored(application) == {
        "attachments": 5,
        "revision_attachments": 5,
        "blobs": 4,
        "blob_chunks": 4,
    }

    listing = (await client.get(f"/api/v1/orders/{order['id']}/attachments")).json()
    assert listing["revision"] == 1
    assert [a["id"] for a in listing["items"]] == [
        spec["id"],
        drawing["id"],
        word["id"],
        bom["id"],
        again["id"],
    ]
    assert listing["items"][0] == spec

    download = await client.get(spec["download_path"])
    assert download.status_code == 200
    assert download.content == api.pdf
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-length"] == str(len(api.pdf))
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["content-disposition"] == (
        'attachment; filename="_____ v1.pdf"; '
        "filename*=UTF-8''%E9%9C%80%E6%B1%82%E8%A7%84%E6%A0%BC%E4%B9%A6%20v1.pdf"
    )
    image = await client.get(drawing["download_path"])
    assert image.content == api.png(4, 3) and image.headers["content-type"] == "image/png"
    csv = await client.get(bom["download_path"])
    assert csv.headers["content-type"].startswith("text/csv")

    other = await api.create(product_order)
    wrong_order = await client.get(f"/api/v1/orders/{other['id']}/attachments/{spec['id']}")
    assert wrong_order.status_code == 404
    assert wrong_order.headers["content-type"] == PROBLEM_JSON
    assert (await client.get(f"/api/v1/orders/{uuid.uuid4()}/attachments")).status_code == 404


async def test_a_large_file_streams_in_and_out(
    app: tuple[FastAPI, httpx.AsyncClient], api: Any, product_order: dict[str, Any]
) -> None:
    application, client = app
    order = await api.create(product_order)
    # 3 MiB of a PDF: spooled to disk on the way in, 256 KiB chunks in the database
    content = api.pdf + bytes(range(256)) * (3 * 4096)
    spec = await api.attached(order["id"], content=content)
    assert spec["size"] == len(content)
    assert (await stored(application))["blob_chunks"] == -(-len(content) // (256 * 1024))
    download = await client.get(spec["download_path"])
    assert hashlib.sha256(download.content).hexdigest() == spec["sha256"]


@pytest.fixture
async def small(infra: Infra) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Intake with a 64 KiB limit on files."""
    from intake.main import create_app
    from intake.settings import Settings

    application = create_app(
        Settings(
            database_url=infra.database_url,
            amqp_url=infra.url_as("intake"),
            max_attachment_bytes=64 * 1024,
        )
    )
    async with running(application) as client:
        yield application, client


def multipart(name: str, content: bytes, content_type: str) -> tuple[bytes, bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\ndrawing\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head, tail, f"multipart/form-data; boundary={boundary}"


async def test_oversized_upload_refused_and_nothing_stored(
    small: tuple[FastAPI, httpx.AsyncClient], product_order: dict[str, Any]
) -> None:
    application, client = small
    created = await client.post("/api/v1/orders", json=product_order)
    order_id = created.json()["id"]
    before = created.headers["etag"]
    url = f"/api/v1/orders/{order_id}/attachments"

    # exactly at the limit: accepted
    limit = 64 * 1024
    at_limit = await client.post(
        url, data={"kind": "other"}, files={"file": ("a.txt", b"a" * limit, "text/plain")}
    )
    assert at_limit.status_code == 201, at_limit.text
    deleted = await client.delete(at_limit.json()["attachment"]["download_path"])
    assert deleted.status_code == 204
    assert await stored(application) == NOTHING
    before = deleted.headers["etag"]

    # one byte over: refused
    over = await client.post(
        url, data={"kind": "other"}, files={"file": ("a.txt", b"a" * (limit + 1), "text/plain")}
    )
    assert over.status_code == 413
    assert over.headers["content-type"] == PROBLEM_JSON
    problem = over.json()
    assert problem["limit"] == limit
    assert problem["errors"] == [{"pointer": "/file", "detail": f"larger than {limit} bytes"}]
    assert "64 MiB" not in problem["detail"] and "0.0625 MiB" in problem["detail"]

    # far over, streamed without a length: reading stops at the limit
    head, tail, content_type = multipart("huge.pdf", b"", "application/pdf")
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield head + b"%PDF-1.4\n"
        for _ in range(400):  # 400 x 64 KiB = 25 MiB
            sent += 1
            yield b"\0" * limit
        yield tail

    streamed = await client.post(url, content=body(), headers={"content-type": content_type})
    assert streamed.status_code == 413
    assert streamed.json()["errors"][0]["pointer"] == "/file"
    assert sent < 5  # the rest of the upload was never asked for

    # far over, and saying so in Content-Length: refused before a byte is read
    sent = 0
    announced = await client.post(
        url,
        content=body(),
        headers={"content-type": content_type, "content-length": str(400 * limit)},
    )
    assert announced.status_code == 413
    assert sent == 0

    assert await stored(application) == NOTHING
    assert (await client.get(f"/api/v1/orders/{order_id}")).headers["etag"] == before


async def test_mislabelled_uploads_refused_and_nothing_stored(
    app: tuple[FastAPI, httpx.AsyncClient], api: Any, product_order: dict[str, Any]
) -> None:
    application, client = app
    order = await api.create(product_order)
    before = await api.etag(order["id"])

    # a PNG sent as a PDF
    png_as_pdf = await api.attach(order["id"], name="drawing.pdf", content=api.png())
    assert png_as_pdf.status_code == 422
    assert png_as_pdf.headers["content-type"] == PROBLEM_JSON
    assert png_as_pdf.json()["type"] == "urn:orderflow:problem:file-refused"
    errors = png_as_pdf.json()["errors"]
    assert [e["pointer"] for e in errors] == ["/file", "/file"]
    assert "sent as application/pdf but its content is PNG" in errors[0]["detail"]
    assert "named *.pdf (PDF) but its content is PNG" in errors[1]["detail"]

    # an executable renamed .pdf
    exe = await api.attach(order["id"], name="规格书.pdf", content=api.exe)
    assert exe.status_code == 415
    [error] = exe.json()["errors"]
    assert error["pointer"] == "/file"
    assert "application/x-msdownload, which is not accepted" in error["detail"]

    # a real PDF under an executable's name
    named_exe = await api.attach(order["id"], name="invoice.exe", content_type=None)
    assert named_exe.status_code == 415
    assert "*.exe" in named_exe.json()["errors"][0]["detail"]

    # bytes of no known kind, and a kind of file not accepted
    unknown = await api.attach(order["id"], content=b"\x00\x01\x02\x03" * 100)
    assert unknown.status_code == 415
    gif = await api.attach(
        order["id"], name="a.gif", content=b"GIF89a" + b"\0" * 50, content_type="image/gif"
    )
    assert gif.status_code == 415

    # the form itself: every problem at once
    bad_form = await client.post(
        f"/api/v1/orders/{order['id']}/attachments",
        data={"kind": "photo"},
        files={"note": (None, "no file here")},
    )
    assert bad_form.status_code == 422
    assert {e["pointer"] for e in bad_form.json()["errors"]} == {"/kind", "/file"}
    assert "requirements_spec" in bad_form.json()["errors"][0]["detail"]
    two = await client.post(
        f"/api/v1/orders/{order['id']}/attachments",
        data={"kind": "drawing"},
        files=[("file", ("a.pdf", api.pdf, "application/pdf")), ("file", ("b.pdf", api.pdf))],
    )
    assert two.status_code == 422
    assert two.json()["errors"] == [
        {"pointer": "/file", "detail": "one file per upload; send the others apart"}
    ]
    empty = await api.attach(order["id"], content=b"")
    assert empty.status_code == 422
    assert empty.json()["errors"] == [{"pointer": "/file", "detail": "the file is empty"}]
    not_multipart = await client.post(
        f"/api/v1/orders/{order['id']}/attachments",
        content=api.pdf,
        headers={"content-type": "application/pdf"},
    )
    assert not_multipart.status_code == 415
    form = await client.post(f"/api/v1/orders/{order['id']}/attachments", data={"kind": "drawing"})
    assert form.status_code == 415
    assert "multipart/form-data" in form.json()["detail"]

    assert await stored(application) == NOTHING
    assert await api.etag(order["id"]) == before


async def test_path_traversal_names_are_neutralised(
    app: tuple[FastAPI, httpx.AsyncClient], api: Any, product_order: dict[str, Any]
) -> None:
    _, client = app
    order = await api.create(product_order)
    passwd = await api.attached(
        order["id"],
        kind="other",
        name="../../etc/passwd",
        content=b"root:x:0:0:root:/root:/bin/bash\n",
        content_type="text/plain",
    )
    assert passwd["name"] == "passwd.txt"
    windows = await api.attached(order["id"], kind="other", name="..\\..\\x.pdf")
    assert windows["name"] == "x.pdf"
    spoofed = await api.attached(order["id"], kind="other", name='合同\u202e"fdp.exe\x07".pdf')
    assert spoofed["name"] == "合同_fdp.exe_.pdf"
    device = await api.attached(order["id"], kind="other", name="CON.pdf")
    assert device["name"] == "_CON.pdf"
    dots = await api.attached(order["id"], kind="other", name="..")
    assert dots["name"] == "attachment.pdf"

    download = await client.get(windows["download_path"])
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"x.pdf\"; filename*=UTF-8''x.pdf"
    )
    download = await client.get(passwd["download_path"])
    assert download.headers["content-type"] == "text/plain; charset=utf-8"
    assert "passwd.txt" in download.headers["content-disposition"]


async def test_uploads_only_while_the_order_is_editable(
    app: tuple[FastAPI, httpx.AsyncClient], api: Any, product_order: dict[str, Any]
) -> None:
    application, _ = app
    order = await api.create(product_order, submit="true")
    # under review the decision is waited for (here: not at all), then it is a conflict
    refused = await api.attach(order["id"], headers={"Prefer": "wait=0"})
    assert refused.status_code == 409
    assert refused.json()["current_status"] == "submitted"
    assert refused.json()["retryable"] is True and "retry-after" in refused.headers
    missing = await api.attach(str(uuid.uuid4()))
    assert missing.status_code == 404
    assert await stored(application) == NOTHING


async def test_files_are_frozen_with_the_submitted_revision(
    app: tuple[FastAPI, httpx.AsyncClient],
    api: Any,
    amqp: Any,
    product_order: dict[str, Any],
) -> None:
    application, client = app
    order = await api.create(product_order)
    order_id = order["id"]
    old_spec = await api.attached(order_id, name="规格书 v1.pdf")
    drawing = await api.attached(
        order_id, kind="drawing", name="图.png", content=api.png(), content_type="image/png"
    )
    await api.submit(order_id)
    [first] = await get_messages(amqp, topology.ROUTER_SUBMITTED.name, 1)
    submitted = OrderSubmitted.model_validate_json(first.body)
    assert [a.id for a in submitted.attachments] == [
        uuid.UUID(old_spec["id"]),
        uuid.UUID(drawing["id"]),
    ]
    assert submitted.attachments[0].download_path == old_spec["download_path"]

    # a submitted revision takes no file, and loses none
    no_wait = {"Prefer": "wait=0"}
    assert (await api.attach(order_id, headers=no_wait)).status_code == 409
    assert (await client.delete(old_spec["download_path"], headers=no_wait)).status_code == 409

    # sent back: the salesperson replaces the specification
    await send_changes_requested(amqp, order_id, 1)

    async def sent_back() -> bool:
        body = (await client.get(f"/api/v1/orders/{order_id}")).json()
        return bool(body["status"] == "changes_requested")

    await eventually(sent_back)
    removed = await client.delete(old_spec["download_path"])
    assert removed.status_code == 204
    new_spec = await api.attached(order_id, name="规格书 v2.pdf", content=api.pdf + b"% v2\n")

    current = (await client.get(f"/api/v1/orders/{order_id}/attachments")).json()
    assert current["revision"] == 2
    assert [a["id"] for a in current["items"]] == [drawing["id"], new_spec["id"]]
    reviewed = (await client.get(f"/api/v1/orders/{order_id}/revisions/1")).json()
    assert [a["id"] for a in reviewed["attachments"]] == [old_spec["id"], drawing["id"]]
    by_query = await client.get(f"/api/v1/orders/{order_id}/attachments", params={"revision": 1})
    assert by_query.json()["items"] == reviewed["attachments"]
    # what the departments reviewed is still there to download
    old = await client.get(old_spec["download_path"])
    assert old.status_code == 200 and old.content == api.pdf

    # the database refuses to change a submitted revision's files, whoever asks
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="submitted"):
        await application.state.runtime.pool.execute(
            "DELETE FROM revision_attachments WHERE order_id = $1 AND revision = 1",
            uuid.UUID(order_id),
        )

    await api.submit(order_id)
    [second] = await get_messages(amqp, topology.ROUTER_SUBMITTED.name, 1)
    resubmitted = OrderSubmitted.model_validate_json(second.body)
    assert resubmitted.revision == 2 and resubmitted.previous_revision == 1
    assert [a.id for a in resubmitted.attachments] == [
        uuid.UUID(drawing["id"]),
        uuid.UUID(new_spec["id"]),
    ]
    assert [(c.pointer, c.old is None, c.new is None) for c in resubmitted.changes] == [
        (f"/attachments/{old_spec['id']}", False, True),
        (f"/attachments/{new_spec['id']}", True, False),
    ]
    assert resubmitted.changes[0].old["name"] == "规格书 v1.pdf"
    assert resubmitted.changes[1].new["download_path"] == new_spec["download_path"]


async def test_a_file_only_a_draft_had_is_gone_when_removed(
    app: tuple[FastAPI, httpx.AsyncClient], api: Any, product_order: dict[str, Any]
) -> None:
    application, client = app
    order = await api.create(product_order)
    wrong = await api.attached(
        order["id"], kind="other", name="wrong.png", content=api.png(2, 2), content_type=None
    )
    kept = await api.attached(order["id"])
    before = await api.etag(order["id"])
    removed = await client.delete(wrong["download_path"])
    assert removed.status_code == 204
    assert removed.headers["etag"] != before
    assert (await client.get(wrong["download_path"])).status_code == 404
    assert await stored(application) == {
        "attachments": 1,
        "revision_attachments": 1,
        "blobs": 1,
        "blob_chunks": 1,
    }
    listing = (await client.get(f"/api/v1/orders/{order['id']}/attachments")).json()
    assert [a["id"] for a in listing["items"]] == [kept["id"]]
    again = await client.delete(wrong["download_path"])
    assert again.status_code == 404


async def test_customer_confirmation_on_file_for_a_custom_order(
    app: tuple[FastAPI, httpx.AsyncClient],
    api: Any,
    amqp: Any,
    technical_order: dict[str, Any],
) -> None:
    _, client = app
    product_order = technical_order
    product_order["order_type"] = "custom"
    product_order["customer_confirmation"]["method"] = "phone"
    order = await api.create(product_order)
    refused = await client.post(f"/api/v1/orders/{order['id']}/submit")
    assert refused.status_code == 422
    found = {(e["pointer"], e["detail"].split(":")[0]) for e in refused.json()["errors"]}
    assert found == {
        (
            "/customer_confirmation/attachment_id",
            "a custom order needs the customer's written confirmation on file (confirmed by "
            "phone is not enough)",
        ),
        (
            "/attachments",
            "a custom order needs the customer's drawing or requirement specification",
        ),
        ("/attachments", "the order has technical requirements"),
    }

    await api.attached(
        order["id"], kind="drawing", name="图纸.png", content=api.png(), content_type=None
    )
    await api.attached(order["id"])
    letter = await api.attached(
        order["id"],
        kind="customer_confirmation",
        name="确认函扫描.png",
        content=api.png(2, 1),
        content_type="image/png",
    )
    # named, but a drawing is not a confirmation
    drawing_id = (await client.get(f"/api/v1/orders/{order['id']}/attachments")).json()["items"][0]
    product_order["customer_confirmation"]["attachment_id"] = drawing_id["id"]
    assert (await api.put(order["id"], product_order)).status_code == 200
    refused = await client.post(f"/api/v1/orders/{order['id']}/submit")
    assert [e["pointer"] for e in refused.json()["errors"]] == [
        "/customer_confirmation/attachment_id"
    ]
    assert "attached as drawing" in refused.json()["errors"][0]["detail"]

    product_order["customer_confirmation"]["attachment_id"] = letter["id"]
    assert (await api.put(order["id"], product_order)).status_code == 200
    submitted = await api.submit(order["id"])
    assert submitted["status"] == "submitted"
    [msg] = await get_messages(amqp, topology.ROUTER_SUBMITTED.name, 1)
    event = OrderSubmitted.model_validate_json(msg.body)
    assert event.order.customer_confirmation is not None
    assert str(event.order.customer_confirmation.attachment_id) == letter["id"]
    assert [a.kind.value for a in event.attachments] == [
        "drawing",
        "requirements_spec",
        "customer_confirmation",
    ]
