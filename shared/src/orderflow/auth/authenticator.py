"""Turns a request's credential into a `Caller`: an API key, a session (bearer token or the
console's cookie), or an OpenID Connect token. One module, used by all four services."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import HTTPConnection

from ..db import Pool
from . import store, tokens
from .identity import Caller, roles_of

SESSION_COOKIE = "orderflow_session"
CSRF_HEADER = "x-csrf-token"


class InvalidCredential(Exception):
    """A credential was presented and is not valid: 401, never a fall-back to anonymous."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class VerifiedToken(Protocol):
    @property
    def username(self) -> str: ...
    @property
    def roles(self) -> Sequence[str]: ...
    @property
    def email(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def claims(self) -> Mapping[str, Any]: ...


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> VerifiedToken: ...


@dataclass(frozen=True)
class Authenticated:
    caller: Caller
    csrf_token: str | None = None  # set when the session came from the cookie


def client_address(conn: HTTPConnection) -> str | None:
    # uvicorn resolves X-Forwarded-For from trusted proxies (--forwarded-allow-ips)
    return conn.client.host if conn.client else None


def _bearer(conn: HTTPConnection) -> str | None:
    value = conn.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidCredential("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def caller_of_account(account: store.Account, source: str | None) -> Caller:
    return Caller(
        id=account.username,
        kind="person",
        name=account.display_name,
        roles=roles_of(account.roles),
        via="session",
        team=frozenset(account.team),
        email=account.email,
        source=source,
    )


class Authenticator:
    def __init__(
        self,
        pool: Callable[[], Pool],
        *,
        oidc: TokenVerifier | None = None,
        role_map: Mapping[str, Sequence[str]] | None = None,
        team_claim: str = "team",
    ) -> None:
        self._pool = pool
        self._oidc = oidc
        self._role_map = dict(role_map or {})
        self._team_claim = team_claim

    async def authenticate(self, conn: HTTPConnection) -> Authenticated | None:
        """The caller, None for an anonymous request; `InvalidCredential` for a bad one."""
        source = client_address(conn)
        token = _bearer(conn)
        if token is not None:
            return Authenticated(await self._token(token, source))
        cookie = conn.cookies.get(SESSION_COOKIE)
        if cookie:
            found = await store.find_session(self._pool(), cookie)
            if found is None or found[1].disabled:
                raise InvalidCredential("the session has ended: sign in again")
            session, account = found
            return Authenticated(caller_of_account(account, source), csrf_token=session.csrf_token)
        return None

    async def _token(self, token: str, source: str | None) -> Caller:
        if token.startswith(tokens.API_KEY_PREFIX):
            return await self._api_key(token, source)
        if token.startswith(tokens.SESSION_PREFIX):
            found = await store.find_session(self._pool(), token)
            if found is None or found[1].disabled:
                raise InvalidCredential("the session has ended: sign in again")
            return caller_of_account(found[1], source)
        if token.count(".") == 2 and self._oidc is not None:
            return await self._oidc_token(token, source)
        raise InvalidCredential("unknown kind of token")

    async def _api_key(self, token: str, source: str | None) -> Caller:
        parsed = tokens.parse_api_key(token)
        key = await store.find_api_key(self._pool(), *parsed) if parsed else None
        if key is None:
            raise InvalidCredential("unknown, revoked or expired API key")
        return Caller(
            id=f"key:{key.name}",
            kind="system",
            name=key.name,
            roles=roles_of(key.scopes),
            via="api_key",
            source=source,
        )

    async def _oidc_token(self, token: str, source: str | None) -> Caller:
        assert self._oidc is not None
        try:
            verified = await self._oidc.verify(token)
        except Exception as exc:  # the verifier's own error carries a safe reason
            raise InvalidCredential(str(getattr(exc, "reason", "invalid token"))) from exc
        mapped: list[str] = []
        for role in verified.roles:
            mapped += self._role_map.get(role, [role])
        team = verified.claims.get(self._team_claim) or []
        return Caller(
            id=verified.username,
            kind="person",
            name=verified.name or verified.username,
            roles=roles_of(mapped),
            via="oidc",
            team=frozenset(str(t) for t in team) if isinstance(team, list) else frozenset(),
            email=verified.email,
            source=source,
        )
