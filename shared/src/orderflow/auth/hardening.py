"""HTTP hardening for every service app: a Host allow-list, security headers, CSRF checks for
cookie sessions and per-caller rate limits.

This module must not import `orderflow.http` at the top: `create_service_app` installs it.
The middlewares therefore write their problem+json answers themselves, and the dependencies
import `Problem` only when they raise it.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import limits
from fastapi import Depends, FastAPI, Request
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from orderflow.http import Problem

SESSION_COOKIE = "orderflow_session"
CSRF_COOKIE = "orderflow_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
PROBLEM_JSON = "application/problem+json"

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# FastAPI's Swagger UI and ReDoc pages load their bundles from a CDN and start with an
# inline script; only those pages get this policy
DOCS_CSP = (
    "default-src 'none'; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL, lower-cased and without a default port; None for
    anything that is not an http(s) URL (such as the `null` origin)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


class HardeningSettings(BaseModel):
    """What the hardening middlewares need to know about where the service is served."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allowed_hosts: list[str] = Field(
        # "test" is the host httpx.ASGITransport clients in the test suite send
        default=["127.0.0.1", "localhost", "test"],
        min_length=1,
        description="Host header values accepted (`*.example.com` allowed); others get 400",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) allowed to send cookie-authenticated "
        "writes, besides the service's own",
    )
    behind_https: bool = Field(default=False, description="Served over HTTPS: send HSTS")
    hsts_max_age_seconds: int = Field(default=31_536_000, ge=0)
    docs_paths: list[str] = Field(default=["/docs", "/redoc"])

    @field_validator("allowed_origins")
    @classmethod
    def _plain_origins(cls, value: list[str]) -> list[str]:
        normal = []
        for entry in value:
            origin = origin_of(entry)
            parts = urlsplit(entry)
            if origin is None or parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"{entry!r} is not an origin like https://orders.example.com")
            normal.append(origin)
        return normal


def install_hardening(app: FastAPI, settings: HardeningSettings) -> None:
    """Host allow-list, security headers and CSRF checks, headers outermost so that the
    Host and CSRF refusals carry them too."""
    app.add_middleware(CsrfMiddleware, settings=settings)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SecurityHeadersMiddleware, settings=settings)


def _has_credentials(request: Request) -> bool:
    return "authorization" in request.headers or SESSION_COOKIE in request.cookies


