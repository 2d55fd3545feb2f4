"""Sign-in, API keys, sessions, lockout and CSRF, on a real service app and database."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from intake.main import create_app
from intake.settings import Settings
from orderflow.auth import AuthSettings, passwords
from orderflow.auth import store as auth_store
from orderflow.auth.identity import Caller
from orderflow_testkit.testing import Infra, bearer, issue_key, running

PASSWORD = "correct horse battery staple"


def app_for(infra: Infra, **auth: Any) -> Any:
    settings = Settings(
        database_url=infra.database_url, amqp_url=infra.url_as("intake"), auth=AuthSettings(**auth)
    )
    return create_app(settings)


async def add_person(app: Any, username: str, roles: list[str], **extra: Any) -> None:
    await auth_store.upsert_account(
        app.state.runtime.pool,
        username=username,
        display_name=username.title(),
        roles=roles,
        password_hash=passwords.hash_password(PASSWORD),
        **extra,
    )


async def test_anonymous_refused_and_bad_tokens_are_401(infra: Infra) -> None:
    app = app_for(infra)
    async with running(app, scopes=None) as client:
        for headers in (
            {},
            bearer("ofk_000000000000_nope"),
            bearer("garbage"),
            {"authorization": "Basic x"},
        ):
            got = await client.get("/auth/me", headers=headers)
            assert got.status_code == 401, headers
            assert got.headers["content-type"] == "application/problem+json"
            assert got.headers["www-authenticate"].startswith("Bearer")


async def test_api_key_identifies_a_system_until_revoked(infra: Infra) -> None:
    app = app_for(infra)
    async with running(app) as admin:
        made = await admin.post(
            "/api/v1/admin/api-keys", json={"name": "crm", "scopes": ["orders:write"]}
        )
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        me = await admin.get("/auth/me", headers=bearer(token))
        assert me.json() | {} == {
            "id": "key:crm",
            "kind": "system",
            "name": "crm",
            "roles": ["orders:write"],
            "team": [],
            "email": None,
            "via": "api_key",
        }
        keys = (await admin.get("/api/v1/admin/api-keys")).json()
        assert next(k for k in keys if k["name"] == "crm")["last_used_at"] is not None
        assert all("token" not in k and "secret" not in str(k) for k in keys)
        assert (await admin.post("/api/v1/admin/api-keys/crm/revoke")).status_code == 200
        assert (await admin.get("/auth/me", headers=bearer(token))).status_code == 401


async def test_unknown_scope_is_refused_naming_it(infra: Infra) -> None:
    async with running(app_for(infra)) as admin:
        got = await admin.post("/api/v1/admin/api-keys", json={"name": "x", "scopes": ["root"]})
        assert got.status_code == 422
        assert got.json()["errors"] == [{"pointer": "/scopes/0", "detail": "unknown role 'root'"}]


async def test_only_admins_manage_keys(infra: Infra) -> None:
    app = app_for(infra)
    async with running(app, scopes=["ops"]) as ops:
        assert (await ops.get("/api/v1/admin/api-keys")).status_code == 403


async def test_sign_in_gives_a_session_for_bearer_and_cookie(infra: Infra) -> None:
    app = app_for(infra)
    async with running(app, scopes=None) as client:
        await add_person(app, "zhang.wei", ["salesperson"], team=[])
        got = await client.post("/auth/login", json={"username": "zhang.wei", "password": PASSWORD})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["caller"]["roles"] == ["salesperson"]
        assert "orderflow_session" in got.cookies
        by_bearer = await client.get("/auth/me", headers=bearer(body["token"]))
        assert by_bearer.json()["id"] == "zhang.wei"
        by_cookie = await client.get("/auth/me")  # the cookie jar sends the session cookie
        assert by_cookie.json()["id"] == "zhang.wei"
        out = await client.post("/auth/logout", headers={"x-csrf-token": body["csrf_token"]})
        assert out.status_code == 204
        assert (await client.get("/auth/me", headers=bearer(body["token"]))).status_code == 401


async def test_cookie_session_needs_csrf_token_and_same_origin(infra: Infra) -> None:
    app = app_for(infra)
    async with running(app, scopes=None) as client:
        await add_person(app, "li.na", ["salesperson"])
        body = (
            await client.post("/auth/login", json={"username": "li.na", "password": PASSWORD})
        ).json()
        assert (await client.post("/auth/logout")).status_code == 403
        wrong = await client.post("/auth/logout", headers={"x-csrf-token": "x" * 32})
        assert wrong.status_code == 403
        cross = await client.post(
            "/auth/logout",
            headers={"x-csrf-token": body["csrf_token"], "origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        assert "cross-site" in cross.json()["detail"]
        same = await client.post(
            "/auth/logout", headers={"x-csrf-token": body["csrf_token"], "origin": "http://test"}
        )
        assert same.status_code == 204


async def test_repeated_failures_lock_the_account(infra: Infra) -> None:
    app = app_for(infra, login_max_failures=3, lockout_seconds=600)
    async with running(app, scopes=None) as client:
        await add_person(app, "wang.fang", ["salesperson"])
        for _ in range(3):
            bad = await client.post(
                "/auth/login", json={"username": "wang.fang", "password": "wrong" * 3}
            )
            assert bad.status_code == 401
        locked = await client.post(
            "/auth/login", json={"username": "wang.fang", "password": PASSWORD}
        )
        assert locked.status_code == 423
        unknown = await client.post(
            "/auth/login", json={"username": "nobody", "password": PASSWORD}
        )
        assert unknown.status_code == 401
        assert unknown.json()["detail"] == "wrong username or password"


async def test_disabled_account_loses_its_sessions(infra: Infra) -> None:
    app = app_for(infra)
    async with running(app) as admin:
        await add_person(app, "zhao.lei", ["sales_manager"], team=["zhang.wei"])
        signed = await admin.post(
            "/auth/login",
            json={"username": "zhao.lei", "password": PASSWORD},
            headers={"authorization": ""},
        )
        token = signed.json()["token"]
        assert (await admin.post("/api/v1/admin/accounts/zhao.lei/disable")).status_code == 204
        admin.cookies.clear()
        assert (await admin.get("/auth/me", headers=bearer(token))).status_code == 401


def test_caller_rules() -> None:
    manager = Caller(
        id="zhao.lei",
        kind="person",
        name="Zhao",
        roles=frozenset({"sales_manager"}),
        via="session",
        team=frozenset({"zhang.wei"}),
    )
    assert manager.acts_for("zhang.wei", write=True) and manager.acts_for("zhao.lei")
    assert not manager.acts_for("li.na")
    assert manager.sees_team() == {"zhao.lei", "zhang.wei"}
    crm = Caller(
        id="key:crm", kind="system", name="crm", roles=frozenset({"orders:read"}), via="api_key"
    )
    assert crm.acts_for("anyone") and not crm.acts_for("anyone", write=True)
    assert crm.sees_team() is None
    reviewer = Caller(
        id="r", kind="person", name="R", roles=frozenset({"reviewer:finance"}), via="oidc"
    )
    assert reviewer.has("reviewer:*") and reviewer.reviews_for("finance")
    assert not reviewer.reviews_for("technical") and not reviewer.acts_for("r")


@pytest.mark.parametrize("role", ["reviewer:finance", "reviewer:general_manager", "ops"])
def test_valid_roles(role: str) -> None:
    from orderflow.auth.identity import valid_role

    assert valid_role(role)
    assert not valid_role("reviewer:") and not valid_role("superuser")


async def test_issue_key_helper(infra: Infra) -> None:
    app = app_for(infra)
    async with running(app, scopes=None) as client:
        token = await issue_key(app.state.runtime.pool, ["ops"])
        got = await client.get("/auth/me", headers=bearer(token))
        assert got.json()["roles"] == ["ops"]
        assert isinstance(got, httpx.Response)


async def test_single_sign_on_token_is_honoured_by_a_service(
    infra: Infra, provider: Any, rsa_a: Any
) -> None:
    """A token from the identity provider signs a person in, roles mapped; a token of
    another audience is refused with the reason."""
    import time

    import jwt
    from jwt.algorithms import RSAAlgorithm

    provider.keys = [{**RSAAlgorithm.to_jwk(rsa_a.public_key(), as_dict=True), "kid": "k1"}]

    def sign(**changes: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": provider.url,
            "aud": "orderflow",
            "sub": "s-1",
            "iat": now,
            "exp": now + 300,
            "preferred_username": "wang.fang",
            **changes,
        }
        return jwt.encode(claims, rsa_a, algorithm="RS256", headers={"kid": "k1"})

    app = app_for(
        infra,
        oidc_issuer=provider.url,
        oidc_audience="orderflow",
        oidc_role_map={"Finance": ["reviewer:finance"]},
    )
    async with running(app, scopes=None) as client:
        token = sign(roles=["Finance", "salesperson", "root"])
        me = await client.get("/auth/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        body = me.json()
        assert body["id"] == "wang.fang"
        assert body["via"] == "oidc" and body["kind"] == "person"
        assert body["roles"] == ["reviewer:finance", "salesperson"]  # "root" is no role
        other = sign(aud="another-app")
        refused = await client.get("/auth/me", headers=bearer(other))
        assert refused.status_code == 401
        assert refused.json()["detail"] == "wrong audience"


async def test_sign_in_is_rate_limited_per_address(infra: Infra) -> None:
    app = app_for(infra, login_rate="3/minute")
    async with running(app, scopes=None) as client:
        wrong = {"username": "nobody", "password": "x" * 12}
        for _ in range(3):
            assert (await client.post("/auth/login", json=wrong)).status_code == 401
        limited = await client.post("/auth/login", json=wrong)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1


async def test_services_refuse_unknown_hosts_and_send_security_headers(infra: Infra) -> None:
    async with running(app_for(infra), scopes=None) as client:
        live = await client.get("/health/live")
        assert live.headers["x-content-type-options"] == "nosniff"
        assert live.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in live.headers["content-security-policy"]
        spoofed = await client.get("/health/live", headers={"host": "intranet.evil.example"})
        assert spoofed.status_code == 400
