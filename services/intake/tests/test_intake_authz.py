"""Who may use which intake route, on which order: the authorization matrix (every route by
every kind of caller), the actor on the timeline and on the order, salespeople named in
documents and in imports. People sign in with local accounts and sessions; systems with
API keys; on a real service app and database."""

from __future__ import annotations

import copy
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from intake import bulk, handlers
from orderflow import topology
from orderflow.auth import store as auth_store
from orderflow.db import transaction
from orderflow_testkit.testing import Infra, bearer, eventually, issue_key, publish

#: A small but well-formed PDF.
PDF = (
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
    b"trailer <</Root 1 0 R>>\n%%EOF\n"
)

# --- who calls --------------------------------------------------------------------------

ANON = "anonymous"
OPS = "ops person"
CONTRACTS_KEY = "contracts:read key"
OWNER = "owner zhang.wei"
OTHER = "salesperson li.na"
MANAGER = "manager of zhang.wei"
OUTSIDER = "manager of li.na"
REVIEWER = "reviewer, submitted"
REVIEWER_DRAFT = "reviewer, draft"
SELLER_REVIEWER = "salesperson+reviewer"
READ_KEY = "orders:read key"
WRITE_KEY = "orders:write key"

#: username -> (roles, team)
PEOPLE: dict[str, tuple[list[str], list[str]]] = {
    "zhang.wei": (["salesperson"], []),
    "li.na": (["salesperson"], []),
    "liu.yang": (["sales_manager"], ["zhang.wei"]),
    "zhao.lei": (["sales_manager"], ["li.na"]),
    "wang.fang": (["reviewer:finance"], []),
    "sun.li": (["salesperson", "reviewer:finance"], []),
    "he.ops": (["ops"], []),
}
#: who -> a person's username or a key's scopes (None: anonymous)
CALLERS: dict[str, str | list[str] | None] = {
    ANON: None,
    OPS: "he.ops",
    CONTRACTS_KEY: ["contracts:read"],
    OWNER: "zhang.wei",
    OTHER: "li.na",
    MANAGER: "liu.yang",
    OUTSIDER: "zhao.lei",
    REVIEWER: "wang.fang",
    REVIEWER_DRAFT: "wang.fang",
    SELLER_REVIEWER: "sun.li",
    READ_KEY: ["orders:read"],
    WRITE_KEY: ["orders:write"],
}
COLUMNS = tuple(CALLERS)

# --- what they call ---------------------------------------------------------------------

#: The order a route is called on: read routes on a submitted order with a file, write
#: routes on a fresh draft with a file (so an allowed change succeeds); the reviewer
#: columns on the order in the state they name.
SUBMITTED, DRAFT = "submitted", "draft"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {id}: the order, {file}: its file
    target: str | None  # the order's state, None: no order
    body: str | None = None  # document, file, jsonl


ROUTES: dict[str, Route] = {
    "create": Route("POST", "/api/v1/orders", None, "document"),
    "create+submit": Route("POST", "/api/v1/orders?submit=true", None, "document"),
    "list": Route("GET", "/api/v1/orders", None),
    "get": Route("GET", "/api/v1/orders/{id}", SUBMITTED),
    "revisions": Route("GET", "/api/v1/orders/{id}/revisions", SUBMITTED),
    "revision": Route("GET", "/api/v1/orders/{id}/revisions/1", SUBMITTED),
    "diff": Route("GET", "/api/v1/orders/{id}/revisions/1/diff/1", SUBMITTED),
    "timeline": Route("GET", "/api/v1/orders/{id}/timeline", SUBMITTED),
    "files": Route("GET", "/api/v1/orders/{id}/attachments", SUBMITTED),
    "download": Route("GET", "/api/v1/orders/{id}/attachments/{file}", SUBMITTED),
    "put": Route("PUT", "/api/v1/orders/{id}", DRAFT, "document"),
    "submit": Route("POST", "/api/v1/orders/{id}/submit", DRAFT),
    "withdraw": Route("POST", "/api/v1/orders/{id}/withdraw", DRAFT),
    "upload": Route("POST", "/api/v1/orders/{id}/attachments", DRAFT, "file"),
    "remove file": Route("DELETE", "/api/v1/orders/{id}/attachments/{file}", DRAFT),
    "import": Route("POST", "/api/v1/orders/import", None, "jsonl"),
    "admin keys": Route("GET", "/api/v1/admin/api-keys", None),
}