class SecurityHeadersMiddleware:
    """Adds the security headers to every answer; an answer that sets one keeps its own."""

    def __init__(self, app: ASGIApp, settings: HardeningSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers(Request(scope))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _headers(self, request: Request) -> dict[str, str]:
        path = request.url.path
        docs = any(path == p or path.startswith(p + "/") for p in self.settings.docs_paths)
        headers = {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cross-Origin-Resource-Policy": "same-origin",
            "Content-Security-Policy": DOCS_CSP if docs else API_CSP,
        }
        if _has_credentials(request):
            headers["Cache-Control"] = "no-store"
        if self.settings.behind_https:
            headers["Strict-Transport-Security"] = f"max-age={self.settings.hsts_max_age_seconds}"
        return headers


def _own_origins(request: Request, settings: HardeningSettings) -> set[str]:
    # the Host header is the target's own (a cross-site page cannot choose it), and the
    # Host allow-list has vetted it by the time CSRF is checked
    netloc = request.url.netloc
    schemes = {request.url.scheme} | ({"https"} if settings.behind_https else set())
    return {o for s in schemes if (o := origin_of(f"{s}://{netloc}")) is not None}


def csrf_failure(request: Request, settings: HardeningSettings) -> str | None:
    """Why this request is refused as a possible cross-site forgery, or None if it is not.

    Only unsafe requests authenticated by the session cookie are checked: an Authorization
    header is never sent by a browser on its own. Such a request must echo the CSRF cookie in
    the X-CSRF-Token header, and an Origin (else Referer) header, when present, must name this
    service or one of `allowed_origins`."""
    if request.method in SAFE_METHODS or "authorization" in request.headers:
        return None
    if SESSION_COOKIE not in request.cookies:
        return None
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not header:
        return f"missing CSRF token: send the {CSRF_COOKIE} cookie's value in {CSRF_HEADER}"
    if not hmac.compare_digest(cookie.encode(), header.encode()):
        return f"the {CSRF_HEADER} header does not match the {CSRF_COOKIE} cookie"
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed is not None:
        allowed = _own_origins(request, settings) | set(settings.allowed_origins)
        if origin_of(claimed) not in allowed:
            return "cross-site request: its origin is not allowed"
    return None


def check_csrf(request: Request, settings: HardeningSettings) -> None:
    """`csrf_failure` as a check that raises a 403 Problem; for a session dependency."""
    reason = csrf_failure(request, settings)
    if reason is not None:
        raise _problem(403, "Forbidden", reason, "urn:orderflow:problem:csrf")


class CsrfMiddleware:
    """`csrf_failure` for every request, answering 403 problem+json."""

    def __init__(self, app: ASGIApp, settings: HardeningSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            reason = csrf_failure(request, self.settings)
            if reason is not None:
                body = {
                    "type": "urn:orderflow:problem:csrf",
                    "title": "Forbidden",
                    "status": 403,
                    "detail": reason,
                    "instance": request.url.path,
                }
                response = JSONResponse(body, status_code=403, media_type=PROBLEM_JSON)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def set_csrf_cookie(response: Response, token: str, *, secure: bool) -> None:
    """The double-submit cookie, set beside the session cookie at login. Not HttpOnly: the
    console's script reads it to echo it in X-CSRF-Token."""
    response.set_cookie(
        CSRF_COOKIE, token, httponly=False, secure=secure, samesite="strict", path="/"
    )


class RateLimiter:
    """Moving-window counters in this process's memory (see docs/decisions: per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._strategy: MovingWindowRateLimiter | None = None

    def _limiter(self) -> MovingWindowRateLimiter:
        # the storage starts a timer thread: made on first use, not at import
        with self._lock:
            if self._strategy is None:
                self._strategy = MovingWindowRateLimiter(MemoryStorage())
            return self._strategy

    def hit(self, limit: limits.RateLimitItem, name: str, key: str) -> int | None:
        """Count one request; None if it is within the limit, else seconds to wait."""
        strategy = self._limiter()
        if strategy.hit(limit, name, key):
            return None
        reset_at = strategy.get_window_stats(limit, name, key).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def reset(self) -> None:
        with self._lock:
            self._strategy = None


DEFAULT_LIMITER = RateLimiter()


def client_address(request: Request) -> str:
    """The peer's address; behind a proxy, uvicorn's --forwarded-allow-ips makes it the
    client's."""
    return request.client.host if request.client else "unknown"


def parse_limit(name: str, limit: str) -> limits.RateLimitItem:
    try:
        return limits.parse(limit)
    except ValueError as exc:
        raise ValueError(f"rate limit {name!r}: cannot read {limit!r}: {exc}") from None


def enforce(name: str, limit: str, key: str, *, limiter: RateLimiter | None = None) -> None:
    """Count one request of `key` under `name`; 429 problem+json with Retry-After beyond
    `limit` (e.g. "10/minute")."""
    wait = (limiter or DEFAULT_LIMITER).hit(parse_limit(name, limit), name, key)
    if wait is not None:
        raise _problem(
            429,
            "Too many requests",
            f"{name}: at most {limit}; retry in {wait} s",
            "urn:orderflow:problem:rate-limited",
            headers={"Retry-After": str(wait)},
        )


def rate_limit(
    name: str,
    limit: str,
    *,
    key: Callable[..., Any] = client_address,
    limiter: RateLimiter | None = None,
) -> Callable[..., Coroutine[Any, Any, None]]:
    """A FastAPI dependency allowing `limit` requests per key under `name` (see `enforce`).
    `key` is itself a dependency returning a string: the caller's identity (resolved once
    per request with the auth dependency), or by default the client address."""
    parse_limit(name, limit)  # a bad limit fails when the route is declared

    async def limited(caller_key: str = Depends(key)) -> None:
        enforce(name, limit, str(caller_key), limiter=limiter)

    return limited


def _problem(
    status: int, title: str, detail: str, type_: str, headers: dict[str, str] | None = None
) -> Problem:
    from orderflow.problems import Problem  # here: the module stays free of the package

    return Problem(status, title, detail, type_=type_, headers=headers)
