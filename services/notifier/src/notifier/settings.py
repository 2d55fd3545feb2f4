"""Notifier settings, read from `NOTIFIER_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from orderflow.settings import ServiceSettings

# AllowList at module level: with postponed annotations pydantic resolves it from here
from .adapters.outbound import AllowList, OutboundPolicy


class RateLimit(BaseModel):
    """At most `limit` messages in any `window` seconds to one chat robot."""

    limit: int = Field(ge=1)
    window: float = Field(gt=0, description="Seconds")


#: What the chat platforms document for one robot (Slack: one message a second).
DEFAULT_RATE_LIMITS: dict[str, RateLimit] = {
    "dingtalk": RateLimit(limit=20, window=60),
    "wecom": RateLimit(limit=20, window=60),
    "feishu": RateLimit(limit=100, window=60),
    "slack": RateLimit(limit=1, window=1),
}


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore")

    http_port: int = 8003

    # the notifier's alone (the links in its notifications), read as NOTIFIER_CONSOLE_BASE_URL
    # as it was when every service had it
    console_base_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL of the console, for deep links"
    )

    contacts_file: Path | None = Field(
        default=None,
        description="TOML or JSON file of people, departments and chat robots; "
        "without it every person gets the defaults (in-app inbox, and email when known)",
    )
    template_dir: Path | None = Field(
        default=None,
        description="Directory of template files that replace the built-in ones, file by file",
    )

    smtp_host: str | None = Field(default=None, description="SMTP server; unset: no email")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls (submission, 587), tls (implicit, 465), none"
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_validate_certs: bool = True
    mail_from: str | None = Field(
        default=None,
        pattern=r"^[^@\s]+@[^@\s]+$",
        description="Sender address, e.g. orderflow@example.com (required with smtp_host)",
    )
    mail_from_name: str = Field(default="Orderflow", description="Sender display name")

    delivery_max_attempts: int = Field(
        default=8, ge=1, description="Attempts before a delivery is marked failed"
    )
    delivery_backoff_base: float = Field(
        default=30.0, gt=0, description="Seconds before the first retry; doubles each attempt"
    )
    delivery_backoff_max: float = Field(default=3600.0, gt=0, description="Longest wait, seconds")
    delivery_timeout: float = Field(
        default=15.0, gt=0, description="Seconds one email or webhook call may take"
    )
    delivery_concurrency: int = Field(
        default=4, ge=1, description="Deliveries in flight at once, per channel"
    )
    delivery_poll_interval: float = Field(
        default=1.0, gt=0, description="Seconds between looks for due deliveries when idle"
    )
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=dict,
        description='Per platform, over the defaults, e.g. {"dingtalk": {"limit": 20, '
        '"window": 60}}; a robot in the contacts file may set its own',
    )

    outbound_allow: AllowList = Field(
        default_factory=list,
        description="Hosts, addresses and networks (CIDR) webhooks and SMTP may reach although "
        "they are not public (private, loopback, link-local...): comma-separated or a JSON "
        "list, e.g. 127.0.0.1,10.20.0.0/16,erp.internal; empty: public addresses only",
    )

    @property
    def outbound_policy(self) -> OutboundPolicy:
        return OutboundPolicy.parse(self.outbound_allow)

    @model_validator(mode="after")
    def _mail_needs_a_sender(self) -> Self:
        if self.smtp_host and not self.mail_from:
            raise ValueError("NOTIFIER_MAIL_FROM is required when NOTIFIER_SMTP_HOST is set")
        return self

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_host and self.mail_from)

    def rate_limit(self, kind: str) -> RateLimit | None:
        return self.rate_limits.get(kind) or DEFAULT_RATE_LIMITS.get(kind)
