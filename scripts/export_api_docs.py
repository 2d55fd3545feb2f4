"""Write the public API documents of every service, generated from the code:

    docs/api/<service>.openapi.json    the HTTP API of each service (FastAPI)
    docs/api/<party>.asyncapi.json     the bus, as each kind of outside party sees it
                                       (department-system, order-submitter, event-listener;
                                       `orderflow.asyncapi`, decision 0021)

    uv run python scripts/export_api_docs.py          write them
    uv run python scripts/export_api_docs.py --check  exit 1 if the committed ones differ

Each app is built with placeholder settings and never started, so nothing is connected.
The output is stable (sorted keys, fixed indentation), so a diff shows a real change.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from orderflow import asyncapi

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "docs" / "api"

# Placeholders: nothing connects to them. The AsyncAPI `servers` entry shows the broker's
# host and vhost (never credentials), so they name what the compose deployment uses.
PLACEHOLDER_DATABASE_URL = "postgresql://orderflow@postgres:5432/orderflow"
PLACEHOLDER_AMQP_URL = "amqp://rabbitmq:5672/orderflow"
#: An order-submitting system's user, as the guide's examples name it.
EXAMPLE_SUBMITTER = "crm"


@dataclass(frozen=True)
class Service:
    name: str
    package: str
    env_prefix: str
    required: dict[str, Any] = field(default_factory=dict)


SERVICES = (
    Service("intake", "intake", "INTAKE_"),
    Service("review-router", "review_router", "REVIEW_ROUTER_"),
    Service("contracts", "contracts", "CONTRACTS_", {"seller_name": "Example Seller Co., Ltd."}),
    Service("notifier", "notifier", "NOTIFIER_"),
)


class ExportError(Exception):
    """A service's documents could not be generated."""


@contextlib.contextmanager
def _without_env(prefix: str) -> Iterator[None]:
    # settings in the caller's environment must not leak into the documents
    saved = {k: v for k, v in os.environ.items() if k.startswith(prefix)}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def build_app(service: Service) -> Any:
    try:
        main = importlib.import_module(f"{service.package}.main")
        settings_module = importlib.import_module(f"{service.package}.settings")
    except ImportError as exc:
        raise ExportError(
            f"{service.name}: cannot import {service.package}.main / .settings ({exc}); "
            "every service must exist to document the system"
        ) from exc
    with _without_env(service.env_prefix):
        settings = settings_module.Settings(
            database_url=PLACEHOLDER_DATABASE_URL,
            amqp_url=PLACEHOLDER_AMQP_URL,
            **service.required,
        )
    return main.create_app(settings)


def dump(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render(service: Service) -> dict[Path, str]:
    """The OpenAPI document of one service, by the path it is committed at."""
    app = build_app(service)
    return {API_DIR / f"{service.name}.openapi.json": dump(app.openapi())}


def vhost_of(amqp_url: str) -> str:
    """The vhost an AMQP URL names, as the client reads it: the path without its leading
    slash, percent-decoded (`amqp://host/orderflow` is `orderflow`; no path is `/`)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def render_bus() -> dict[Path, str]:
    """The AsyncAPI document of each outside party, for the deployment's departments (the
    process's and those of the default review policy)."""
    try:
        bus = importlib.import_module("review_router.entrypoints.bus")
        policy = importlib.import_module("review_router.policy")
    except ImportError as exc:
        raise ExportError(f"review-router: cannot import its policy ({exc})") from exc
    parts = urlsplit(PLACEHOLDER_AMQP_URL)
    documents = asyncapi.documents(
        version=importlib.metadata.version("orderflow-shared"),
        host=f"{parts.hostname}:{parts.port}",
        vhost=vhost_of(PLACEHOLDER_AMQP_URL),
        departments=bus.departments(policy.load().reviewing_departments),
        submitter_user=EXAMPLE_SUBMITTER,
    )
    return {API_DIR / f"{party}.asyncapi.json": dump(doc) for party, doc in documents.items()}


def render_all() -> dict[Path, str]:
    documents: dict[Path, str] = {}
    errors: list[str] = []
    for service in SERVICES:
        try:
            documents.update(render(service))
        except ExportError as exc:
            errors.append(str(exc))
    try:
        documents.update(render_bus())
    except ExportError as exc:
        errors.append(str(exc))
    if errors:
        raise ExportError("\n".join(errors))
    return documents


def stale(documents: dict[Path, str]) -> list[Path]:
    """Documents whose committed file is missing or different."""
    return [
        path
        for path, text in documents.items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def orphans(documents: dict[Path, str]) -> list[Path]:
    """Committed documents the code no longer generates."""
    return sorted(p for p in API_DIR.glob("*.json") if p not in documents)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a document is stale"
    )
    args = parser.parse_args(argv)
    try:
        documents = render_all()
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    changed = stale(documents)
    gone = orphans(documents)
    if args.check:
        for path in changed:
            print(f"stale: {path.relative_to(ROOT)}", file=sys.stderr)
        for path in gone:
            print(f"not generated any more: {path.relative_to(ROOT)}", file=sys.stderr)
        if changed or gone:
            print("run `uv run python scripts/export_api_docs.py`", file=sys.stderr)
        return 1 if changed or gone else 0
    API_DIR.mkdir(parents=True, exist_ok=True)
    for path in changed:
        path.write_text(documents[path], encoding="utf-8")
    for path in gone:
        path.unlink()
        print(f"removed: {path.relative_to(ROOT)}")
    for path in sorted(documents):
        print(f"{'wrote' if path in changed else 'unchanged'}: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