# fmt: off
#: Expected status per route (rows) and caller (columns, in the order of CALLERS):
#: 401 anonymous; 403 no role that could ever use the route (or may see but not change);
#: 404 may use the route but not see this order (the answer for a missing one).
#: Creating or importing for someone else is refused by field (403 / per row, see below).
MATRIX: dict[str, tuple[int, ...]] = {
    #                 anon ops  ckey own  oth  mgr  out  rev  revD s+r  rkey wkey
    "create":        (401, 403, 403, 201, 403, 201, 403, 403, 403, 403, 403, 201),
    "create+submit": (401, 403, 403, 201, 403, 201, 403, 403, 403, 403, 403, 201),
    "list":          (401, 403, 403, 200, 200, 200, 200, 403, 403, 200, 200, 200),
    "get":           (401, 403, 403, 200, 404, 200, 404, 200, 404, 200, 200, 200),
    "revisions":     (401, 403, 403, 200, 404, 200, 404, 200, 404, 200, 200, 200),
    "revision":      (401, 403, 403, 200, 404, 200, 404, 200, 404, 200, 200, 200),
    "diff":          (401, 403, 403, 200, 404, 200, 404, 200, 404, 200, 200, 200),
    "timeline":      (401, 403, 403, 200, 404, 200, 404, 200, 404, 200, 200, 200),
    "files":         (401, 403, 403, 200, 404, 200, 404, 200, 404, 200, 200, 200),
    "download":      (401, 403, 403, 200, 404, 200, 404, 200, 404, 200, 200, 200),
    "put":           (401, 403, 403, 200, 404, 200, 404, 403, 403, 403, 403, 200),
    "submit":        (401, 403, 403, 200, 404, 200, 404, 403, 403, 403, 403, 200),
    "withdraw":      (401, 403, 403, 202, 404, 202, 404, 403, 403, 403, 403, 202),
    "upload":        (401, 403, 403, 201, 404, 201, 404, 403, 403, 403, 403, 201),
    "remove file":   (401, 403, 403, 204, 404, 204, 404, 403, 403, 403, 403, 204),
    "import":        (401, 403, 403, 200, 200, 200, 200, 403, 403, 200, 403, 200),
    "admin keys":    (401, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403),
}
# fmt: on

#: The salesperson+reviewer sees a submitted order as a reviewer but may not change it:
#: their write requests go to a submitted order (403 after the lookup, not before).
SUBMITTED_FOR = {REVIEWER, SELLER_REVIEWER}
DRAFT_FOR = {REVIEWER_DRAFT}


def template(path: str) -> str:
    """A matrix path as the route declares it."""
    path = path.split("?")[0].replace("{id}", "{order_id}").replace("{file}", "{attachment_id}")
    path = path.replace("/revisions/1/diff/1", "/revisions/{from_revision}/diff/{to_revision}")
    return path.replace("/revisions/1", "/revisions/{revision}")


