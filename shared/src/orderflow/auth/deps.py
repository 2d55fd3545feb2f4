"""FastAPI dependencies: who is calling (`CallerDep`) and what they must be (`require`).

Every route but the health probes and the API description takes one of them, so a route
without a check is visible in its signature (and the authorization matrix test fails)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from ..problems import Problem, ProblemDetails
from .authenticator import CSRF_HEADER, Authenticated, Authenticator, InvalidCredential
from .identity import Caller

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: The answers of routes behind `CallerDep` or `require`, for their OpenAPI `responses`.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ProblemDetails, "description": "Not signed in, or the credential is not valid"},
    403: {"model": ProblemDetails, "description": "Signed in, but without a role this needs"},
}
_CHALLENGE = 'Bearer realm="orderflow"'


def _unauthenticated(detail: str, *, invalid: bool) -> Problem:
    challenge = _CHALLENGE + (', error="invalid_token"' if invalid else "")
    return Problem(
        401,
        "Sign-in required",
        detail,
        type_="urn:orderflow:problem:unauthenticated",
        headers={"WWW-Authenticate": challenge},
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, "Not allowed", detail, type_="urn:orderflow:problem:forbidden")


def check_csrf(request: Request, found: Authenticated) -> None:
    """A state-changing request authenticated by the session cookie must carry the CSRF
    token of that very session in `X-CSRF-Token` (the hardening middleware has already
    checked the Origin and the double-submit cookie; this ties the token to the session)."""
    if found.csrf_token is None or request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), found.csrf_token.encode()):
        raise forbidden("a request signed in by cookie needs the session's X-CSRF-Token header")


async def optional_caller(request: Request) -> Caller | None:
    authenticator: Authenticator = request.app.state.authenticator
    try:
        found = await authenticator.authenticate(request)
    except InvalidCredential as exc:
        raise _unauthenticated(exc.reason, invalid=True) from exc
    if found is None:
        return None
    check_csrf(request, found)
    request.state.caller = found.caller
    return found.caller


async def authenticated(request: Request) -> Caller:
    caller = await optional_caller(request)
    if caller is None:
        raise _unauthenticated(
            "send an API key or a session token as a Bearer token", invalid=False
        )
    return caller


CallerDep = Annotated[Caller, Depends(authenticated)]


def require(*roles: str) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency: the caller, if they have any of `roles` (`reviewer:*`: any reviewer)."""

    async def check(request: Request) -> Caller:
        caller = await authenticated(request)
        if not caller.has(*roles):
            raise forbidden(f"this needs one of the roles: {', '.join(roles)}")
        return caller

    check.__name__ = "require_" + "_or_".join(
        r.replace(":", "_").replace("*", "any") for r in roles
    )
    return check
