"""OIDC token checks against a real HTTP server on 127.0.0.1 serving discovery and a JWKS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from orderflow.auth.oidc import InvalidToken, KeysUnavailable, OidcSettings, OidcVerifier

if TYPE_CHECKING:
    from conftest import Provider

AUDIENCE = "orderflow"


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "ES256"}


class Clock:
    """The verifier's monotonic clock, moved by hand so cache windows pass without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def claims(provider: Provider, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": provider.url,
        "aud": AUDIENCE,
        "sub": "f3a1c2",
        "preferred_username": "ada",
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "roles": ["sales", "reviewer"],
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: Any, kid: str | None, alg: str = "RS256") -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand, as an attacker would (PyJWT refuses to sign these)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b""
    if secret is not None:
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def verifier(provider: Provider, clock: Clock | None = None, **settings: Any) -> OidcVerifier:
    config = OidcSettings(issuer=provider.url, audience=AUDIENCE, **settings)
    return OidcVerifier(config, monotonic=clock or Clock())


async def rejected(check: OidcVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await check.verify(token)
    assert not token or token not in str(caught.value)
    return caught.value.reason


async def test_valid_token_gives_the_identity(provider: Provider, rsa_a: rsa.RSAPrivateKey) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    check = verifier(provider)
    assert provider.hits == {}  # nothing fetched when constructed

    found = await check.verify(sign(claims(provider), rsa_a, "a"))

    assert (found.username, found.subject, found.issuer) == ("ada", "f3a1c2", provider.url)
    assert found.roles == ["sales", "reviewer"]
    assert (found.email, found.name) == ("ada@example.com", "Ada Lovelace")
    assert found.expires_at.timestamp() > time.time()
    assert provider.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}
    await check.verify(sign(claims(provider), rsa_a, "a"))
    assert provider.hits["/jwks"] == 1  # cached


async def test_es256_nested_roles_and_username_fallback(
    provider: Provider, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    provider.keys = [ec_jwk(ec_key, "e")]
    check = verifier(provider, roles_claim="realm_access.roles", jwks_url=f"{provider.url}/jwks")
    token = sign(
        claims(provider, preferred_username=None, roles=None, realm_access={"roles": ["ops"]}),
        ec_key,
        "e",
        alg="ES256",
    )

    found = await check.verify(token)

    assert (found.username, found.roles) == ("f3a1c2", ["ops"])
    assert provider.hits == {"/jwks": 1}  # a configured jwks_url skips discovery


async def test_token_without_kid_uses_the_only_key(
    provider: Provider, rsa_a: rsa.RSAPrivateKey
) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    assert (await verifier(provider).verify(sign(claims(provider), rsa_a, None))).username == "ada"


async def test_wrong_signature(
    provider: Provider, rsa_a: rsa.RSAPrivateKey, rsa_b: rsa.RSAPrivateKey
) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    assert await rejected(verifier(provider), sign(claims(provider), rsa_b, "a")) == "bad signature"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "https://idp.example.com"}, "wrong issuer"),
        ({"aud": "another-app"}, "wrong audience"),
        ({"exp": int(time.time()) - 120}, "token expired"),
        ({"nbf": int(time.time()) + 600}, "token not yet valid"),
        ({"iat": int(time.time()) + 600}, "token not yet valid"),
        ({"iat": int(time.time()) - 2 * 86400}, "token too old"),
        ({"sub": None}, "missing claim: sub"),
        ({"iat": None}, "missing claim: iat"),
        ({"roles": "sales ops", "email": 7}, "claim email is not a string"),
    ],
)
async def test_claims_are_checked(
    provider: Provider, rsa_a: rsa.RSAPrivateKey, changes: dict[str, Any], reason: str
) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    token = sign(claims(provider, **changes), rsa_a, "a")
    assert await rejected(verifier(provider), token) == reason


async def test_leeway_accepts_small_clock_skew(
    provider: Provider, rsa_a: rsa.RSAPrivateKey
) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    now = int(time.time())
    token = sign(claims(provider, iat=now - 300, nbf=now - 300, exp=now - 5), rsa_a, "a")
    assert (await verifier(provider, leeway_seconds=30).verify(token)).username == "ada"


async def test_alg_none_is_refused(provider: Provider, rsa_a: rsa.RSAPrivateKey) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    token = forge({"alg": "none", "kid": "a", "typ": "JWT"}, claims(provider), None)
    assert await rejected(verifier(provider), token) == "algorithm not allowed"


async def test_hs256_signed_with_the_rsa_public_key_is_refused(
    provider: Provider, rsa_a: rsa.RSAPrivateKey
) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    public_pem = rsa_a.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = forge({"alg": "HS256", "kid": "a", "typ": "JWT"}, claims(provider), public_pem)
    assert await rejected(verifier(provider), token) == "algorithm not allowed"


def test_settings_refuse_hmac_and_none() -> None:
    for algs in (["HS256"], ["none"], ["RS256", "HS512"]):
        with pytest.raises(ValidationError, match="algorithms"):
            OidcSettings(issuer="https://idp.example.com", audience="x", algorithms=algs)


