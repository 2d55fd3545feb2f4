"""Sign-in settings, the same for all four services (`ORDERFLOW_AUTH_*`), since one
identity must be honoured by every service alike."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERFLOW_AUTH_", extra="ignore")

    # single sign-on: an OpenID Connect issuer whose tokens are accepted as bearer tokens
    oidc_issuer: str | None = Field(default=None, description="Issuer URL; unset: no SSO")
    oidc_audience: str | None = Field(default=None, description="Required with an issuer")
    oidc_jwks_url: str | None = Field(default=None, description="Default: from discovery")
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    oidc_username_claim: str = "preferred_username"
    oidc_roles_claim: str = Field(default="roles", description="May be dotted: realm_access.roles")
    oidc_team_claim: str = Field(default="team", description="Salespeople a sales manager sees")
    oidc_role_map: dict[str, list[str]] = Field(
        default_factory=dict,
        description='IdP role -> Orderflow roles, JSON, e.g. {"Sales": ["salesperson"]}; '
        "an IdP role named like an Orderflow role needs no entry",
    )
    oidc_leeway_seconds: int = Field(default=30, ge=0, le=300)

    # local accounts and sessions
    session_ttl_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 24 * 3600)
    cookie_secure: bool = Field(
        default=False, description="Send cookies over HTTPS only (set behind TLS)"
    )
    login_max_failures: int = Field(default=5, ge=1, le=100)
    lockout_seconds: int = Field(default=900, ge=1)

    # HTTP hardening
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1", "test"],
        description="Host header allow-list (the names clients use to reach the service)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins a browser may send state-changing requests from, besides the "
        "service's own; e.g. the console's https://orders.example.com",
    )
    https: bool = Field(default=False, description="Behind HTTPS: HSTS and secure cookies")
    login_rate: str = Field(default="10/minute", description="Sign-in attempts per address")
    order_create_rate: str = Field(
        default="600/minute", description="Orders a caller may create (intake)"
    )
