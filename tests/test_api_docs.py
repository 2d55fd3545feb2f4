"""The committed OpenAPI and AsyncAPI documents (docs/api/) are the ones the code generates,
and the AsyncAPI ones are valid AsyncAPI 3.0.0 (the JSON Schema of `@asyncapi/specs`,
vendored in tests/schemas/asyncapi/) and describe the real topology."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema_rs
import pytest

from orderflow import topology
from orderflow.messages import EVENTS

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "run `uv run python scripts/export_api_docs.py` and commit docs/api/"


@cache
def exporter() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "export_api_docs", ROOT / "scripts" / "export_api_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@cache
def generated() -> dict[Path, str]:
    documents: dict[Path, str] = exporter().render_all()
    return documents


def test_committed_documents_match_the_code() -> None:
    documents = generated()
    stale = [str(p.relative_to(ROOT)) for p in exporter().stale(documents)]
    assert not stale, f"API documents out of date: {', '.join(stale)}; {REGENERATE}"
    committed = {p.name for p in (ROOT / "docs" / "api").glob("*.json")}
    unknown = committed - {p.name for p in documents}
    assert not unknown, f"docs/api/ has documents of no service: {sorted(unknown)}"


def test_generation_is_deterministic() -> None:
    assert exporter().render_all() == generated()


@pytest.mark.parametrize("service", ["intake", "review-router", "contracts", "notifier"])
def test_each_service_documents_its_http_interface(service: str) -> None:
    documents = {p.name: json.loads(text) for p, text in generated().items()}
    openapi = documents[f"{service}.openapi.json"]
    assert "/health/ready" in openapi["paths"]
    assert any(path.startswith("/api/v1/") for path in openapi["paths"]), openapi["paths"]


# --- the bus: one AsyncAPI document per outside party -----------------------------------

PARTIES = ["department-system", "order-submitter", "event-listener"]
ASYNCAPI_SCHEMA = ROOT / "tests" / "schemas" / "asyncapi" / "3.0.0.json"


@cache
def asyncapi_validator() -> jsonschema_rs.Validator:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8"))
    return jsonschema_rs.validator_for(schema)


def party(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        generated()[ROOT / "docs" / "api" / f"{name}.asyncapi.json"]
    )
    return document


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only references inside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} points at nothing"
        node = node[part]
    return node


@pytest.mark.parametrize("name", PARTIES)
def test_each_document_is_valid_asyncapi_3(name: str) -> None:
    document = party(name)
    errors = [
        f"{'/'.join(map(str, e.instance_path))}: {e.message[:300]}"
        for e in asyncapi_validator().iter_errors(document)
    ]
    assert not errors, "\n".join(errors)
    for ref in _refs(document):
        _resolve(document, ref)


def test_the_vendored_schema_refuses_what_asyncapi_3_forbids() -> None:
    document = party("department-system")
    broken = json.loads(json.dumps(document))
    broken["operations"]["sendVerdicts.finance"]["bindings"]["amqp"]["deliveryMode"] = 3
    assert not asyncapi_validator().is_valid(broken)
    broken = json.loads(json.dumps(document))
    broken["channels"]["verdicts.finance"]["bindings"]["amqp"]["is"] = "exchange"
    assert not asyncapi_validator().is_valid(broken)


def _bindings(document: dict[str, Any]) -> set[tuple[str, str | None]]:
    found: set[tuple[str, str | None]] = set()
    for channel in document["channels"].values():
        amqp = channel.get("bindings", {}).get("amqp", {})
        if amqp.get("is") == "routingKey":
            found.add((amqp["exchange"]["name"], channel["address"]))
        for bound in channel.get("x-amqp-bindings", []):
            found.add((bound["exchange"], bound["routingKey"]))
    return found


def test_every_channel_is_on_the_real_topology() -> None:
    departments = [*topology.DEFAULT_DEPARTMENTS, "general_manager"]
    department = party("department-system")
    assert _bindings(department) == {
        *((topology.REVIEWS, d) for d in departments),
        *((topology.VERDICTS, d) for d in departments),
    }
    queues = {
        c["bindings"]["amqp"]["queue"]["name"]
        for c in department["channels"].values()
        if c.get("bindings", {}).get("amqp", {}).get("is") == "queue"
    }
    assert queues == {topology.department_queue(d).name for d in departments}
    assert _bindings(party("order-submitter")) == {(topology.COMMANDS, "order.submit")}
    assert _bindings(party("event-listener")) == {(topology.EVENTS, t) for t in EVENTS}
    for name in PARTIES:
        for channel in party(name)["channels"].values():
            amqp = channel.get("bindings", {}).get("amqp", {})
            where = amqp.get("exchange") or amqp.get("queue")
            if where is not None:
                # the vhost's name, as the provisioning step names it: no leading slash
                assert where["vhost"] == "orderflow" and where["durable"] is True
            if "exchange" in amqp:
                expected = topology.EXCHANGE_TYPES[where["name"]].value
                assert where["type"] == expected


@pytest.mark.parametrize("name", PARTIES)
def test_every_message_says_what_travels(name: str) -> None:
    document = party(name)
    for operation in document["operations"].values():
        assert operation["bindings"]["amqp"]["deliveryMode"] == 2
    for key, message in document["components"]["messages"].items():
        payload = _resolve(document, message["payload"]["$ref"])
        assert payload.get("type") == "object", f"{key}: a payload is an object, never null"
        props = message["x-amqp-properties"]
        for required in ("user_id", "message_id", "type", "content_type", "delivery_mode"):
            assert required in props["required"], f"{key}: {required}"
        assert props["properties"]["type"]["const"] == message["name"]
        assert message["bindings"]["amqp"]["messageType"] == message["name"]
        assert "SECONDS" in props["properties"]["timestamp"]["description"]
        assert (
            message["headers"]["properties"]["x-schema"]["const"] == f"orderflow.{message['name']}"
        )


def test_the_department_system_sends_to_the_verdicts_exchange_as_its_user() -> None:
    operations = party("department-system")["operations"]
    send = operations["sendVerdicts.finance"]
    assert send["action"] == "send" and send["bindings"]["amqp"]["userId"] == "dept-finance"
    assert operations["receiveReviews.finance"]["action"] == "receive"
    submit = party("order-submitter")["operations"]["sendOrderSubmit"]
    assert submit["action"] == "send"
    assert submit["reply"]["channel"] == {"$ref": "#/channels/replies.order.submit"}
    listener = party("event-listener")["operations"]
    assert {o["action"] for o in listener.values()} == {"receive"}