def test_the_matrix_has_every_route_and_caller(app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    assert set(MATRIX) == set(ROUTES)
    assert all(len(row) == len(COLUMNS) for row in MATRIX.values())
    # a new order route is in the matrix, or this fails
    declared = {
        (method.upper(), path)
        for path, operations in app[0].openapi()["paths"].items()
        if path.startswith("/api/v1/orders")
        for method in operations
    }
    listed = {(r.method, template(r.path)) for r in ROUTES.values()}
    assert declared == {(m, p) for m, p in listed if p.startswith("/api/v1/orders")}


# --- the world the matrix runs in -------------------------------------------------------


class World:
    """The service with its people and keys signed in, and orders made by the admin (the
    default client, with every scope)."""

    def __init__(self, app: FastAPI, admin: httpx.AsyncClient, example: dict[str, Any]) -> None:
        self.app = app
        self.admin = admin
        self.example = example
        #: no credential of its own: each request carries the caller's (`headers[who]`)
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        )
        self.headers: dict[str, dict[str, str]] = {}

    def document(self, salesperson: str = "zhang.wei") -> dict[str, Any]:
        """The product example for `salesperson`, with a reference of its own: it marks the
        order in any answer that shows it."""
        order = copy.deepcopy(self.example)
        order["salesperson"] = {"id": salesperson, "name": salesperson.title()}
        order["external_ref"] = f"PO-{uuid.uuid4().hex[:12]}"
        return order

    async def sign_in(self) -> None:
        pool = self.app.state.runtime.pool
        for username, (roles, team) in PEOPLE.items():
            await auth_store.upsert_account(
                pool, username=username, display_name=username.title(), roles=roles, team=team
            )
        for who, credential in CALLERS.items():
            if isinstance(credential, str):
                token, _ = await auth_store.create_session(
                    pool, username=credential, ttl=timedelta(hours=1), source=None
                )
                self.headers[who] = bearer(token)
            elif credential is not None:
                self.headers[who] = bearer(await issue_key(pool, credential))
            else:
                self.headers[who] = {}

    async def order(self, state: str, salesperson: str = "zhang.wei") -> dict[str, Any]:
        """A fresh order of `salesperson` in `state`, with one file: its id, file, marker."""
        body = self.document(salesperson)
        created = await self.admin.post("/api/v1/orders", json=body)
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        attached = await self.admin.post(
            f"/api/v1/orders/{order_id}/attachments",
            data={"kind": "requirements_spec"},
            files={"file": ("规格书.pdf", PDF, "application/pdf")},
        )
        assert attached.status_code == 201, attached.text
        if state == SUBMITTED:
            submitted = await self.admin.post(f"/api/v1/orders/{order_id}/submit")
            assert submitted.status_code == 200, submitted.text
        return {
            "id": order_id,
            "file": attached.json()["attachment"]["id"],
            "marker": body["external_ref"],
        }

    async def call(self, route: Route, who: str, order: dict[str, Any] | None) -> httpx.Response:
        path = route.path.format(**order) if order else route.path
        headers = dict(self.headers[who])
        kwargs: dict[str, Any] = {}
        if route.body == "document":
            kwargs["json"] = self.document()
            if route.method == "PUT" and order:
                etag = (await self.admin.get(f"/api/v1/orders/{order['id']}")).headers["etag"]
                headers["If-Match"] = etag
        elif route.body == "file":
            kwargs["data"] = {"kind": "drawing"}
            kwargs["files"] = {"file": ("图纸.pdf", PDF, "application/pdf")}
        elif route.body == "jsonl":
            kwargs["content"] = json.dumps(self.document(), ensure_ascii=False).encode()
            headers["content-type"] = "application/x-ndjson"
        return await self.http.request(route.method, path, headers=headers, **kwargs)


@pytest.fixture
async def w(
    app: tuple[FastAPI, httpx.AsyncClient], product_order: dict[str, Any]
) -> AsyncIterator[World]:
    world = World(*app, product_order)
    await world.sign_in()
    async with world.http:
        yield world


async def test_every_route_by_every_caller(w: World) -> None:
    # one submitted and one draft order for the read routes; writes get fresh ones
    shared = {SUBMITTED: await w.order(SUBMITTED), DRAFT: await w.order(DRAFT)}
    wrong: list[str] = []
    for name, route in ROUTES.items():
        for who, expected in zip(COLUMNS, MATRIX[name], strict=True):
            order = None
            if route.target is not None:
                state = route.target
                if who in SUBMITTED_FOR:
                    state = SUBMITTED
                elif who in DRAFT_FOR:
                    state = DRAFT
                writes = route.method != "GET"
                order = await w.order(state) if writes else shared[state]
            got = await w.call(route, who, order)
            refused = got.status_code in (401, 403, 404)
            if got.status_code != expected:
                wrong.append(f"{name} by {who}: {got.status_code}, expected {expected}")
            elif refused and order and order["marker"] in got.text:
                wrong.append(f"{name} by {who}: {got.status_code} shows the order")
            elif refused and got.headers["content-type"] != "application/problem+json":
                wrong.append(f"{name} by {who}: {got.status_code} is not a problem")
    assert wrong == [], "\n".join(wrong)


# --- what the matrix does not show --------------------------------------------------------


async def test_list_shows_only_what_the_caller_may_see(w: World) -> None:
    mine = await w.order(DRAFT)
    theirs = await w.order(DRAFT, salesperson="li.na")

    async def listed(who: str, **params: str) -> tuple[set[str], int]:
        got = await w.http.get("/api/v1/orders", headers=w.headers[who], params=params)
        assert got.status_code == 200, got.text
        return {o["id"] for o in got.json()["items"]}, got.json()["total"]

    assert await listed(OWNER) == ({mine["id"]}, 1)
    assert await listed(OTHER) == ({theirs["id"]}, 1)
    assert await listed(MANAGER) == ({mine["id"]}, 1)
    assert await listed(OUTSIDER) == ({theirs["id"]}, 1)
    assert await listed(READ_KEY) == ({mine["id"], theirs["id"]}, 2)
    # a filter outside what they see: an empty page, not an error
    assert await listed(OWNER, salesperson="li.na") == (set(), 0)
    assert await listed(MANAGER, salesperson="li.na") == (set(), 0)
    assert await listed(MANAGER, salesperson="zhang.wei") == ({mine["id"]}, 1)


