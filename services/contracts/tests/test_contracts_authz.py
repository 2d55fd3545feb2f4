"""Who may use each contracts route: people see the contracts of the orders they see (their
own, their team's), systems with contracts:read or contracts:write see all; sending and the
signed copy are for the owner, their manager and contracts:write, voiding for the manager and
contracts:write. One table, one row per route and caller; the "by" fields are the caller."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from contracts.main import create_app
from orderflow.messages import OrderApproved
from orderflow_testkit.testing import Infra, bearer, eventually, issue_key, person, running

from .test_contracts import send, settings

Approve = Callable[..., OrderApproved]

SIGNED = b"%PDF-1.7\n% signed and sealed\n"
OWNER = "zhang.wei"  # the salesperson of the product example order

PEOPLE: dict[str, tuple[Sequence[str], Sequence[str]]] = {  # roles, team
    OWNER: (["salesperson"], []),
    "chen.jing": (["salesperson"], []),
    "li.ming": (["sales_manager"], [OWNER]),  # zhang.wei's manager
    "zhao.lei": (["sales_manager"], ["chen.jing"]),  # another team's manager
    "liu.yang": (["reviewer:finance"], []),
    "wang.ops": (["ops"], []),
}
SYSTEMS: dict[str, Sequence[str]] = {
    "key:reader": ["contracts:read"],
    "key:writer": ["contracts:write"],
    "key:crm": ["orders:write", "orders:read"],  # orders, not contracts
}


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # {a}..{e}: zhang.wei's contracts, {order}: the order of {a}
    who: str  # a person, a system key, or "anonymous"
    status: int


def reads(path: str, *, allowed: int = 200) -> list[Case]:
    return [
        Case("GET", path, who, status)
        for who, status in (
            ("anonymous", 401),
            ("liu.yang", 403),
            ("wang.ops", 403),
            ("key:crm", 403),
            ("chen.jing", 404),
            ("zhao.lei", 404),
            (OWNER, allowed),
            ("li.ming", allowed),
            ("key:reader", allowed),
            ("key:writer", allowed),
        )
    ]


def refusals(path: str, *, salesperson: int) -> list[Case]:
    return [
        Case("POST", path, who, status)
        for who, status in (
            ("anonymous", 401),
            ("liu.yang", 403),
            ("wang.ops", 403),
            ("key:reader", 403),
            ("key:crm", 403),
            ("chen.jing", salesperson),
            ("zhao.lei", 404),
        )
    ]


C = "/api/v1/contracts"
MATRIX = [
    *reads(f"{C}?order_id={{order}}"),
    *reads(f"{C}/{{a}}"),
    *reads(f"{C}/{{a}}/document"),
    *reads(f"{C}/{{a}}/signed-copy", allowed=404),  # not signed yet: no such document
    # sending: the owner, their manager, contracts:write (one contract each)
    *refusals(f"{C}/{{a}}/send", salesperson=404),
    Case("POST", f"{C}/{{a}}/send", OWNER, 200),
    Case("POST", f"{C}/{{b}}/send", "li.ming", 200),
    Case("POST", f"{C}/{{c}}/send", "key:writer", 200),
    # the signed copy: the same callers
    *refusals(f"{C}/{{a}}/signed-copy", salesperson=404),
    Case("POST", f"{C}/{{a}}/signed-copy", OWNER, 201),
    Case("POST", f"{C}/{{b}}/signed-copy", "li.ming", 201),
    Case("POST", f"{C}/{{c}}/signed-copy", "key:writer", 201),
    *reads(f"{C}/{{a}}/signed-copy"),
    # voiding: the owner's manager and contracts:write; never a salesperson, not even the owner
    *refusals(f"{C}/{{d}}/void", salesperson=403),
    Case("POST", f"{C}/{{d}}/void", OWNER, 403),
    Case("POST", f"{C}/{{d}}/void", "li.ming", 200),
    Case("POST", f"{C}/{{e}}/void", "key:writer", 200),
]

NAMES = "abcde"


@pytest.fixture
async def contracts(infra: Infra, amqp: Any, approve: Approve) -> Any:
    """The service with zhang.wei's five drafted contracts, each from its own approval on the
    bus, and a signed-in client for everyone in PEOPLE and SYSTEMS."""
    app = create_app(settings(infra))
    async with running(app, scopes=None) as client:
        pool = app.state.runtime.pool
        headers = {name: await person(pool, name, *spec) for name, spec in PEOPLE.items()}
        for name, scopes in SYSTEMS.items():
            headers[name] = bearer(await issue_key(pool, scopes, name=name.removeprefix("key:")))
        headers["anonymous"] = {}
        events = [approve("product") for _ in NAMES]
        for event in events:
            await send(amqp, event)
        ids: dict[str, str] = {"order": str(events[0].order_id)}
        for name, event in zip(NAMES, events, strict=True):
            [contract] = await eventually(lambda e=event: _listed(client, e, headers["key:reader"]))
            assert contract["content"]["salesperson"]["id"] == OWNER
            ids[name] = contract["id"]
        yield client, headers, ids


async def _listed(client: httpx.AsyncClient, event: OrderApproved, headers: Any) -> Any:
    response = await client.get(C, params={"order_id": str(event.order_id)}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"] or None


def _body(path: str) -> dict[str, Any]:
    if path.endswith("/signed-copy"):
        return {"files": {"file": ("signed.pdf", SIGNED, "application/pdf")}}
    if path.endswith("/void"):
        return {"json": {"reason": "customer cancelled"}}
    return {"json": {"by": "someone.else"}}


async def test_every_route_answers_each_caller_as_the_matrix_says(contracts: Any) -> None:
    # one service for the whole table, in its order: each route's refusals come first
    client, headers, ids = contracts
    # naming someone else as the one who voids is refused (the body has no such field): the
    # caller is who voided it; the contract stays as it was, so the matrix can void it below
    forged = await client.post(
        f"{C}/{ids['d']}/void",
        json={"reason": "customer cancelled", "by": "someone.else"},
        headers=headers["li.ming"],
    )
    assert forged.status_code == 422, forged.text
    assert [e["pointer"] for e in forged.json()["errors"]] == ["/by"]
    wrong = []
    for case in MATRIX:
        path = case.path.format(**ids)
        extra = _body(path) if case.method == "POST" else {}
        response = await client.request(case.method, path, headers=headers[case.who], **extra)
        if response.status_code != case.status:
            wrong.append((case, response.status_code, response.text[:200]))
        elif case.status in (401, 403, 404):
            assert response.headers["content-type"] == "application/problem+json", case
            assert "HT-" not in response.text, case  # no contract number in a refusal
    assert not wrong, "\n".join(map(str, wrong))

    # who acted is the caller, whatever the body said
    got = {
        n: (await client.get(f"{C}/{ids[n]}", headers=headers["key:reader"])).json() for n in NAMES
    }
    assert [got[n]["sent_by"] for n in "abc"] == [OWNER, "li.ming", "key:writer"]
    assert [got[n]["status"] for n in "abc"] == ["signed"] * 3
    assert [(got[n]["status"], got[n]["voided_by"]) for n in "de"] == [
        ("voided", "li.ming"),
        ("voided", "key:writer"),
    ]


async def test_an_order_without_visible_contracts_is_a_404_for_people(contracts: Any) -> None:
    client, headers, ids = contracts
    unknown = {"order_id": str(uuid.uuid4())}
    theirs = await client.get(C, params={"order_id": ids["order"]}, headers=headers["chen.jing"])
    missing = await client.get(C, params=unknown, headers=headers["chen.jing"])
    assert (theirs.status_code, missing.status_code) == (404, 404)
    assert theirs.json()["title"] == missing.json()["title"]
    # a system that reads every contract just sees none
    empty = await client.get(C, params=unknown, headers=headers["key:reader"])
    assert (empty.status_code, empty.json()) == (200, {"items": []})
