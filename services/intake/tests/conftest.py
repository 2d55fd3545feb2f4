"""Intake's test fixtures: the example orders and a running service on the test's own
broker vhost and database."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from intake.main import create_app
from intake.settings import Settings
from orderflow.testing import Infra, running

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"

#: Before both examples' delivery dates and after their customers' confirmations.
TODAY = date(2026, 12, 1)


def example(name: str) -> dict[str, Any]:
    """An example order exactly as an outside system sends it (a fresh copy each time)."""
    return copy.deepcopy(json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8")))


@pytest.fixture
def product_order() -> dict[str, Any]:
    return example("order-product")


@pytest.fixture
def service_order() -> dict[str, Any]:
    return example("order-service")


def intake_app(infra: Infra) -> FastAPI:
    app = create_app(Settings(database_url=infra.database_url, amqp_url=infra.amqp_url))
    app.state.today = lambda: TODAY
    return app


@pytest.fixture
async def app(infra: Infra) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = intake_app(infra)
    async with running(application) as client:
        yield application, client


@pytest.fixture
def client(app: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app[1]