async def test_create_for_someone_else_is_refused_naming_the_field(w: World) -> None:
    for who in (OTHER, OUTSIDER):
        got = await w.http.post("/api/v1/orders", json=w.document(), headers=w.headers[who])
        assert got.status_code == 403, (who, got.text)
        assert got.json()["errors"] == [
            {
                "pointer": "/salesperson/id",
                "detail": "you may not place or change orders for salesperson 'zhang.wei'",
            }
        ]
    # nothing was stored for the refused creations
    assert (await w.admin.get("/api/v1/orders")).json()["total"] == 0
    # a change that hands the owner's order to someone else is refused the same way
    order = await w.order(DRAFT)
    etag = (await w.admin.get(f"/api/v1/orders/{order['id']}")).headers["etag"]
    moved = await w.http.put(
        f"/api/v1/orders/{order['id']}",
        json=w.document("li.na"),
        headers={**w.headers[OWNER], "If-Match": etag},
    )
    assert moved.status_code == 403
    assert moved.json()["errors"][0]["pointer"] == "/salesperson/id"
    # ... while the manager may hand it within the team
    handed = await w.http.put(
        f"/api/v1/orders/{order['id']}",
        json=w.document("liu.yang"),
        headers={**w.headers[MANAGER], "If-Match": etag},
    )
    assert handed.status_code == 200, handed.text


async def test_seeing_without_changing_is_403_and_not_seeing_404(w: World) -> None:
    """A salesperson who also reviews sees others' submitted orders, never their drafts."""
    for state, status in ((SUBMITTED, 403), (DRAFT, 404)):
        order = await w.order(state)
        got = await w.http.post(
            f"/api/v1/orders/{order['id']}/withdraw", headers=w.headers[SELLER_REVIEWER]
        )
        assert got.status_code == status, got.text
        assert order["marker"] not in got.text
    assert got.json()["title"] == "Order not found"


def to_csv(document: dict[str, Any], ref: str) -> bytes:
    """An order document as CSV rows: its columns on the first row, one row per line."""

    def get(node: Any, path: tuple[str, ...]) -> str:
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            return "; ".join(f"{k}={v}" for k, v in node.items())
        return "" if node is None else str(node)

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["order_ref", *bulk.ORDER_COLUMNS, *bulk.LINE_COLUMNS])
    writer.writeheader()
    for index, line in enumerate(document["lines"]):
        row = {"order_ref": ref}
        if index == 0:
            row |= {c: get(document, p) for c, p in bulk.ORDER_COLUMNS.items()}
        writer.writerow(row | {c: get(line, p) for c, p in bulk.LINE_COLUMNS.items()})
    return out.getvalue().encode()


async def test_import_refuses_the_rows_of_others_one_by_one(w: World) -> None:
    rows = [w.document("zhang.wei"), w.document("li.na"), w.document("zhang.wei")]
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
    got = await w.http.post(
        "/api/v1/orders/import",
        content=body,
        headers={**w.headers[MANAGER], "content-type": "application/x-ndjson"},
    )
    assert got.status_code == 200, got.text
    report = got.json()
    assert (report["accepted"], report["rejected"]) == (2, 1)
    assert [o["row"] for o in report["orders"]] == [1, 3]
    assert report["rejections"][0]["row"] == 2
    assert report["rejections"][0]["problems"] == [
        {
            "row": 2,
            "column": None,
            "pointer": "/salesperson/id",
            "detail": "you may not place or change orders for salesperson 'li.na'",
        }
    ]

    theirs = to_csv(w.document("li.na"), "A")
    got = await w.http.post(
        "/api/v1/orders/import",
        content=theirs,
        headers={**w.headers[OWNER], "content-type": "text/csv"},
    )
    assert got.status_code == 200, got.text
    assert got.json()["accepted"] == 0
    assert got.json()["rejections"][0]["problems"] == [
        {
            "row": 2,
            "column": "salesperson_id",
            "pointer": "/salesperson/id",
            "detail": "you may not place or change orders for salesperson 'li.na'",
        }
    ]
    # the import placed only the manager's team's orders
    listed = (await w.admin.get("/api/v1/orders")).json()
    assert {o["salesperson_id"] for o in listed["items"]} == {"zhang.wei"}


PERSON = {
    "kind": "person",
    "id": "zhang.wei",
    "name": None,
    "department": None,
    "via": "session",
    "source": "127.0.0.1",
}


