"""Property-based fuzz of every service's HTTP API (schemathesis), against the real app on the
test's own vhost and database: whatever a client sends within the documented schema, the
answer is never a server error, and it is what the OpenAPI document says (a documented
status code, its content type, its body schema).

Cases are generated from each operation's schema (hypothesis, a bounded number per
operation) and sent through the app's own lifespan and event loop (`running(app)`), so the
database pool and the broker connection are the real ones.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orderflow_testkit.testing import Infra, running

ROOT = Path(__file__).resolve().parents[1]

#: Cases per operation, each of valid and of invalid input; the four services together stay
#: within about a minute here.
EXAMPLES = int(os.environ.get("ORDERFLOW_FUZZ_EXAMPLES", "25"))

CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

SERVICES: Mapping[str, tuple[str, dict[str, Any]]] = {
    "intake": ("intake", {}),
    "review-router": ("review_router", {}),
    "contracts": ("contracts", {"seller_name": "Example Seller Co., Ltd."}),
    "notifier": ("notifier", {}),
}


def fuzz_headers(app: Any) -> dict[str, str]:
    """Headers every fuzzed request carries besides the client's own: `running(app)` signs
    the client in with an API key holding every scope, so the fuzz reaches past the 401."""
    return {}


def build_app(service: str, infra: Infra) -> Any:
    package, required = SERVICES[service]
    main = importlib.import_module(f"{package}.main")
    settings_module = importlib.import_module(f"{package}.settings")
    config = settings_module.Settings(
        database_url=infra.database_url, amqp_url=infra.url_as(service), **required
    )
    return main.create_app(config)


def generated_cases(operation: Any, count: int, mode: GenerationMode) -> list[Any]:
    """`count` cases of one operation, drawn by hypothesis from its schema (no shrinking, no
    example database: a failure is reported with the case as sent). Negative cases break
    the schema on purpose (NUL bytes, huge numbers, wrong types): they must be refused with a
    documented 4xx, never a server error."""
    cases: list[Any] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=mode))
    def collect(case: Any) -> None:
        cases.append(case)

    # nothing to break in an operation without parameters or body
    with contextlib.suppress(Unsatisfiable):
        collect()
    return cases


def request_of(case: Any, headers: dict[str, str]) -> dict[str, Any]:
    """The case as httpx keyword arguments (schemathesis serialises for `requests`)."""
    kwargs = case.as_transport_kwargs(base_url="http://test", headers=headers)
    kwargs.pop("cookies", None)
    data = kwargs.pop("data", None)
    if isinstance(data, bytes | str):
        kwargs["content"] = data
    elif data is not None:
        kwargs["data"] = {k: v if isinstance(v, str | bytes) else str(v) for k, v in data.items()}
    if kwargs.get("files"):
        kwargs["files"] = [(name, _file_part(part)) for name, part in kwargs["files"]]
    return kwargs


def _file_part(part: Any) -> Any:
    # requests takes any value in a form part; httpx wants text or bytes
    if isinstance(part, tuple):
        name, content, *rest = part
        return (name, content if isinstance(content, bytes | str) else str(content), *rest)
    return part if isinstance(part, bytes | str) else str(part)


async def known_ids(
    service: str, client: httpx.AsyncClient, headers: dict[str, str]
) -> dict[str, str]:
    """Ids of things that exist, by path parameter: every other case uses one, so the fuzz
    reaches past "not found" (an order of the example document, in intake)."""
    if service != "intake":
        return {}
    document = json.loads((ROOT / "docs" / "examples" / "order-product.json").read_text())
    response = await client.post("/api/v1/orders", json=document, headers=headers)
    assert response.status_code == 201, response.text
    return {"order_id": response.json()["id"]}


async def fuzz(
    client: httpx.AsyncClient,
    openapi: dict[str, Any],
    headers: dict[str, str],
    ids: dict[str, str],
) -> dict[str, list[int]]:
    """Send generated cases to every operation; the statuses answered, by operation."""
    schema = schemathesis.openapi.from_dict(openapi)
    failures: list[str] = []
    statuses: dict[str, list[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        cases = [
            *generated_cases(operation, EXAMPLES, GenerationMode.POSITIVE),
            *generated_cases(operation, EXAMPLES, GenerationMode.NEGATIVE),
        ]
        for number, case in enumerate(cases):
            for name, value in ids.items():
                if number % 2 and name in (case.path_parameters or {}):
                    case.path_parameters[name] = value
            request = client.build_request(**request_of(case, headers))
            request.read()  # a multipart body streams; the checks read what was sent
            response = await client.send(request)
            statuses.setdefault(operation.label, []).append(response.status_code)
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:  # every failing operation is reported, not just the first
                failures.append(f"{operation.label}: {exc}")
                break
    seen = "\n".join(f"{label}: {sorted(set(codes))}" for label, codes in statuses.items())
    assert not failures, "\n\n".join([*failures, f"statuses answered:\n{seen}"])
    return statuses


@pytest.mark.timeout(300)
@pytest.mark.parametrize("service", list(SERVICES))
async def test_any_documented_request_gets_a_documented_answer(service: str, infra: Infra) -> None:
    app = build_app(service, infra)
    async with running(app) as client:
        headers = fuzz_headers(app)
        ids = await known_ids(service, client, headers)
        statuses = await fuzz(client, app.openapi(), headers, ids)
    # the fuzz got past validation into the service's own API, not only refusals
    assert any(
        200 <= code < 300
        for label, codes in statuses.items()
        if "/api/v1/" in label
        for code in codes
    ), statuses
