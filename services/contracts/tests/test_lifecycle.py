"""A contract's life over HTTP: sent, signed with an uploaded copy, or voided; and the stored
documents, which never change and are checked whenever they are served."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from structlog.testing import capture_logs

from orderflow import topology
from orderflow.db import Pool
from orderflow.messages import (
    ContractSent,
    ContractSigned,
    ContractVoided,
    Message,
    OrderApproved,
)
from orderflow_testkit.testing import Infra, get_messages, queue_depth

from .test_contracts import contracts_of, send, service, settled
from .test_contracts_authz import person

Approve = Callable[..., OrderApproved]

LIFECYCLE = "probe.contract-lifecycle"
SIGNED_COPY = b"%PDF-1.7\n% the customer's scan, signed and sealed\n" + bytes(range(256)) * 8


async def lifecycle_probe(amqp: Any) -> None:
    """Our own queue of the contract events after drafting."""
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(LIFECYCLE, durable=True)
        for event in (ContractSent, ContractSigned, ContractVoided):
            await queue.bind(topology.EVENTS, routing_key=event.message_type)


async def drafted(client: httpx.AsyncClient, amqp: Any, event: OrderApproved) -> dict[str, Any]:
    await send(amqp, event)
    [contract] = await contracts_of(client, event.order_id, 1)
    return contract  # type: ignore[no-any-return]


def assert_conflict(response: httpx.Response, current: str) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["current_status"] == current
    assert f"the contract is {current}" in problem["detail"]


def upload(
    client: httpx.AsyncClient, contract: dict[str, Any], data: bytes, name: str = "signed.pdf"
) -> Any:
    return client.post(
        f"/api/v1/contracts/{contract['id']}/signed-copy",
        files={"file": (name, data, "application/octet-stream")},
    )


async def test_drafted_sent_signed(infra: Infra, amqp: Any, approve: Approve) -> None:
    async with service(infra, signed_copy_max_bytes=4096) as (client, pool):
        await lifecycle_probe(amqp)
        event = approve("product")
        contract = await drafted(client, amqp, event)
        base = f"/api/v1/contracts/{contract['id']}"
        assert contract["status"] == "drafted"
        assert contract["signed_copy"] is None

        # not sent yet: it cannot be signed
        assert_conflict(await upload(client, contract, SIGNED_COPY), "drafted")

        # sent by the salesperson signed in (the example order is zhang.wei's)
        zhang_wei = await person(pool, "zhang.wei", ["salesperson"])
        response = await client.post(f"{base}/send", headers=zhang_wei)
        assert response.status_code == 200, response.text
        sent = response.json()
        assert (sent["status"], sent["sent_by"]) == ("sent", "zhang.wei")
        assert sent["sent_at"] == sent["status_changed_at"]
        assert_conflict(await client.post(f"{base}/send"), "sent")

        # what is not a signed PDF is refused, naming the field
        for data, why in (
            (b"PK\x03\x04 a zip file renamed to .pdf", "not a PDF"),
            (b"", "empty"),
        ):
            refused = await upload(client, contract, data)
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            [error] = refused.json()["errors"]
            assert error["pointer"] == "/file"
            assert why in error["detail"]
        too_large = await upload(client, contract, b"%PDF-" + b"x" * 4096)
        assert too_large.status_code == 413, too_large.text
        assert too_large.json()["errors"][0]["pointer"] == "/file"
        unnamed = await client.post(f"{base}/signed-copy", files={"other": ("a.pdf", SIGNED_COPY)})
        assert unnamed.status_code == 422
        assert unnamed.json()["errors"][0]["pointer"] == "/file"
        assert (await client.get(base)).json()["status"] == "sent"

        response = await upload(client, contract, SIGNED_COPY, name="已签署合同.pdf")
        assert response.status_code == 201, response.text
        assert response.headers["location"] == f"{base}/signed-copy"
        signed = response.json()
        digest = hashlib.sha256(SIGNED_COPY).hexdigest()
        assert signed["status"] == "signed"
        assert signed["signed_copy"] == {"sha256": digest, "href": f"{base}/signed-copy"}
        assert signed["signed_at"] is not None
        # the drafted document is still the one drafted
        assert signed["document"] == contract["document"]

        copy = await client.get(f"{base}/signed-copy")
        assert copy.status_code == 200
        assert copy.content == SIGNED_COPY
        assert copy.headers["content-type"] == "application/pdf"
        assert f"{contract['number']}-signed.pdf" in copy.headers["content-disposition"]
        row = await pool.fetchrow(
            "SELECT file_name, size, sha256 FROM contract_documents WHERE kind = 'signed_copy'"
        )
        assert dict(row) == {
            "file_name": "已签署合同.pdf",
            "size": len(SIGNED_COPY),
            "sha256": digest,
        }

        # signed is final here
        assert_conflict(await upload(client, contract, SIGNED_COPY), "signed")
        assert_conflict(await client.post(f"{base}/send"), "signed")
        assert_conflict(await client.post(f"{base}/void", json={"reason": "too late"}), "signed")

        await settled(pool)
        messages = await get_messages(amqp, LIFECYCLE, 2)
        assert [m.type for m in messages] == ["contract.sent", "contract.signed"]
        assert all(m.correlation_id == str(event.order_id) for m in messages)
        sent_event = ContractSent.model_validate_json(messages[0].body)
        assert (sent_event.contract_number, sent_event.sent_by) == (contract["number"], "zhang.wei")
        signed_event = ContractSigned.model_validate_json(messages[1].body)
        assert signed_event.contract_id == uuid.UUID(contract["id"])
        assert (signed_event.order_id, signed_event.revision) == (event.order_id, 1)
        assert signed_event.signed_copy_sha256 == digest
        assert await queue_depth(amqp, LIFECYCLE) == 0


async def test_voided_with_a_reason(infra: Infra, amqp: Any, approve: Approve) -> None:
    async with service(infra) as (client, pool):
        await lifecycle_probe(amqp)
        first = await drafted(client, amqp, approve("service"))
        second = await drafted(client, amqp, approve("product"))

        for body, pointer in (({}, "/reason"), ({"reason": "   "}, "/reason")):
            refused = await client.post(f"/api/v1/contracts/{first['id']}/void", json=body)
            assert refused.status_code == 422, refused.text
            assert [e["pointer"] for e in refused.json()["errors"]] == [pointer]

        # voided while still a draft, by the manager signed in (the service order is chen.jing's)
        chen_jing = await person(pool, "chen.jing", ["sales_manager"])
        response = await client.post(
            f"/api/v1/contracts/{first['id']}/void",
            json={"reason": "customer chose another supplier"},
            headers=chen_jing,
        )
        assert response.status_code == 200, response.text
        voided = response.json()
        assert voided["status"] == "voided"
        assert (voided["void_reason"], voided["voided_by"]) == (
            "customer chose another supplier",
            "chen.jing",
        )
        assert_conflict(await client.post(f"/api/v1/contracts/{first['id']}/send"), "voided")
        assert_conflict(await upload(client, first, SIGNED_COPY), "voided")
        assert_conflict(
            await client.post(f"/api/v1/contracts/{first['id']}/void", json={"reason": "again"}),
            "voided",
        )
        # its document stays downloadable
        assert (await client.get(first["document"]["href"])).status_code == 200

        # voided after it went to the customer
        assert (await client.post(f"/api/v1/contracts/{second['id']}/send")).status_code == 200
        response = await client.post(
            f"/api/v1/contracts/{second['id']}/void", json={"reason": "price renegotiated"}
        )
        assert response.json()["status"] == "voided"

        await settled(pool)
        messages = await get_messages(amqp, LIFECYCLE, 3)
        assert [m.type for m in messages] == ["contract.voided", "contract.sent", "contract.voided"]
        events: list[Message] = [ContractVoided.model_validate_json(messages[0].body)]
        assert isinstance(events[0], ContractVoided)
        assert events[0].reason == "customer chose another supplier"
        assert events[0].contract_id == uuid.UUID(first["id"])

        unknown = uuid.uuid4()
        for path, kwargs in (
            ("send", {}),
            ("void", {"json": {"reason": "x"}}),
            ("signed-copy", {"files": {"file": ("a.pdf", SIGNED_COPY)}}),
        ):
            missing = await client.post(f"/api/v1/contracts/{unknown}/{path}", **kwargs)
            assert missing.status_code == 404, (path, missing.text)
            assert missing.headers["content-type"] == "application/problem+json"
        for path in ("document", "signed-copy"):
            missing = await client.get(f"/api/v1/contracts/{unknown}/{path}")
            assert missing.status_code == 404
        no_copy = await client.get(f"/api/v1/contracts/{first['id']}/signed-copy")
        assert no_copy.status_code == 404
        assert no_copy.json()["title"] == "Contract document not found"


async def test_a_superseded_draft_stays_readable_and_cannot_be_sent(
    infra: Infra, amqp: Any, approve: Approve
) -> None:
    async with service(infra) as (client, _):
        order_id = uuid.uuid4()
        first = await drafted(client, amqp, approve("product", order_id=order_id))
        first_pdf = (await client.get(first["document"]["href"])).content

        def cheaper(document: dict[str, Any]) -> None:
            document["lines"][0]["unit_price"] = "80.00"

        await send(amqp, approve("product", order_id=order_id, revision=2, change=cheaper))
        second, earlier = await contracts_of(client, order_id, 2)
        assert earlier["status"] == "superseded"
        assert_conflict(await client.post(f"/api/v1/contracts/{first['id']}/send"), "superseded")
        again = await client.get(first["document"]["href"])
        assert again.status_code == 200
        assert again.content == first_pdf
        assert second["document"]["sha256"] != first["document"]["sha256"]


async def tamper(pool: Pool, contract_id: str, sql: str) -> None:
    """Change a stored document behind the service's back (a disk fault, a bad restore, a
    person with database access): the table refuses, so its guard is switched off here."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, uuid.UUID(contract_id))


