"""Sign-in routes every service has (`/auth/*`), and the administration of accounts and API
keys (`/api/v1/admin/*`, mounted by intake, the console's host)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from ..db import Pool
from ..messages.base import Timestamp
from ..problems import FieldProblem, Problem, ProblemDetails
from . import passwords, store
from .authenticator import SESSION_COOKIE, caller_of_account, client_address
from .deps import CallerDep, require
from .hardening import enforce
from .identity import ADMIN, Caller, valid_role
from .settings import AuthSettings

log = structlog.get_logger(__name__)

CSRF_COOKIE = "orderflow_csrf"

Username = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._@-]{1,64}$")
]
Role = Annotated[str, StringConstraints(min_length=1, max_length=80)]


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    username: Username
    password: str = Field(min_length=1, max_length=passwords.MAX_LENGTH)


class Me(BaseModel):
    id: str
    kind: str
    name: str
    roles: list[str]
    team: list[str]
    email: str | None
    via: str


class SignedIn(BaseModel):
    token: str = Field(description="A session token: send it as `Authorization: Bearer <token>`")
    expires_at: Timestamp
    csrf_token: str = Field(description="Send as X-CSRF-Token with the session cookie")
    caller: Me


def me_of(caller: Caller) -> Me:
    return Me(
        id=caller.id,
        kind=caller.kind,
        name=caller.name,
        roles=sorted(caller.roles),
        team=sorted(caller.team),
        email=caller.email,
        via=caller.via,
    )


def _pool(request: Request) -> Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


def _auth(request: Request) -> AuthSettings:
    return request.app.state.auth_settings  # type: ignore[no-any-return]


sign_in = APIRouter(prefix="/auth", tags=["sign-in"])

_REFUSED = Problem(
    401, "Sign-in refused", "wrong username or password", type_="urn:orderflow:problem:sign-in"
)


@sign_in.post(
    "/login",
    responses={
        401: {"model": ProblemDetails, "description": "Wrong username or password"},
        423: {"model": ProblemDetails, "description": "Locked after repeated failures"},
        429: {"model": ProblemDetails, "description": "Too many attempts from this address"},
    },
)
async def login(body: SignIn, request: Request, response: Response) -> SignedIn:
    """Sign in with a local account; the answer's token (and the session cookie the console
    uses) work with all four services. Repeated failures lock the account for a while."""
    settings = _auth(request)
    limiter = request.app.state.rate_limiter
    enforce("sign-in", settings.login_rate, client_address(request) or "", limiter=limiter)
    pool = _pool(request)
    account = await store.get_account(pool, body.username)
    now = datetime.now(UTC)
    if account is not None and account.locked(now):
        # the same answer whatever the password, so a locked account cannot be probed
        raise Problem(
            423,
            "Account locked",
            "too many failed sign-ins; try again later or ask an administrator",
            type_="urn:orderflow:problem:locked",
        )
    ok = await passwords.verify(account.password_hash if account else None, body.password)
    if account is None or not ok or account.disabled:
        if account is not None:
            await store.record_failed_login(
                pool,
                account.username,
                max_failures=settings.login_max_failures,
                lockout=timedelta(seconds=settings.lockout_seconds),
            )
        log.warning("sign-in refused", username=body.username, source=client_address(request))
        raise _REFUSED
    await store.record_login(pool, account.username)
    token, session = await store.create_session(
        pool,
        username=account.username,
        ttl=timedelta(seconds=settings.session_ttl_seconds),
        source=client_address(request),
    )
    secure = settings.cookie_secure or settings.https
    max_age = settings.session_ttl_seconds
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age, httponly=True, secure=secure, samesite="lax"
    )
    response.set_cookie(
        CSRF_COOKIE, session.csrf_token, max_age=max_age, secure=secure, samesite="lax"
    )
    log.info("signed in", username=account.username, source=client_address(request))
    caller = caller_of_account(account, client_address(request))
    return SignedIn(
        token=token,
        expires_at=session.expires_at,
        csrf_token=session.csrf_token,
        caller=me_of(caller),
    )


@sign_in.post("/logout", status_code=204)
async def logout(request: Request, response: Response, caller: CallerDep) -> None:
    """End this session (the bearer token or the cookie)."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    token = token or request.cookies.get(SESSION_COOKIE, "")
    if token.startswith("ofs_"):
        await store.end_session(_pool(request), token)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)


