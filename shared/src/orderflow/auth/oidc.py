"""OpenID Connect bearer tokens (access or ID tokens) verified against the provider's JWKS.

PyJWT checks the signature and the registered claims; this module picks the key, keeps the
key set fresh (asynchronously, with httpx) and turns the claims into a `VerifiedToken`.
Mapping the provider's role names to Orderflow's roles is left to the caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = structlog.get_logger(__name__)

# the key type (and EC curve) each allowed algorithm must be verified with
KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
ALWAYS_REQUIRED = frozenset({"exp", "iss", "aud", "sub"})
MAX_TOKEN_LENGTH = 16 * 1024
MAX_DOCUMENT_BYTES = 512 * 1024
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class InvalidToken(Exception):
    """The token is not accepted. `reason` is short, fixed text without the token in it, fit
    for a 401 answer's `WWW-Authenticate: Bearer error_description`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def www_authenticate(self, realm: str = "orderflow") -> str:
        return f'Bearer realm="{realm}", error="invalid_token", error_description="{self.reason}"'


class KeysUnavailable(InvalidToken):
    """No signing keys could be had from the provider (down, or misconfigured): the token
    cannot be checked. Still an InvalidToken (401); a caller may prefer to answer 503."""


@dataclass(frozen=True)
class VerifiedToken:
    username: str
    roles: list[str]
    email: str | None
    name: str | None
    subject: str
    expires_at: datetime
    issuer: str
    claims: Mapping[str, Any] = field(repr=False)


def _check_url(value: str, name: str, allow_http: bool) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{name} must be an absolute http(s) URL, got {value!r}")
    if parts.scheme == "http" and not allow_http and parts.hostname not in LOOPBACK:
        raise ValueError(f"{name} must use https (plain http only on loopback or allow_http)")


class OidcSettings(BaseModel):
    """How tokens from one OpenID provider are checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(description="The provider's issuer URL, exactly as in its tokens")
    audience: list[str] = Field(min_length=1, description="Accepted `aud` values (any one)")
    algorithms: list[str] = Field(default=["RS256", "ES256"], min_length=1)
    jwks_url: str | None = Field(
        default=None, description="Key set URL; found through the issuer's discovery if unset"
    )
    leeway_seconds: float = Field(default=30.0, ge=0, le=300, description="Clock skew allowed")
    username_claim: str = Field(default="preferred_username", min_length=1)
    roles_claim: str = Field(
        default="roles", min_length=1, description="Claim with the roles; dotted for nested"
    )
    email_claim: str | None = "email"
    name_claim: str | None = "name"
    required_claims: list[str] = Field(default=["exp", "iat", "iss", "aud", "sub"])
    max_token_age_seconds: float | None = Field(
        default=86400.0, gt=0, description="Reject tokens whose `iat` is older; None: no limit"
    )
    jwks_cache_seconds: float = Field(default=600.0, gt=0, description="Keys kept this long")
    jwks_refetch_interval_seconds: float = Field(
        default=30.0, ge=0, description="At most one key set fetch this often, whatever the kids"
    )
    http_timeout_seconds: float = Field(default=5.0, gt=0)
    allow_http: bool = Field(default=False, description="Allow plain http beyond loopback")

    @field_validator("audience", mode="before")
    @classmethod
    def _one_audience(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        refused = [alg for alg in value if alg not in KEY_TYPES]
        if refused:
            raise ValueError(f"not allowed: {refused}; only {sorted(KEY_TYPES)} (no none, no HS*)")
        return value

    @field_validator("required_claims")
    @classmethod
    def _minimum_claims(cls, value: list[str]) -> list[str]:
        missing = sorted(ALWAYS_REQUIRED - set(value))
        if missing:
            raise ValueError(f"must include {missing}")
        return value

    @model_validator(mode="after")
    def _urls(self) -> OidcSettings:
        _check_url(self.issuer, "issuer", self.allow_http)
        if self.jwks_url is not None:
            _check_url(self.jwks_url, "jwks_url", self.allow_http)
        return self

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class _FetchError(Exception):
    pass


def _usable_keys(document: Any) -> dict[str | None, dict[str, Any]]:
    """The signing keys of a JWKS document by kid; keys PyJWT cannot load are left out."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _FetchError("the key set has no `keys` list")
    keys: dict[str | None, dict[str, Any]] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        if jwk.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        try:
            jwt.PyJWK(jwk)
        except jwt.PyJWTError as exc:
            log.warning("oidc.jwk_skipped", kid=jwk.get("kid"), error=str(exc))
            continue
        keys.setdefault(jwk.get("kid"), jwk)
    return keys


