"""Host allow-list, security headers, CSRF for cookie sessions and rate limits on a small app."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from orderflow.auth.hardening import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    HardeningSettings,
    RateLimiter,
    check_csrf,
    install_hardening,
    new_csrf_token,
    rate_limit,
    set_csrf_cookie,
)
from orderflow.http import PROBLEM_JSON, install_problem_handlers

BASE = "http://test"


def caller_key(x_caller: str = Header()) -> str:
    return x_caller


def build_app(settings: HardeningSettings, limiter: RateLimiter) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    install_hardening(app, settings)

    @app.get("/orders")
    async def orders() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/orders")
    async def create_order() -> dict[str, str]:
        return {"status": "created"}

    @app.post("/login")
    async def login() -> JSONResponse:
        response = JSONResponse({"status": "in"})
        set_csrf_cookie(response, new_csrf_token(), secure=False)
        return response

    limited = rate_limit("quotes", "3/minute", key=caller_key, limiter=limiter)

    @app.get("/quotes", dependencies=[Depends(limited)])
    async def quotes() -> dict[str, str]:
        return {"status": "quoted"}

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = HardeningSettings(allowed_origins=["https://console.example.com"])
    app = build_app(settings, RateLimiter())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


def session(token: str | None = "t0k3n") -> dict[str, str]:
    cookies = {SESSION_COOKIE: "s3ss10n"}
    if token is not None:
        cookies[CSRF_COOKIE] = token
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


async def test_unknown_host_is_refused(client: httpx.AsyncClient) -> None:
    answer = await client.get("http://evil.example.com/orders")
    assert answer.status_code == 400
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert (await client.get("http://localhost:8123/orders")).status_code == 200
    assert (await client.get("http://127.0.0.1/orders")).status_code == 200


async def test_security_headers_on_api_answers(client: httpx.AsyncClient) -> None:
    answer = await client.get("/orders")

    assert answer.status_code == 200
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "no-referrer"
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "cache-control" not in answer.headers  # no credentials, nothing to protect
    assert "strict-transport-security" not in answer.headers
    authed = await client.get("/orders", headers={"Authorization": "Bearer x"})
    assert authed.headers["cache-control"] == "no-store"
    assert (await client.get("/orders", headers=session())).headers["cache-control"] == "no-store"


async def test_docs_page_gets_a_policy_that_lets_swagger_load(
    client: httpx.AsyncClient,
) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    csp = docs.headers["content-security-policy"]
    for source in ("https://cdn.jsdelivr.net", "frame-ancestors 'none'"):
        assert source in csp
    # every script and stylesheet the page loads is allowed by that policy
    for url in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/{url}" in docs.text
    redoc = await client.get("/redoc")
    assert "https://cdn.jsdelivr.net/npm/redoc@2/" in redoc.text
    assert "https://fonts.googleapis.com" in redoc.headers["content-security-policy"]
    schema = await client.get("/openapi.json")
    assert "cdn.jsdelivr.net" not in schema.headers["content-security-policy"]


async def test_hsts_when_behind_https() -> None:
    app = build_app(HardeningSettings(behind_https=True), RateLimiter())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        answer = await client.get("/orders")
    assert answer.headers["strict-transport-security"] == "max-age=31536000"


async def csrf_refusal(answer: httpx.Response) -> str:
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON
    body = answer.json()
    assert (body["status"], body["type"]) == (403, "urn:orderflow:problem:csrf")
    return str(body["detail"])


async def test_cookie_post_without_token(client: httpx.AsyncClient) -> None:
    detail = await csrf_refusal(await client.post("/orders", headers=session(token=None)))
    assert "missing CSRF token" in detail


async def test_cookie_post_with_mismatched_token(client: httpx.AsyncClient) -> None:
    headers = {**session("t0k3n"), CSRF_HEADER: "other"}
    assert "does not match" in await csrf_refusal(await client.post("/orders", headers=headers))
    empty = {**session(""), CSRF_HEADER: ""}
    assert "missing" in await csrf_refusal(await client.post("/orders", headers=empty))


@pytest.mark.parametrize(
    "origin",
    [
        {"Origin": "https://evil.example.com"},
        {"Origin": "null"},
        {"Origin": "http://test.evil.example.com"},
        {"Referer": "https://evil.example.com/page"},
    ],
)
async def test_cookie_post_from_another_site(
    client: httpx.AsyncClient, origin: dict[str, str]
) -> None:
    headers = {**session(), CSRF_HEADER: "t0k3n", **origin}
    assert "cross-site" in await csrf_refusal(await client.post("/orders", headers=headers))


@pytest.mark.parametrize(
    "origin",
    [
        {},
        {"Origin": "http://test"},
        {"Referer": "http://test/console/orders"},
        {"Origin": "https://console.example.com"},
    ],
)
async def test_cookie_post_with_token_from_an_allowed_origin(
    client: httpx.AsyncClient, origin: dict[str, str]
) -> None:
    headers = {**session(), CSRF_HEADER: "t0k3n", **origin}
    answer = await client.post("/orders", headers=headers)
    assert answer.status_code == 200, answer.text


async def test_authorization_header_is_not_subject_to_csrf(client: httpx.AsyncClient) -> None:
    headers = {"Authorization": "Bearer abc", **session(token=None)}
    assert (await client.post("/orders", headers=headers)).status_code == 200
    assert (await client.post("/orders")).status_code == 200  # no credentials at all
    assert (await client.get("/orders", headers=session(token=None))).status_code == 200


async def test_login_sets_a_readable_strict_csrf_cookie(client: httpx.AsyncClient) -> None:
    answer = await client.post("/login")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{CSRF_COOKIE}=")
    assert "SameSite=strict" in cookie
    assert "HttpOnly" not in cookie
    assert len(answer.cookies[CSRF_COOKIE]) >= 40


async def test_check_csrf_raises_a_problem() -> None:
    # the same check, as a function a session dependency can call
    app = FastAPI()
    install_problem_handlers(app)
    settings = HardeningSettings()

    @app.post("/checked")
    async def checked(request: Request) -> dict[str, str]:
        check_csrf(request, settings)
        return {"status": "checked"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as bare:
        assert "missing" in await csrf_refusal(await bare.post("/checked", headers=session(None)))
        ok = await bare.post("/checked", headers={**session(), CSRF_HEADER: "t0k3n"})
        assert ok.json() == {"status": "checked"}


async def test_rate_limit_answers_429_per_key(client: httpx.AsyncClient) -> None:
    ada = {"X-Caller": "ada"}
    for _ in range(3):
        assert (await client.get("/quotes", headers=ada)).status_code == 200

    refused = await client.get("/quotes", headers=ada)

    assert refused.status_code == 429
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert refused.json()["type"] == "urn:orderflow:problem:rate-limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert (await client.get("/quotes", headers={"X-Caller": "grace"})).status_code == 200


def test_bad_rate_limit_names_itself() -> None:
    with pytest.raises(ValueError, match="quotes"):
        rate_limit("quotes", "often")


def test_settings_refuse_origins_with_paths() -> None:
    with pytest.raises(ValidationError, match="allowed_origins"):
        HardeningSettings(allowed_origins=["https://console.example.com/app"])
    normal = HardeningSettings(allowed_origins=["HTTPS://Console.Example.com:443/"])
    assert normal.allowed_origins == ["https://console.example.com"]


def test_importing_hardening_leaves_orderflow_http_alone() -> None:
    # orderflow.http is to import this module: the reverse at import time would be a cycle
    code = (
        "import sys, orderflow.auth.hardening, orderflow.auth.oidc; "
        "assert 'orderflow.http' not in sys.modules, 'imported orderflow.http'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