async def test_a_tampered_document_is_never_served(
    infra: Infra, amqp: Any, approve: Approve
) -> None:
    async with service(infra) as (client, pool):
        contract = await drafted(client, amqp, approve("product"))
        other = await drafted(client, amqp, approve("service"))
        href = contract["document"]["href"]
        assert (await client.get(href)).status_code == 200

        # the database itself refuses to change or delete a stored document
        for sql in (
            "UPDATE contract_documents SET content = content || '\\x00'::bytea"
            " WHERE contract_id = $1",
            "DELETE FROM contract_documents WHERE contract_id = $1",
        ):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="immutable"):
                await pool.execute(sql, uuid.UUID(contract["id"]))

        # one byte changed: the download fails loudly, and the log says why
        await tamper(
            pool,
            contract["id"],
            "UPDATE contract_documents SET content = overlay(content placing '\\x20'::bytea"
            " from 400 for 1) WHERE contract_id = $1",
        )
        with capture_logs() as logs:
            response = await client.get(href)
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["title"] == "Stored document is corrupt"
        assert "%PDF" not in response.text
        [entry] = [e for e in logs if e["log_level"] == "error"]
        assert entry["expected_sha256"] == contract["document"]["sha256"]
        assert entry["contract_id"] == contract["id"]

        # the bytes and the row's own hash changed together: the contract's hash still tells
        await tamper(
            pool,
            other["id"],
            "UPDATE contract_documents SET content = content || '\\x0a'::bytea,"
            " sha256 = encode(sha256(content || '\\x0a'::bytea), 'hex') WHERE contract_id = $1",
        )
        response = await client.get(other["document"]["href"])
        assert response.status_code == 500
        assert response.json()["title"] == "Stored document is corrupt"
