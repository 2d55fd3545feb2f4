"""Who may use each notifier route: an inbox is its recipient's (a notifications:read system
may read it, not mark it), deliveries are for ops. One table, one row per route and caller."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from notifier.main import create_app
from notifier.settings import Settings
from orderflow import topology
from orderflow.messages import ContractDrafted, Salesperson
from orderflow_testkit.testing import Infra, bearer, eventually, issue_key, person, publish, running

OWNER = "zhang.wei"  # the salesperson the seeded event notifies
NUMBER = "HT-2026-000009"  # in the seeded notification's text: never in a refusal


PEOPLE: dict[str, Sequence[str]] = {
    OWNER: ["salesperson"],
    "chen.jing": ["salesperson"],
    "li.ming": ["sales_manager"],  # a manager, yet not the recipient
    "wang.ops": ["ops"],
}
SYSTEMS: dict[str, Sequence[str]] = {
    "key:reader": ["notifications:read"],
    "key:metrics": ["metrics:read"],
    "key:ops": ["ops"],
}


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # {note}: the seeded notification, {delivery}: one of its deliveries
    who: str  # a person, a system key, or "anonymous"
    status: int


INBOX = f"/api/v1/inbox/{OWNER}"
ONE = f"/api/v1/inbox/{OWNER}/{{note}}/read"
ALL = f"/api/v1/inbox/{OWNER}/read"
DELIVERIES = "/api/v1/deliveries"
DELIVERY = "/api/v1/deliveries/{delivery}"
RETRY = "/api/v1/deliveries/{delivery}/retry"

MATRIX = [
    # reading an inbox: the recipient, or a notifications:read system
    *(
        Case("GET", path, who, status)
        for path in (INBOX, f"{INBOX}/unread")
        for who, status in (
            ("anonymous", 401),
            ("key:metrics", 403),
            ("chen.jing", 404),
            ("li.ming", 404),
            ("wang.ops", 404),
            ("key:reader", 200),
            (OWNER, 200),
        )
    ),
    # marking read: the recipient only
    *(
        Case("POST", path, who, status)
        for path, done in ((ONE, 204), (ALL, 200))
        for who, status in (
            ("anonymous", 401),
            ("key:reader", 403),
            ("key:ops", 403),
            ("chen.jing", 404),
            ("li.ming", 404),
            (OWNER, done),
        )
    ),
    # deliveries: ops (the retry of a delivered one is refused as not failed: 409)
    *(
        Case(method, path, who, status)
        for method, path, done in (
            ("GET", DELIVERIES, 200),
            ("GET", DELIVERY, 200),
            ("POST", RETRY, 409),
        )
        for who, status in (
            ("anonymous", 401),
            (OWNER, 403),
            ("li.ming", 403),
            ("key:reader", 403),
            ("wang.ops", done),
            ("key:ops", done),
        )
    ),
]


@pytest.fixture
async def notifier(infra: Infra, amqp: Any) -> Any:
    app = create_app(
        Settings(
            database_url=infra.database_url,
            amqp_url=infra.url_as("notifier"),
            console_base_url="http://console.example",
        )
    )
    async with running(app, scopes=None) as client:
        pool = app.state.runtime.pool
        headers = {name: await person(pool, name, roles) for name, roles in PEOPLE.items()}
        for name, scopes in SYSTEMS.items():
            headers[name] = bearer(await issue_key(pool, scopes, name=name.removeprefix("key:")))
        headers["anonymous"] = {}
        event = ContractDrafted(
            contract_id=uuid.uuid4(),
            contract_number=NUMBER,
            order_id=uuid.uuid4(),
            revision=1,
            salesperson=Salesperson(id=OWNER),
            currency="CNY",
            total="1000.00",
            drafted_at=datetime.now(UTC),
        )
        await publish(
            amqp,
            exchange=topology.EVENTS,
            routing_key=event.message_type,
            body=event.model_dump_json().encode(),
            message_type=event.message_type,
        )
        page = await eventually(lambda: _items(client, INBOX, headers[OWNER]))
        assert NUMBER in page[0]["body"]
        note = page[0]["id"]
        [delivery] = await eventually(
            lambda: _items(client, f"{DELIVERIES}?channel=inbox", headers["key:ops"])
        )
        yield client, headers, {"note": note, "delivery": delivery["id"]}


async def _items(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Any:
    response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"] or None


async def test_every_route_answers_each_caller_as_the_matrix_says(notifier: Any) -> None:
    # one service for the whole table, in its order: each route's refusals come before the
    # one call that may change something
    client, headers, ids = notifier
    wrong = []
    for case in MATRIX:
        response = await client.request(
            case.method, case.path.format(**ids), headers=headers[case.who]
        )
        if response.status_code != case.status:
            wrong.append((case, response.status_code, response.text[:200]))
        elif case.status in (401, 403, 404):
            assert response.headers["content-type"] == "application/problem+json", case
            # nothing of the inbox in a refusal (the problem's `instance` is the caller's URL)
            assert NUMBER not in response.text, case
    assert not wrong, "\n".join(map(str, wrong))


async def test_another_persons_inbox_is_the_same_404_as_an_unknown_one(notifier: Any) -> None:
    client, headers, _ = notifier
    theirs = await client.get(INBOX, headers=headers["chen.jing"])
    nobody = await client.get(
        f"/api/v1/inbox/nobody.{uuid.uuid4().hex[:6]}", headers=headers["chen.jing"]
    )
    assert (theirs.status_code, nobody.status_code) == (404, 404)
    assert theirs.json()["title"] == nobody.json()["title"]
    # the recipient's own unknown notification is a 404 too, and their inbox stays intact
    missing = await client.post(f"{INBOX}/{uuid.uuid4()}/read", headers=headers[OWNER])
    assert missing.status_code == 404