async def test_timeline_and_order_record_the_caller(w: World) -> None:
    owner = w.headers[OWNER]
    created = await w.http.post("/api/v1/orders", json=w.document(), headers=owner)
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    assert created.json()["created_by"] == PERSON
    attached = await w.http.post(
        f"/api/v1/orders/{order_id}/attachments",
        data={"kind": "requirements_spec"},
        files={"file": ("规格书.pdf", PDF, "application/pdf")},
        headers=owner,
    )
    assert attached.status_code == 201, attached.text
    # submitted by a system: the key is the actor, not the document's salesperson
    submitted = await w.http.post(f"/api/v1/orders/{order_id}/submit", headers=w.headers[WRITE_KEY])
    assert submitted.status_code == 200, submitted.text
    withdrawn = await w.http.post(
        f"/api/v1/orders/{order_id}/withdraw", json={"reason": "客户取消"}, headers=owner
    )
    assert withdrawn.status_code == 202, withdrawn.text
    # asked by the person; the router's answer is its own
    assert withdrawn.json()["withdrawal"]["requested_by"] == PERSON

    async def entries() -> list[dict[str, Any]] | None:
        got = await w.http.get(f"/api/v1/orders/{order_id}/timeline", headers=owner)
        items: list[dict[str, Any]] = got.json()["items"]
        return items if len(items) >= 4 else None

    items = await eventually(entries)
    actors = {i["type"]: i["actor"] for i in items}
    assert actors["order.created"] == PERSON
    assert actors["attachment.added"] == PERSON
    assert actors["order.withdrawal_requested"] == PERSON
    key = actors["order.submitted"]
    assert key["kind"] == "system" and key["via"] == "api_key"
    assert key["id"].startswith("key:") and key["source"] == "127.0.0.1"


async def test_orders_from_the_bus_record_the_broker_user(
    w: World, amqp: Any, infra: Infra
) -> None:
    # sent as the run's order-submitting system, whose user the broker vouches for
    await publish(
        amqp,
        exchange=topology.COMMANDS,
        routing_key="order.submit",
        body=json.dumps(w.document()).encode(),
        message_type="order.submit",
    )

    async def placed() -> dict[str, Any] | None:
        items = (await w.admin.get("/api/v1/orders")).json()["items"]
        return items[0] if items else None

    order = await eventually(placed)
    detail = (await w.admin.get(f"/api/v1/orders/{order['id']}")).json()
    broker = {
        "kind": "system",
        "id": infra.user("submitter"),
        "name": None,
        "department": None,
        "via": "amqp",
        "source": None,
    }
    assert detail["created_by"] == broker

    async def both() -> list[dict[str, Any]] | None:
        got = await w.admin.get(f"/api/v1/orders/{order['id']}/timeline")
        items: list[dict[str, Any]] = got.json()["items"]
        return items if len(items) >= 2 else None

    items = await eventually(both)
    assert [(i["type"], i["actor"]) for i in items] == [
        ("order.created", broker),
        ("order.submitted", broker),
    ]


async def test_the_salesperson_is_checked_again_under_the_lock(w: World) -> None:
    """Let in for zhang.wei's order, a request meets the order handed to someone else
    meanwhile: refused when the order is locked, nothing changed."""
    order = await w.order(DRAFT)
    handed_over = await w.admin.put(
        f"/api/v1/orders/{order['id']}",
        json=w.document("li.na"),
        headers={"If-Match": (await w.admin.get(f"/api/v1/orders/{order['id']}")).headers["etag"]},
    )
    assert handed_over.status_code == 200, handed_over.text
    with pytest.raises(handlers.NotPermitted):
        async with transaction(w.app.state.runtime.pool) as conn:
            await handlers.withdraw_order(
                conn,
                order_id=uuid.UUID(order["id"]),
                reason=None,
                actor={"id": "zhang.wei", "kind": "person", "via": "session"},
                permits=lambda salesperson: salesperson == "zhang.wei",
            )
    assert (await w.admin.get(f"/api/v1/orders/{order['id']}")).json()["status"] == DRAFT


async def test_order_creation_is_rate_limited_per_caller(
    app: tuple[FastAPI, httpx.AsyncClient], product_order: dict[str, Any]
) -> None:
    application, client = app
    settings = application.state.auth_settings
    application.state.auth_settings = settings.model_copy(update={"order_create_rate": "2/minute"})
    for _ in range(2):
        assert (await client.post("/api/v1/orders", json=product_order)).status_code == 201
    limited = await client.post("/api/v1/orders", json=product_order)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    other = bearer(await issue_key(application.state.runtime.pool, ["orders:write"]))
    again = await client.post("/api/v1/orders", json=product_order, headers=other)
    assert again.status_code == 201