@sign_in.get("/me")
async def whoami(caller: CallerDep) -> Me:
    """Who the service takes the caller for, with their roles."""
    return me_of(caller)


# --- administration ---------------------------------------------------------------------

admin = APIRouter(prefix="/api/v1/admin", tags=["administration"])
AdminDep = Annotated[Caller, Depends(require(ADMIN))]


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    display_name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
    ]
    email: EmailStr | None = None
    roles: list[Role] = Field(default_factory=list, max_length=50)
    team: list[Username] = Field(default_factory=list, max_length=1000)
    password: str | None = Field(
        default=None, min_length=passwords.MIN_LENGTH, max_length=passwords.MAX_LENGTH
    )


class AccountOut(BaseModel):
    username: str
    display_name: str
    email: str | None
    roles: list[str]
    team: list[str]
    disabled: bool
    locked_until: Timestamp | None
    has_password: bool


class ApiKeyIn(BaseModel):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    scopes: list[Role] = Field(min_length=1, max_length=20)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiKeyOut(BaseModel):
    name: str
    id: str
    scopes: list[str]
    created_by: str
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class NewApiKeyOut(ApiKeyOut):
    token: str = Field(description="Shown once: store it in the system that uses it")


def _check_roles(roles: list[str], pointer: str) -> None:
    bad = [
        FieldProblem(pointer=f"{pointer}/{i}", detail=f"unknown role {r!r}")
        for i, r in enumerate(roles)
        if not valid_role(r)
    ]
    if bad:
        raise Problem(422, "Invalid request", "unknown roles", errors=bad)


def _key_out(key: store.ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        name=key.name,
        id=key.id,
        scopes=list(key.scopes),
        created_by=key.created_by,
        created_at=key.created_at,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


@admin.get("/accounts")
async def list_accounts(request: Request, caller: AdminDep) -> list[AccountOut]:
    return [AccountOut(**store.account_view(a)) for a in await store.list_accounts(_pool(request))]


@admin.put("/accounts/{username}")
async def put_account(
    username: Username, body: AccountIn, request: Request, caller: AdminDep
) -> AccountOut:
    """Create or change a local account (a password here sets it)."""
    _check_roles(body.roles, "/roles")
    hashed = passwords.hash_password(body.password) if body.password else None
    account = await store.upsert_account(
        _pool(request),
        username=username,
        display_name=body.display_name,
        email=str(body.email) if body.email else None,
        roles=body.roles,
        team=body.team,
        password_hash=hashed,
    )
    log.info("account saved", username=username, by=caller.id, roles=body.roles)
    return AccountOut(**store.account_view(account))


@admin.post("/accounts/{username}/disable", status_code=204)
async def disable_account(username: Username, request: Request, caller: AdminDep) -> None:
    """Disable an account and end its sessions."""
    if not await store.set_disabled(_pool(request), username, True):
        raise Problem(404, "No such account", f"there is no account {username!r}")
    log.info("account disabled", username=username, by=caller.id)


@admin.get("/api-keys")
async def list_api_keys(request: Request, caller: AdminDep) -> list[ApiKeyOut]:
    return [_key_out(k) for k in await store.list_api_keys(_pool(request))]


@admin.post("/api-keys", status_code=201)
async def create_api_key(body: ApiKeyIn, request: Request, caller: AdminDep) -> NewApiKeyOut:
    """A key for a company system; its token is in this answer only."""
    _check_roles(body.scopes, "/scopes")
    expires = (
        datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    )
    try:
        key, token = await store.create_api_key(
            _pool(request),
            name=body.name,
            scopes=body.scopes,
            created_by=caller.id,
            expires_at=expires,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Problem(409, "Name taken", f"there is already a key named {body.name!r}") from exc
    log.info("API key created", key=body.name, scopes=body.scopes, by=caller.id)
    return NewApiKeyOut(**_key_out(key).model_dump(), token=token)


@admin.post("/api-keys/{name}/revoke")
async def revoke_api_key(name: str, request: Request, caller: AdminDep) -> ApiKeyOut:
    key = await store.revoke_api_key(_pool(request), name, by=caller.id)
    if key is None:
        raise Problem(404, "No such key", f"there is no API key named {name!r}")
    log.info("API key revoked", key=name, by=caller.id)
    return _key_out(key)
