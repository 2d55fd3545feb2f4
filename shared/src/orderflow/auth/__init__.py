"""Identities and authorization, one module for all four services: people sign in with local
accounts or an OpenID Connect provider, company systems use API keys; every HTTP route
states the roles it allows (`deps.require`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from .authenticator import Authenticator, TokenVerifier
from .deps import AUTH_RESPONSES, CallerDep, authenticated, forbidden, optional_caller, require
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
    from .oidc import build_verifier  # type: ignore[import-untyped,unused-ignore]

    return build_verifier(settings)  # type: ignore[no-any-return,unused-ignore]


def install_auth(app: FastAPI, runtime: ServiceRuntime, settings: AuthSettings) -> None:
    """The authenticator and the sign-in routes; the store is prepared at start."""
    from .routes import sign_in

    app.state.auth_settings = settings
    app.state.allowed_origins = list(settings.allowed_origins)
    app.state.authenticator = Authenticator(
        lambda: runtime.pool,
        oidc=_verifier(settings),
        role_map=settings.oidc_role_map,
        team_claim=settings.oidc_team_claim,
    )
    app.include_router(sign_in)
