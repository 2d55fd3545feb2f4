"""Who may use each review-router route: a round or review belongs to the salesperson on the
order it reviews (they, their sales manager and order-reading systems see it), rounds are open
to any reviewer, a review to its department's reviewers, department work lists to the
department, and reviews:read systems see everything. One table, one row per route and caller.

Every route here only reads (departments act on the bus), so there is no write rule to test."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from orderflow_testkit.testing import Infra, bearer, eventually, issue_key, person, running
from review_router.main import create_app

from .test_router import product_order, settings, submit

OWNER = "zhang.wei"  # the salesperson of product_order()

PEOPLE: dict[str, tuple[Sequence[str], Sequence[str]]] = {  # roles, team
    OWNER: (["salesperson"], []),
    "chen.jing": (["salesperson"], []),
    "li.ming": (["sales_manager"], [OWNER]),  # zhang.wei's manager
    "zhao.lei": (["sales_manager"], ["chen.jing"]),  # another team's manager
    "sup.lead": (["reviewer:supervisor"], []),
    "fin.lead": (["reviewer:finance"], []),
    "wang.ops": (["ops"], []),
}
SYSTEMS: dict[str, Sequence[str]] = {
    "key:reviews": ["reviews:read"],
    "key:crm": ["orders:read"],
    "key:metrics": ["metrics:read"],
}


@dataclass(frozen=True)
class Case:
    path: str  # {order}, {round}; {supervisor}/{finance}: that department's review
    who: str  # a person, a system key, or "anonymous"
    status: int


def row(path: str, expected: dict[str, int]) -> list[Case]:
    return [Case(path, who, status) for who, status in expected.items()]


# a round's or review's owner side and the callers who may never see one
OBJECT = {
    "anonymous": 401,
    "wang.ops": 403,
    "key:metrics": 403,
    "chen.jing": 404,
    "zhao.lei": 404,
    OWNER: 200,
    "li.ming": 200,
    "key:crm": 200,
    "key:reviews": 200,
}
R = "/api/v1"
MATRIX = [
    *row(f"{R}/rounds?order_id={{order}}", OBJECT | {"sup.lead": 200, "fin.lead": 200}),
    *row(f"{R}/rounds/{{round}}", OBJECT | {"sup.lead": 200, "fin.lead": 200}),
    *row(f"{R}/reviews/{{supervisor}}", OBJECT | {"sup.lead": 200, "fin.lead": 404}),
    *row(f"{R}/reviews/{{finance}}", OBJECT | {"sup.lead": 404, "fin.lead": 200}),
    *row(
        f"{R}/departments/supervisor/pending",
        {
            "anonymous": 401,
            OWNER: 403,
            "li.ming": 403,
            "wang.ops": 403,
            "fin.lead": 403,
            "key:crm": 403,
            "sup.lead": 200,
            "key:reviews": 200,
        },
    ),
    *row(
        f"{R}/policy",
        {
            "anonymous": 401,
            OWNER: 200,
            "chen.jing": 200,
            "wang.ops": 200,
            "sup.lead": 200,
            "key:metrics": 200,
        },
    ),
]


@pytest.fixture
async def router(infra: Infra, amqp: Any) -> Any:
    """The router with one submitted product order of zhang.wei's (its round waiting for the
    supervisor), and a signed-in client for everyone in PEOPLE and SYSTEMS."""
    app = create_app(settings(infra))
    async with running(app, scopes=None) as client:
        pool = app.state.runtime.pool
        headers = {name: await person(pool, name, *spec) for name, spec in PEOPLE.items()}
        for name, scopes in SYSTEMS.items():
            headers[name] = bearer(await issue_key(pool, scopes, name=name.removeprefix("key:")))
        headers["anonymous"] = {}
        submitted = await submit(amqp, product_order())
        [round_] = await eventually(
            lambda: _rounds(client, submitted.order_id, headers["key:reviews"])
        )
        reviews = {r["department"]: r["review_id"] for r in round_["requests"]}
        ids = {
            "order": str(submitted.order_id),
            "round": round_["id"],
            "supervisor": reviews["supervisor"],
            "finance": reviews["finance"],
        }
        yield client, headers, ids


async def _rounds(client: httpx.AsyncClient, order_id: uuid.UUID, headers: Any) -> Any:
    response = await client.get(f"{R}/rounds", params={"order_id": str(order_id)}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"] or None


async def test_every_route_answers_each_caller_as_the_matrix_says(router: Any) -> None:
    client, headers, ids = router
    wrong = []
    for case in MATRIX:
        response = await client.get(case.path.format(**ids), headers=headers[case.who])
        if response.status_code != case.status:
            wrong.append((case, response.status_code, response.text[:200]))
        elif case.status in (401, 403, 404):
            assert response.headers["content-type"] == "application/problem+json", case
            # nothing of the order in a refusal (the problem's `instance` is the caller's URL)
            assert "上海精密机械" not in response.text, case
    assert not wrong, "\n".join(map(str, wrong))


async def test_an_order_without_visible_rounds_is_a_404_for_its_side(router: Any) -> None:
    client, headers, ids = router
    unknown = {"order_id": str(uuid.uuid4())}
    theirs = await client.get(
        f"{R}/rounds", params={"order_id": ids["order"]}, headers=headers["chen.jing"]
    )
    missing = await client.get(f"{R}/rounds", params=unknown, headers=headers["chen.jing"])
    assert (theirs.status_code, missing.status_code) == (404, 404)
    assert theirs.json()["title"] == missing.json()["title"]
    # a reviewer, who may see every round, just sees none
    empty = await client.get(f"{R}/rounds", params=unknown, headers=headers["sup.lead"])
    assert (empty.status_code, empty.json()["items"]) == (200, [])