async def test_algorithm_outside_the_allow_list(
    provider: Provider, rsa_a: rsa.RSAPrivateKey
) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    token = sign(claims(provider), rsa_a, "a", alg="RS384")
    assert await rejected(verifier(provider), token) == "algorithm not allowed"
    allowed = verifier(provider, algorithms=["RS256", "RS384"])
    assert (await allowed.verify(token)).username == "ada"


async def test_algorithm_must_suit_the_key_type(
    provider: Provider, rsa_a: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # an EC-signed token naming the RSA key's kid: refused before any signature maths
    provider.keys = [rsa_jwk(rsa_a, "a"), ec_jwk(ec_key, "e")]
    token = sign(claims(provider), ec_key, "a", alg="ES256")
    assert await rejected(verifier(provider), token) == "algorithm does not match the signing key"


async def test_key_rotation_refetches_for_an_unknown_kid(
    provider: Provider, rsa_a: rsa.RSAPrivateKey, rsa_b: rsa.RSAPrivateKey
) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    clock = Clock()
    check = verifier(provider, clock, jwks_refetch_interval_seconds=30)
    old, new = sign(claims(provider), rsa_a, "a"), sign(claims(provider), rsa_b, "b")
    await check.verify(old)
    assert await rejected(check, new) == "unknown signing key"  # not published yet

    provider.keys = [rsa_jwk(rsa_b, "b")]  # the provider rotates and drops the old key
    clock.now += 31
    assert (await check.verify(new)).username == "ada"
    assert provider.hits["/jwks"] == 2
    assert await rejected(check, old) == "unknown signing key"


async def test_removed_key_stops_verifying_when_the_cache_expires(
    provider: Provider, rsa_a: rsa.RSAPrivateKey, rsa_b: rsa.RSAPrivateKey
) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a"), rsa_jwk(rsa_b, "b")]
    clock = Clock()
    check = verifier(provider, clock, jwks_cache_seconds=600)
    old = sign(claims(provider), rsa_a, "a")
    await check.verify(old)

    provider.keys = [rsa_jwk(rsa_b, "b")]
    clock.now += 300
    await check.verify(old)  # still cached
    assert provider.hits["/jwks"] == 1
    clock.now += 301
    assert await rejected(check, old) == "unknown signing key"
    assert provider.hits["/jwks"] == 2


async def test_forged_kids_cause_at_most_one_fetch_per_window(
    provider: Provider, rsa_a: rsa.RSAPrivateKey
) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    clock = Clock()
    check = verifier(provider, clock, jwks_refetch_interval_seconds=60)
    await check.verify(sign(claims(provider), rsa_a, "a"))
    clock.now += 61
    forged = [sign(claims(provider), rsa_a, f"forged-{n}") for n in range(40)]

    burst = await asyncio.gather(*(check.verify(t) for t in forged[:20]), return_exceptions=True)
    for token in forged[20:]:
        assert await rejected(check, token) == "unknown signing key"

    assert all(isinstance(r, InvalidToken) for r in burst)
    assert provider.hits["/jwks"] == 2  # the first load, then one for the whole burst
    clock.now += 61
    assert await rejected(check, forged[0]) == "unknown signing key"
    assert provider.hits["/jwks"] == 3


async def test_stale_keys_serve_while_the_provider_fails(
    provider: Provider, rsa_a: rsa.RSAPrivateKey
) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    clock = Clock()
    check = verifier(provider, clock, jwks_cache_seconds=60)
    token = sign(claims(provider), rsa_a, "a")
    await check.verify(token)

    provider.jwks_status = 500
    clock.now += 61
    assert (await check.verify(token)).username == "ada"
    assert provider.hits["/jwks"] == 2


async def test_no_keys_at_all(provider: Provider, rsa_a: rsa.RSAPrivateKey) -> None:
    provider.jwks_status = 503
    check = verifier(provider)
    with pytest.raises(KeysUnavailable, match="signing keys unavailable"):
        await check.verify(sign(claims(provider), rsa_a, "a"))


async def test_discovery_issuer_mismatch(provider: Provider, rsa_a: rsa.RSAPrivateKey) -> None:
    provider.keys = [rsa_jwk(rsa_a, "a")]
    provider.discovery_issuer = "https://impostor.example.com"
    check = verifier(provider)
    with pytest.raises(KeysUnavailable) as caught:
        await check.verify(sign(claims(provider), rsa_a, "a"))
    assert caught.value.reason == "signing keys unavailable"
    assert provider.hits["/jwks"] == 0  # the mismatched document's jwks_uri is never followed


async def test_malformed_tokens(provider: Provider) -> None:
    check = verifier(provider)
    for token in ("", "not-a-jwt", "a.b.c", "x" * 20000):
        assert await rejected(check, token) == "malformed token"
    assert provider.hits == {}


def test_www_authenticate_carries_the_reason() -> None:
    header = InvalidToken("token expired").www_authenticate()
    assert header == (
        'Bearer realm="orderflow", error="invalid_token", error_description="token expired"'
    )


def test_settings_name_the_bad_field() -> None:
    with pytest.raises(ValidationError, match="issuer"):
        OidcSettings(issuer="http://idp.example.com", audience="x")
    with pytest.raises(ValidationError, match="required_claims"):
        OidcSettings(issuer="https://idp.example.com", audience="x", required_claims=["exp"])
    assert OidcSettings(issuer="https://idp.example.com", audience="x").audience == ["x"]
