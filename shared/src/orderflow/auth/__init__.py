"""Identities and authorization, one module for all four services: people sign in with local
accounts or an OpenID Connect provider, company systems use API keys; every HTTP route
states the roles it allows (`deps.require`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from .authenticator import Authenticator, TokenVerifier
from .deps import AUTH_RESPONSES, CallerDep, authenticated, forbidden, optional_caller, require
from .hardening import HardeningSettings, RateLimiter, install_hardening
from .identity import Caller
from .settings import AuthSettings

if TYPE_CHECKING:
    from ..service import ServiceRuntime

__all__ = [
    "AUTH_RESPONSES",
    "AuthSettings",
    "Caller",
    "CallerDep",
    "authenticated",
    "forbidden",
    "install_auth",
    "optional_caller",
    "require",
]


def _verifier(settings: AuthSettings) -> TokenVerifier | None:
    if not settings.oidc_issuer:
        return None
    if not settings.oidc_audience:
        raise ValueError("ORDERFLOW_AUTH_OIDC_AUDIENCE is required with an issuer")
    from .oidc import OidcSettings, OidcVerifier

    return OidcVerifier(
        OidcSettings(
            issuer=settings.oidc_issuer,
            audience=[settings.oidc_audience],
            algorithms=settings.oidc_algorithms,
            jwks_url=settings.oidc_jwks_url,
            leeway_seconds=settings.oidc_leeway_seconds,
            username_claim=settings.oidc_username_claim,
            roles_claim=settings.oidc_roles_claim,
        )
    )


def _hardening(settings: AuthSettings) -> HardeningSettings:
    return HardeningSettings(
        allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.allowed_origins,
        behind_https=settings.https,
    )


def install_auth(app: FastAPI, runtime: ServiceRuntime, settings: AuthSettings) -> None:
    """The authenticator and the sign-in routes; the store is prepared at start."""
    from .routes import sign_in

    app.state.auth_settings = settings
    app.state.authenticator = Authenticator(
        lambda: runtime.pool,
        oidc=_verifier(settings),
        role_map=settings.oidc_role_map,
        team_claim=settings.oidc_team_claim,
    )
    # counted per process (decision 0013), and per app so that tests do not share counters
    app.state.rate_limiter = RateLimiter()
    install_hardening(app, _hardening(settings))
    app.include_router(sign_in)
