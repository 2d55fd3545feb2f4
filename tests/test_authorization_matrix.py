"""The authorization matrix: every route of every running service, asked by an anonymous
caller, by each role and by callers who may use the route but not for this object.

The four services run as processes, people sign in with local accounts and systems with
API keys, exactly as in production. Objects are seeded through the real paths (HTTP and the
department queues), and a call that changes something gets an object of its own, so every
cell is a real answer. The matrix is printed and must equal the committed
`docs/security/authorization-matrix.md` (regenerate with ORDERFLOW_WRITE_MATRIX=1).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from orderflow.auth import passwords
from orderflow.auth import store as auth_store
from orderflow_testkit.testing import (
    Infra,
    answer_review,
    bearer,
    eventually,
    example_order,
    issue_key_for,
    service_processes,
    take_review,
    wait_status,
)

MATRIX = Path(__file__).resolve().parents[1] / "docs" / "security" / "authorization-matrix.md"
OWNER = "chen.jing"  # the example service order's salesperson
OTHER = "li.na"
PASSWORD = "matrix-password-0123456789"
CUSTOMER = "Riverside"  # in every seeded order's document

# Who asks: people (local accounts) and systems (API keys), plus nobody.
PEOPLE: dict[str, tuple[list[str], list[str]]] = {
    "owner": (["salesperson"], []),
    "other salesperson": (["salesperson"], []),
    "owner's manager": (["sales_manager"], [OWNER]),
    "other manager": (["sales_manager"], [OTHER]),
    "supervisor reviewer": (["reviewer:supervisor"], []),
    "finance reviewer": (["reviewer:finance"], []),
    "ops": (["ops"], []),
    "admin": (["admin"], []),
}
USERNAMES = {
    "owner": OWNER,
    "other salesperson": OTHER,
    "owner's manager": "zhao.lei",
    "other manager": "sun.li",
    "supervisor reviewer": "qian.supervisor",
    "finance reviewer": "wang.fang",
    "ops": "ops.on.call",
    "admin": "it.admin",
}
KEYS = [
    "orders:write",
    "orders:read",
    "reviews:read",
    "contracts:read",
    "contracts:write",
    "notifications:read",
    "metrics:read",
]
WHO = ["anonymous", *PEOPLE, *(f"key {k}" for k in KEYS)]


# --- what each route allows ---------------------------------------------------------------

Rule = Callable[[str], int]  # who -> expected status


def allows(ok: int, *allowed: str, hidden: tuple[str, ...] = (), public: bool = False) -> Rule:
    """`allowed` get `ok`; `hidden` (may use the route, not for this object) get 404; the
    rest 403, and anonymous 401 unless the route is public."""

    def rule(who: str) -> int:
        if who == "anonymous" and not public:
            return 401
        if public or who in allowed:
            return ok
        return 404 if who in hidden else 403

    return rule


SALES_OTHERS = ("other salesperson", "other manager")
READ_ORDER = ("owner", "owner's manager", "key orders:read", "key orders:write")
WRITE_ORDER = ("owner", "owner's manager", "key orders:write")
REVIEWERS = ("supervisor reviewer", "finance reviewer")
CONTRACT_READ = ("owner", "owner's manager", "key contracts:read", "key contracts:write")
CONTRACT_SEND = ("owner", "owner's manager", "key contracts:write")
CONTRACT_VOID = ("owner's manager", "key contracts:write")
ANYONE = tuple(w for w in WHO if w != "anonymous")
PERSON_ONLY = tuple(PEOPLE)


@dataclass
class Route:
    service: str
    method: str
    path: str  # as in the OpenAPI document
    rule: Rule
    # builds the request for one caller: (url, keyword arguments for httpx)
    request: Callable[[Seeds, str], Awaitable[tuple[str, dict[str, Any]]]]


@dataclass
class Seeds:
    """Objects the routes are asked about, made through the real paths."""

    order_id: str = ""  # approved, contract drafted, signed; revisions 1 and 2
    attachment_id: str = ""
    round_id: str = ""
    supervisor_review: str = ""
    contract_id: str = ""
    notification_id: str = ""
    delivery_id: str = ""
    denied_draft: str = ""  # a draft nobody but its owners may change
    denied_submitted: str = ""
    denied_contract: str = ""
    fresh: dict[str, list[str]] = field(default_factory=dict)  # route -> objects for allowed


# --- seeding -----------------------------------------------------------------------------

PDF = b"%PDF-1.4\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"


class Departments:
    """Answers review requests as the department systems would: approves the orders it is
    told to, asks for changes on the first revision of those it is told to, leaves the rest
    waiting (so they can still be withdrawn)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.approve: set[str] = set()
        self.change_first: set[str] = set()
        self.reviews: dict[tuple[str, str, int], str] = {}  # (order, department, rev) -> id
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for department in ("supervisor", "service_delivery", "finance"):
            self._tasks.append(asyncio.create_task(self._answer(department)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _answer(self, department: str) -> None:
        while True:
            try:
                review = await take_review(self.connection, department, timeout=3600)
            except AssertionError:
                continue
            order = str(review.order_id)
            self.reviews[(order, department, review.revision)] = str(review.review_id)
            if order in self.change_first and review.revision == 1:
                await answer_review(self.connection, review, "request_changes")
            elif order in self.approve:
                await answer_review(self.connection, review)


@dataclass
class World:
    intake: httpx.AsyncClient
    router: httpx.AsyncClient
    contracts: httpx.AsyncClient
    notifier: httpx.AsyncClient
    headers: dict[str, dict[str, str]]  # who -> credentials
    departments: Departments
    seeds: Seeds = field(default_factory=Seeds)

    def client(self, service: str) -> httpx.AsyncClient:
        return {
            "intake": self.intake,
            "review-router": self.router,
            "contracts": self.contracts,
            "notifier": self.notifier,
        }[service]

    @property
    def crm(self) -> dict[str, str]:
        return self.headers["key orders:write"]

    async def draft(self) -> str:
        got = await self.intake.post(
            "/api/v1/orders", json=example_order("order-service"), headers=self.crm
        )
        assert got.status_code == 201, got.text
        return str(got.json()["id"])

    async def submitted(self, *, approve: bool = False, change_first: bool = False) -> str:
        order = example_order("order-service")
        order["external_ref"] = f"M-{uuid.uuid4().hex[:8]}"
        created = await self.intake.post("/api/v1/orders", json=order, headers=self.crm)
        assert created.status_code == 201, created.text
        order_id = str(created.json()["id"])
        # the departments are told what to answer before any review can reach them
        if approve:
            self.departments.approve.add(order_id)
        if change_first:
            self.departments.change_first.add(order_id)
        sent = await self.intake.post(f"/api/v1/orders/{order_id}/submit", headers=self.crm)
        assert sent.status_code == 200, sent.text
        return order_id

    async def attachment(self, order_id: str) -> str:
        got = await self.intake.post(
            f"/api/v1/orders/{order_id}/attachments",
            data={"kind": "other"},
            files={"file": ("note.pdf", PDF, "application/pdf")},
            headers=self.crm,
        )
        assert got.status_code == 201, got.text
        return str(got.json()["attachment"]["id"])

    async def contract_of(self, order_id: str) -> str:
        await wait_status(self.intake, order_id, "contract_drafted", timeout=90, headers=self.crm)
        got = await self.contracts.get(
            "/api/v1/contracts",
            params={"order_id": order_id},
            headers=self.headers["key contracts:write"],
        )
        return str(got.json()["items"][0]["id"])

    async def contract(self, *, sent: bool = False) -> str:
        contract_id = await self.contract_of(await self.submitted(approve=True))
        if sent:
            done = await self.contracts.post(
                f"/api/v1/contracts/{contract_id}/send",
                json={},
                headers=self.headers["key contracts:write"],
            )
            assert done.status_code == 200, done.text
        return contract_id


async def seed(world: World) -> None:
    s = world.seeds
    crm = world.crm
    # the order every read is asked about: changes asked, revised, approved, signed
    s.order_id = await world.submitted(approve=True, change_first=True)
    await wait_status(world.intake, s.order_id, "changes_requested", timeout=60, headers=crm)
    s.attachment_id = await world.attachment(s.order_id)
    current = await world.intake.get(f"/api/v1/orders/{s.order_id}", headers=crm)
    document = current.json()["document"]
    document["payment"]["terms"] = "Half in advance, half on acceptance"
    put = await world.intake.put(
        f"/api/v1/orders/{s.order_id}",
        json=document,
        headers={**crm, "If-Match": current.headers["etag"]},
    )
    assert put.status_code == 200, put.text
    sub = await world.intake.post(f"/api/v1/orders/{s.order_id}/submit", headers=crm)
    assert sub.status_code in (200, 202), sub.text
    s.contract_id = await world.contract_of(s.order_id)
    writer = world.headers["key contracts:write"]
    assert (
        await world.contracts.post(
            f"/api/v1/contracts/{s.contract_id}/send", json={}, headers=writer
        )
    ).status_code == 200
    signed = await world.contracts.post(
        f"/api/v1/contracts/{s.contract_id}/signed-copy",
        files={"file": ("signed.pdf", PDF, "application/pdf")},
        headers=writer,
    )
    assert signed.status_code in (200, 201), signed.text
    rounds = await world.router.get(
        "/api/v1/rounds", params={"order_id": s.order_id}, headers=world.headers["key reviews:read"]
    )
    s.round_id = str(rounds.json()["items"][0]["id"])
    s.supervisor_review = world.departments.reviews[(s.order_id, "supervisor", 1)]

    async def notification() -> str | None:
        page = await world.notifier.get(f"/api/v1/inbox/{OWNER}", headers=world.headers["owner"])
        items = page.json().get("items", [])
        return str(items[0]["id"]) if items else None

    s.notification_id = await eventually(notification, timeout=30)
    s.delivery_id = await first_delivery(world)
    s.denied_draft = await world.draft()
    s.denied_submitted = await world.submitted()
    s.denied_contract = await world.contract()


async def first_delivery(world: World) -> str:
    """The owner's webhook delivery once it has failed (its target is refused), so that a
    retry has something to retry."""

    async def failed() -> str | None:
        page = await world.notifier.get(
            "/api/v1/deliveries", params={"status": "failed"}, headers=world.headers["ops"]
        )
        items = page.json().get("items", [])
        return str(items[0]["id"]) if items else None

    return str(await eventually(failed, timeout=60))


# --- the routes and how each is asked -------------------------------------------------------

Builder = Callable[["World", str], Awaitable[tuple[str, dict[str, Any]]]]


def get(
    path: Callable[[Seeds], str], params: Callable[[Seeds], dict[str, str]] | None = None
) -> Builder:
    async def build(world: World, who: str) -> tuple[str, dict[str, Any]]:
        return path(world.seeds), {"params": params(world.seeds)} if params else {}

    return build


def post(path: Callable[[Seeds], str], **kwargs: Any) -> Builder:
    async def build(world: World, who: str) -> tuple[str, dict[str, Any]]:
        return path(world.seeds), dict(kwargs)

    return build


def fresh(
    make: Callable[[World], Awaitable[str]],
    path: Callable[[str], str],
    rule: Rule,
    denied: Callable[[Seeds], str],
    **kwargs: Any,
) -> Builder:
    """A change: each caller expected to succeed gets an object of its own; the others ask
    about one shared object that, refused every time, never changes."""

    async def build(world: World, who: str) -> tuple[str, dict[str, Any]]:
        target = await make(world) if rule(who) < 400 else denied(world.seeds)
        extra = dict(kwargs)
        if "json_of" in extra:
            extra["json"] = await extra.pop("json_of")(world, target)
        if "if_match" in extra:
            extra.pop("if_match")
            view = await world.intake.get(f"/api/v1/orders/{target}", headers=world.crm)
            extra["headers"] = {"If-Match": view.headers.get("etag", '"none"')}
        return path(target), extra

    return build


async def revised(world: World, order_id: str) -> dict[str, Any]:
    view = await world.intake.get(f"/api/v1/orders/{order_id}", headers=world.crm)
    document: dict[str, Any] = view.json()["document"]
    document["usage_scenario"] = "Three shifts"
    return document


def order(suffix: str = "") -> Callable[[Seeds], str]:
    return lambda s: f"/api/v1/orders/{s.order_id}{suffix}"


def for_owner() -> dict[str, Any]:
    document = example_order("order-service")
    document["external_ref"] = f"M-{uuid.uuid4().hex[:8]}"
    return document


def jsonl() -> bytes:
    return json.dumps(for_owner(), ensure_ascii=False).encode() + b"\n"


R_ORDER = allows(200, *READ_ORDER, *REVIEWERS, hidden=SALES_OTHERS)
R_CREATE = allows(201, *WRITE_ORDER)
R_ROUNDS = allows(200, *READ_ORDER, *REVIEWERS, "key reviews:read", hidden=SALES_OTHERS)
# reviewers never change orders: refused by role (403) before any order is looked up
R_WRITE = allows(200, *WRITE_ORDER, hidden=SALES_OTHERS)
# a withdrawal is asked of the review-router, which decides it: 202
R_WITHDRAW = allows(202, *WRITE_ORDER, hidden=SALES_OTHERS)
R_LIST = allows(
    200,
    "owner",
    "other salesperson",
    "owner's manager",
    "other manager",
    "key orders:read",
    "key orders:write",
)
R_ADMIN = allows(200, "admin")
R_OPS = allows(200, "ops")


def routes() -> list[Route]:
    s_order = order()
    return [
        # intake: orders
        Route("intake", "GET", "/api/v1/orders", R_LIST, get(lambda s: "/api/v1/orders")),
        Route(
            "intake",
            "POST",
            "/api/v1/orders",
            R_CREATE,
            post(lambda s: "/api/v1/orders", json=for_owner()),
        ),
        Route(
            "intake",
            "POST",
            "/api/v1/orders/import",
            allows(200, *WRITE_ORDER, "other salesperson", "other manager"),
            post(
                lambda s: "/api/v1/orders/import",
                content=jsonl(),
                headers={"content-type": "application/x-ndjson"},
            ),
        ),
        Route("intake", "GET", "/api/v1/orders/{order_id}", R_ORDER, get(s_order)),
        Route(
            "intake",
            "PUT",
            "/api/v1/orders/{order_id}",
            R_WRITE,
            fresh(
                World.draft,
                lambda o: f"/api/v1/orders/{o}",
                R_WRITE,
                lambda s: s.denied_draft,
                json_of=revised,
                if_match=True,
            ),
        ),
        Route(
            "intake",
            "POST",
            "/api/v1/orders/{order_id}/submit",
            R_WRITE,
            fresh(
                World.draft,
                lambda o: f"/api/v1/orders/{o}/submit",
                R_WRITE,
                lambda s: s.denied_draft,
            ),
        ),
        Route(
            "intake",
            "POST",
            "/api/v1/orders/{order_id}/withdraw",
            R_WITHDRAW,
            fresh(
                World.submitted,
                lambda o: f"/api/v1/orders/{o}/withdraw",
                R_WITHDRAW,
                lambda s: s.denied_submitted,
                json={"reason": "customer cancelled"},
            ),
        ),
        Route(
            "intake",
            "GET",
            "/api/v1/orders/{order_id}/revisions",
            R_ORDER,
            get(order("/revisions")),
        ),
        Route(
            "intake",
            "GET",
            "/api/v1/orders/{order_id}/revisions/{revision}",
            R_ORDER,
            get(order("/revisions/2")),
        ),
        Route(
            "intake",
            "GET",
            "/api/v1/orders/{order_id}/revisions/{from_revision}/diff/{to_revision}",
            R_ORDER,
            get(order("/revisions/1/diff/2")),
        ),
        Route(
            "intake", "GET", "/api/v1/orders/{order_id}/timeline", R_ORDER, get(order("/timeline"))
        ),
        Route(
            "intake",
            "GET",
            "/api/v1/orders/{order_id}/attachments",
            R_ORDER,
            get(order("/attachments")),
        ),
        Route(
            "intake",
            "GET",
            "/api/v1/orders/{order_id}/attachments/{attachment_id}",
            R_ORDER,
            get(lambda s: f"/api/v1/orders/{s.order_id}/attachments/{s.attachment_id}"),
        ),
        Route(
            "intake",
            "POST",
            "/api/v1/orders/{order_id}/attachments",
            allows(201, *WRITE_ORDER, hidden=SALES_OTHERS),
            post(
                lambda s: f"/api/v1/orders/{s.denied_draft}/attachments",
                data={"kind": "other"},
                files={"file": ("n.pdf", PDF, "application/pdf")},
            ),
        ),
        Route(
            "intake",
            "DELETE",
            "/api/v1/orders/{order_id}/attachments/{attachment_id}",
            allows(204, *WRITE_ORDER, hidden=SALES_OTHERS),
            fresh_attachment(),
        ),
        # intake: administration
        Route(
            "intake",
            "GET",
            "/api/v1/admin/accounts",
            R_ADMIN,
            get(lambda s: "/api/v1/admin/accounts"),
        ),
        Route(
            "intake",
            "PUT",
            "/api/v1/admin/accounts/{username}",
            R_ADMIN,
            post(
                lambda s: "/api/v1/admin/accounts/matrix.tmp",
                json={"display_name": "Tmp", "roles": ["salesperson"]},
            ),
        ),
        Route(
            "intake",
            "POST",
            "/api/v1/admin/accounts/{username}/disable",
            allows(204, "admin"),
            fresh(
                throwaway_account,
                lambda u: f"/api/v1/admin/accounts/{u}/disable",
                allows(204, "admin"),
                lambda s: "matrix.keep",
            ),
        ),
        Route(
            "intake",
            "GET",
            "/api/v1/admin/api-keys",
            R_ADMIN,
            get(lambda s: "/api/v1/admin/api-keys"),
        ),
        Route("intake", "POST", "/api/v1/admin/api-keys", allows(201, "admin"), new_key_request()),
        Route(
            "intake",
            "POST",
            "/api/v1/admin/api-keys/{name}/revoke",
            R_ADMIN,
            fresh(
                throwaway_key,
                lambda n: f"/api/v1/admin/api-keys/{n}/revoke",
                R_ADMIN,
                lambda s: "matrix-keep",
            ),
        ),
        # review-router
        Route(
            "review-router",
            "GET",
            "/api/v1/rounds",
            R_ROUNDS,
            get(lambda s: "/api/v1/rounds", lambda s: {"order_id": s.order_id}),
        ),
        Route(
            "review-router",
            "GET",
            "/api/v1/rounds/{round_id}",
            R_ROUNDS,
            get(lambda s: f"/api/v1/rounds/{s.round_id}"),
        ),
        Route(
            "review-router",
            "GET",
            "/api/v1/reviews/{review_id}",
            allows(
                200,
                *READ_ORDER,
                "supervisor reviewer",
                "key reviews:read",
                hidden=(*SALES_OTHERS, "finance reviewer"),
            ),
            get(lambda s: f"/api/v1/reviews/{s.supervisor_review}"),
        ),
        Route(
            "review-router",
            "GET",
            "/api/v1/departments/{department}/pending",
            allows(200, "finance reviewer", "key reviews:read"),
            get(lambda s: "/api/v1/departments/finance/pending"),
        ),
        Route(
            "review-router",
            "GET",
            "/api/v1/policy",
            allows(200, *ANYONE),
            get(lambda s: "/api/v1/policy"),
        ),
        # contracts
        Route(
            "contracts",
            "GET",
            "/api/v1/contracts",
            allows(200, *CONTRACT_READ, hidden=SALES_OTHERS),
            get(lambda s: "/api/v1/contracts", lambda s: {"order_id": s.order_id}),
        ),
        Route(
            "contracts",
            "GET",
            "/api/v1/contracts/{contract_id}",
            allows(200, *CONTRACT_READ, hidden=SALES_OTHERS),
            get(lambda s: f"/api/v1/contracts/{s.contract_id}"),
        ),
        Route(
            "contracts",
            "GET",
            "/api/v1/contracts/{contract_id}/document",
            allows(200, *CONTRACT_READ, hidden=SALES_OTHERS),
            get(lambda s: f"/api/v1/contracts/{s.contract_id}/document"),
        ),
        Route(
            "contracts",
            "GET",
            "/api/v1/contracts/{contract_id}/signed-copy",
            allows(200, *CONTRACT_READ, hidden=SALES_OTHERS),
            get(lambda s: f"/api/v1/contracts/{s.contract_id}/signed-copy"),
        ),
        Route(
            "contracts",
            "POST",
            "/api/v1/contracts/{contract_id}/send",
            allows(200, *CONTRACT_SEND, hidden=SALES_OTHERS),
            fresh(
                World.contract,
                lambda c: f"/api/v1/contracts/{c}/send",
                allows(200, *CONTRACT_SEND),
                lambda s: s.denied_contract,
                json={},
            ),
        ),
        Route(
            "contracts",
            "POST",
            "/api/v1/contracts/{contract_id}/signed-copy",
            allows(201, *CONTRACT_SEND, hidden=SALES_OTHERS),
            fresh(
                sent_contract,
                lambda c: f"/api/v1/contracts/{c}/signed-copy",
                allows(201, *CONTRACT_SEND),
                lambda s: s.denied_contract,
                files={"file": ("signed.pdf", PDF, "application/pdf")},
            ),
        ),
        Route(
            "contracts",
            "POST",
            "/api/v1/contracts/{contract_id}/void",
            allows(200, *CONTRACT_VOID, hidden=("other manager",)),
            fresh(
                World.contract,
                lambda c: f"/api/v1/contracts/{c}/void",
                allows(200, *CONTRACT_VOID),
                lambda s: s.denied_contract,
                json={"reason": "customer withdrew"},
            ),
        ),
        # notifier
        Route(
            "notifier",
            "GET",
            "/api/v1/inbox/{recipient}",
            inbox(200, reads=True),
            get(lambda s: f"/api/v1/inbox/{OWNER}"),
        ),
        Route(
            "notifier",
            "GET",
            "/api/v1/inbox/{recipient}/unread",
            inbox(200, reads=True),
            get(lambda s: f"/api/v1/inbox/{OWNER}/unread"),
        ),
        Route(
            "notifier",
            "POST",
            "/api/v1/inbox/{recipient}/read",
            inbox(200),
            post(lambda s: f"/api/v1/inbox/{OWNER}/read"),
        ),
        Route(
            "notifier",
            "POST",
            "/api/v1/inbox/{recipient}/{notification_id}/read",
            inbox(204),
            post(lambda s: f"/api/v1/inbox/{OWNER}/{s.notification_id}/read"),
        ),
        Route("notifier", "GET", "/api/v1/deliveries", R_OPS, get(lambda s: "/api/v1/deliveries")),
        Route(
            "notifier",
            "GET",
            "/api/v1/deliveries/{delivery_id}",
            R_OPS,
            get(lambda s: f"/api/v1/deliveries/{s.delivery_id}"),
        ),
        Route(
            "notifier",
            "POST",
            "/api/v1/deliveries/{delivery_id}/retry",
            allows(202, "ops"),
            post(lambda s: f"/api/v1/deliveries/{s.delivery_id}/retry"),
        ),
        # every service
        *(r for service in SERVICES for r in common_routes(service)),
    ]


SERVICES = ("intake", "review-router", "contracts", "notifier")


def inbox(ok: int, *, reads: bool = False) -> Rule:
    """Only the recipient; other people are told there is no such inbox; systems need
    notifications:read, and only to read."""

    def rule(who: str) -> int:
        if who == "anonymous":
            return 401
        if who == "owner" or (reads and who == "key notifications:read"):
            return ok
        return 404 if who in PEOPLE else 403

    return rule


def common_routes(service: str) -> list[Route]:
    dlq = {
        "intake": "intake.commands.dlq",
        "review-router": "review-router.verdicts.dlq",
        "contracts": "contracts.order-approved.dlq",
        "notifier": "notifier.order-approved.dlq",
    }[service]
    return [
        Route(
            service, "GET", "/health/live", allows(200, public=True), get(lambda s: "/health/live")
        ),
        Route(
            service,
            "GET",
            "/health/ready",
            allows(200, public=True),
            get(lambda s: "/health/ready"),
        ),
        Route(
            service,
            "GET",
            "/metrics",
            allows(200, "ops", "key metrics:read"),
            get(lambda s: "/metrics"),
        ),
        Route(service, "GET", "/auth/me", allows(200, *ANYONE), get(lambda s: "/auth/me")),
        Route(
            service,
            "POST",
            "/auth/login",
            allows(200, public=True),
            post(lambda s: "/auth/login", json={"username": "matrix.login", "password": PASSWORD}),
        ),
        Route(service, "GET", "/ops/dead-letters", R_OPS, get(lambda s: "/ops/dead-letters")),
        Route(
            service,
            "POST",
            "/ops/dead-letters/{dlq}/replay",
            R_OPS,
            post(lambda s: f"/ops/dead-letters/{dlq}/replay", json={"message_ids": ["none"]}),
        ),
        Route(
            service,
            "POST",
            "/ops/dead-letters/{dlq}/discard",
            R_OPS,
            post(
                lambda s: f"/ops/dead-letters/{dlq}/discard",
                json={"message_ids": ["none"], "note": "matrix"},
            ),
        ),
        # last: it ends the caller's session (each person gets a session of its own for it)
        Route(
            service, "POST", "/auth/logout", allows(204, *ANYONE), post(lambda s: "/auth/logout")
        ),
    ]


def fresh_attachment() -> Builder:
    rule = allows(204, *WRITE_ORDER)

    async def build(world: World, who: str) -> tuple[str, dict[str, Any]]:
        s = world.seeds
        if rule(who) < 400:
            attachment = await world.attachment(s.denied_draft)
        else:
            attachment = s.fresh.setdefault(
                "kept-attachment", [await world.attachment(s.denied_draft)]
            )[0]
        return f"/api/v1/orders/{s.denied_draft}/attachments/{attachment}", {}

    return build


async def sent_contract(world: World) -> str:
    return await world.contract(sent=True)


async def throwaway_account(world: World) -> str:
    name = f"matrix.{uuid.uuid4().hex[:8]}"
    got = await world.intake.put(
        f"/api/v1/admin/accounts/{name}",
        json={"display_name": "Throwaway", "roles": []},
        headers=world.headers["admin"],
    )
    assert got.status_code == 200, got.text
    return name


async def throwaway_key(world: World) -> str:
    name = f"matrix-{uuid.uuid4().hex[:8]}"
    got = await world.intake.post(
        "/api/v1/admin/api-keys",
        json={"name": name, "scopes": ["orders:read"]},
        headers=world.headers["admin"],
    )
    assert got.status_code == 201, got.text
    return name


def new_key_request() -> Builder:
    async def build(world: World, who: str) -> tuple[str, dict[str, Any]]:
        return "/api/v1/admin/api-keys", {
            "json": {"name": f"matrix-{uuid.uuid4().hex[:8]}", "scopes": ["orders:read"]}
        }

    return build


# --- asking -------------------------------------------------------------------------------


async def identities(database_url: str) -> dict[str, dict[str, str]]:
    """Credentials of everyone in WHO: sessions of local accounts, API keys."""
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    pool = await asyncpg_pool(database_url)
    try:
        await auth_store.prepare(pool)
        hashed = passwords.hash_password(PASSWORD)
        for who, (roles, team) in PEOPLE.items():
            username = USERNAMES[who]
            await auth_store.upsert_account(
                pool,
                username=username,
                display_name=who,
                roles=roles,
                team=team,
                password_hash=hashed,
            )
        await auth_store.upsert_account(
            pool, username="matrix.login", display_name="Login", roles=[], password_hash=hashed
        )
        await auth_store.upsert_account(pool, username="matrix.keep", display_name="Kept", roles=[])
        await auth_store.create_api_key(
            pool, name="matrix-keep", scopes=["orders:read"], created_by="matrix"
        )
    finally:
        await pool.close()
    for who in PEOPLE:
        headers[who] = bearer(await session_for(database_url, USERNAMES[who]))
    for scope in KEYS:
        headers[f"key {scope}"] = bearer(await issue_key_for(database_url, [scope]))
    return headers


async def asyncpg_pool(database_url: str) -> Any:
    import asyncpg

    return await asyncpg.create_pool(database_url, min_size=1, max_size=2)


async def session_for(database_url: str, username: str) -> str:
    from datetime import timedelta

    pool = await asyncpg_pool(database_url)
    try:
        token, _ = await auth_store.create_session(
            pool, username=username, ttl=timedelta(hours=1), source="127.0.0.1"
        )
    finally:
        await pool.close()
    return token


async def ask(world: World, route: Route, who: str, database_url: str) -> int:
    url, kwargs = await route.request(world, who)
    headers = dict(world.headers[who])
    if route.path == "/auth/logout" and who in PEOPLE:
        headers = bearer(await session_for(database_url, USERNAMES[who]))
    headers.update(kwargs.pop("headers", {}))
    client = world.client(route.service)
    got = await client.request(route.method, url, headers=headers, **kwargs)
    client.cookies.clear()  # a sign-in's cookie must not follow the next caller
    if got.status_code in (401, 403, 404):
        # a refusal is a problem, and carries nothing of the object
        assert got.headers["content-type"] == "application/problem+json", got.text
        assert CUSTOMER not in got.text, got.text
    return got.status_code


def documented_routes() -> set[tuple[str, str, str]]:
    found = set()
    for service in SERVICES:
        doc = json.loads(
            (
                Path(__file__).resolve().parents[1] / "docs" / "api" / f"{service}.openapi.json"
            ).read_text()
        )
        for path, operations in doc["paths"].items():
            for method in operations:
                found.add((service, method.upper(), path))
    return found


def render(rows: list[tuple[Route, dict[str, int]]]) -> str:
    short = {w: w.replace("key ", "") for w in WHO}
    lines = [
        "# Authorization matrix",
        "",
        "Every route of every service, asked by each kind of caller against the running",
        "services (`tests/test_authorization_matrix.py` writes this file and fails when the",
        "answers differ). People sign in with local accounts; `orders:write` and the other",
        "scopes are API keys of company systems. The owner is the order's salesperson; the",
        "owner's manager has the owner in their team, the other manager does not.",
        "",
        "401: no credential. 403: the caller's roles never allow this route (checked before any",
        "object is looked up), or they may see the object but not change it (a salesperson",
        "voiding their own contract). 404: the route is theirs to use, but not for this object",
        "(the same answer as an object that does not exist).",
        "",
        "| service | route | " + " | ".join(short[w] for w in WHO) + " |",
        "|---|---|" + "---|" * len(WHO),
    ]
    for route, got in rows:
        cells = [str(got[w]) for w in WHO]
        lines.append(
            f"| {route.service} | `{route.method} {route.path}` | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(300)
async def test_authorization_matrix(infra: Infra, amqp: Any, tmp_path: Path) -> None:
    table = routes()
    missing = documented_routes() - {(r.service, r.method, r.path) for r in table}
    assert not missing, f"routes without an expectation: {sorted(missing)}"
    async with service_processes(infra, tmp_path, **matrix_env(infra, tmp_path)) as services:
        headers = await identities(infra.database_url)
        clients = {
            name: httpx.AsyncClient(base_url=services[name].url, timeout=10) for name in SERVICES
        }
        departments = Departments(amqp)
        await departments.start()
        world = World(
            clients["intake"],
            clients["review-router"],
            clients["contracts"],
            clients["notifier"],
            headers,
            departments,
        )
        try:
            await seed(world)
            rows = []
            wrong = []
            for route in table:
                got = {who: await ask(world, route, who, infra.database_url) for who in WHO}
                rows.append((route, got))
                wrong += [
                    f"{route.service} {route.method} {route.path} as {who}: "
                    f"{got[who]}, expected {route.rule(who)}"
                    for who in WHO
                    if got[who] != route.rule(who)
                ]
        finally:
            await departments.stop()
            for client in clients.values():
                await client.aclose()
    matrix = render(rows)
    print(matrix)
    assert not wrong, "\n".join(wrong)
    if os.environ.get("ORDERFLOW_WRITE_MATRIX"):
        MATRIX.parent.mkdir(parents=True, exist_ok=True)
        MATRIX.write_text(matrix, encoding="utf-8")
    assert MATRIX.read_text(encoding="utf-8") == matrix, (
        "docs/security/authorization-matrix.md is out of date: run this test with "
        "ORDERFLOW_WRITE_MATRIX=1 and commit it"
    )


def matrix_env(infra: Infra, tmp_path: Path) -> dict[str, str]:
    """The notifier tells the owner through a webhook too, so there is a delivery to ask about."""
    contacts = tmp_path / "contacts.toml"
    contacts.write_text(
        f"""
[[people]]
id = "{OWNER}"
channels = ["inbox", "hook"]

[webhooks.hook]
kind = "webhook"
url = "http://127.0.0.1:9/hooks"
secret_env = "MATRIX_HOOK_SECRET"
""",
        encoding="utf-8",
    )
    return {
        "NOTIFIER_CONTACTS_FILE": str(contacts),
        "MATRIX_HOOK_SECRET": "matrix-hook-secret-0123456789",
        # the matrix is about who may do what: every caller signs in once per service
        "ORDERFLOW_AUTH_LOGIN_RATE": "1000/minute",
    }
