"""The committed OpenAPI and AsyncAPI documents (docs/api/) are the ones the code generates."""

from __future__ import annotations

import importlib.util
import json
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

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
def test_each_service_documents_its_http_and_bus_interfaces(service: str) -> None:
    documents = {p.name: json.loads(text) for p, text in generated().items()}
    openapi = documents[f"{service}.openapi.json"]
    assert "/health/ready" in openapi["paths"]
    assert any(path.startswith("/api/v1/") for path in openapi["paths"]), openapi["paths"]
    asyncapi = documents[f"{service}.asyncapi.json"]
    assert asyncapi["asyncapi"].startswith("3.")
    assert asyncapi["channels"], f"{service} documents no channel on the bus"
    # the placeholder broker of the generator, never a real host or a password
    assert asyncapi["servers"]["development"]["host"] == "rabbitmq:5672"