class _KeySet:
    """The provider's keys, refreshed after `jwks_cache_seconds` or when an unknown kid shows
    up, but never fetched more than once per `jwks_refetch_interval_seconds`: forged kids
    cannot make us hammer the provider."""

    def __init__(
        self,
        settings: OidcSettings,
        client: httpx.AsyncClient | None,
        monotonic: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._client = client
        self._now = monotonic
        self._lock = asyncio.Lock()
        self._keys: dict[str | None, dict[str, Any]] = {}
        self._loaded: dict[tuple[str | None, str], jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._jwks_url = settings.jwks_url

    async def find(self, kid: str | None) -> dict[str, Any] | None:
        if self._expired():
            await self._refresh()
        jwk = self._select(kid)
        if jwk is None and self._may_fetch():
            await self._refresh()
            jwk = self._select(kid)
        if not self._keys:
            raise KeysUnavailable("signing keys unavailable")
        return jwk

    def load(self, kid: str | None, jwk: dict[str, Any], alg: str) -> jwt.PyJWK:
        loaded = self._loaded.get((kid, alg))
        if loaded is None:
            try:
                loaded = self._loaded[(kid, alg)] = jwt.PyJWK(jwk, algorithm=alg)
            except jwt.PyJWTError:
                raise InvalidToken("algorithm does not match the signing key") from None
        return loaded

    def _select(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid) if kid is not None else None

    def _expired(self) -> bool:
        fresh = (
            self._fetched_at is not None
            and self._now() - self._fetched_at < self._settings.jwks_cache_seconds
        )
        return not fresh and self._may_fetch()

    def _may_fetch(self) -> bool:
        return (
            self._attempted_at is None
            or self._now() - self._attempted_at >= self._settings.jwks_refetch_interval_seconds
        )

    async def _refresh(self) -> None:
        seen = self._attempted_at
        async with self._lock:
            if self._attempted_at != seen or not self._may_fetch():
                return  # fetched by another request while this one waited
            self._attempted_at = self._now()
            try:
                self._keys = _usable_keys(await self._get_json(await self._key_set_url()))
                self._loaded = {}
                self._fetched_at = self._now()
                log.info("oidc.keys_fetched", kids=sorted(str(k) for k in self._keys))
            except (httpx.HTTPError, ValueError, _FetchError) as exc:
                # the keys held so far stay in use: a provider blip does not lock everyone out
                log.error("oidc.keys_fetch_failed", error=str(exc), stale_keys=len(self._keys))

    async def _key_set_url(self) -> str:
        if self._jwks_url is None:
            found = await self._get_json(self._settings.discovery_url)
            if not isinstance(found, dict) or found.get("issuer") != self._settings.issuer:
                issuer = found.get("issuer") if isinstance(found, dict) else None
                raise _FetchError(f"discovery names issuer {issuer!r}, not the configured one")
            url = found.get("jwks_uri")
            if not isinstance(url, str):
                raise _FetchError("discovery has no jwks_uri")
            _check_url(url, "jwks_uri", self._settings.allow_http)
            self._jwks_url = url
        return self._jwks_url

    async def _get_json(self, url: str) -> Any:
        async with self._http() as client:
            response = await client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            if len(response.content) > MAX_DOCUMENT_BYTES:
                raise _FetchError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
            return response.json()

    @asynccontextmanager
    async def _http(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._client is not None:
            yield self._client
            return
        async with httpx.AsyncClient(timeout=self._settings.http_timeout_seconds) as client:
            yield client


# PyJWT's errors, most specific first, as reasons a client may be told
_REASONS: list[tuple[type[jwt.PyJWTError], str]] = [
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuedAtError, "malformed iat claim"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidKeyError, "algorithm does not match the signing key"),
    (jwt.DecodeError, "malformed token"),
]


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim: {exc.claim}"
    return next((text for kind, text in _REASONS if isinstance(exc, kind)), "invalid token")


def _unverified_header(token: str) -> dict[str, Any]:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("malformed token")
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("malformed token") from None


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by dotted path into nested objects (`realm_access.roles`)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _text_claim(claims: Mapping[str, Any], name: str | None) -> str | None:
    value = _claim(claims, name) if name else None
    if value is not None and not isinstance(value, str):
        raise InvalidToken(f"claim {name} is not a string")
    return value or None


def _roles(claims: Mapping[str, Any], path: str) -> list[str]:
    value = _claim(claims, path)
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()  # a space-delimited list, like `scope`
    if isinstance(value, list) and all(isinstance(role, str) for role in value):
        return list(value)
    raise InvalidToken(f"claim {path} is not a list of strings")


class OidcVerifier:
    """Checks bearer tokens from one provider. Does no I/O until the first `verify`."""

    def __init__(
        self,
        settings: OidcSettings,
        *,
        http_client: httpx.AsyncClient | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._keys = _KeySet(settings, http_client, monotonic)

    async def verify(self, token: str) -> VerifiedToken:
        header = _unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.settings.algorithms:
            raise InvalidToken("algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed token")
        jwk = await self._keys.find(kid)
        if jwk is None:
            raise InvalidToken("unknown signing key")
        if not _fits(jwk, alg):
            raise InvalidToken("algorithm does not match the signing key")
        return self._identity(self._decode(token, self._keys.load(kid, jwk, alg), alg))

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        s = self.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_seconds,
                options={"require": s.required_claims},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason(exc)) from None
        self._check_age(claims)
        return claims

    def _check_age(self, claims: Mapping[str, Any]) -> None:
        iat = claims.get("iat")
        if iat is None:
            return
        if not isinstance(iat, int | float) or iat > claims["exp"]:
            raise InvalidToken("malformed iat claim")
        limit = self.settings.max_token_age_seconds
        if limit is not None and time.time() - iat > limit + self.settings.leeway_seconds:
            raise InvalidToken("token too old")

    def _identity(self, claims: dict[str, Any]) -> VerifiedToken:
        s = self.settings
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("claim sub is not a string")
        return VerifiedToken(
            username=_text_claim(claims, s.username_claim) or subject,
            roles=_roles(claims, s.roles_claim),
            email=_text_claim(claims, s.email_claim),
            name=_text_claim(claims, s.name_claim),
            subject=subject,
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            issuer=claims["iss"],
            claims=claims,
        )


def _fits(jwk: Mapping[str, Any], alg: str) -> bool:
    """The token's algorithm suits this key: same family (never HMAC against a public key),
    same EC curve, and the key's own `alg` when it names one."""
    kty, curve = KEY_TYPES[alg]
    if jwk.get("kty") != kty or (curve is not None and jwk.get("crv") != curve):
        return False
    return jwk.get("alg") in (None, alg)
