"""Settings common to every service; each service subclasses with its own env prefix."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, PostgresDsn
from pydantic_settings import BaseSettings, SettingsConfigDict

GUEST = "guest"


class ServiceSettings(BaseSettings):
    """Connection and runtime settings. The URLs are required: there is no default broker or
    database, so a service never silently talks to the wrong one."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    database_url: PostgresDsn = Field(description="PostgreSQL DSN, e.g. postgresql://u@host/db")
    amqp_url: str = Field(
        pattern=r"^amqps?://", description="RabbitMQ URL, e.g. amqp://user:pass@host:5672/vhost"
    )
    amqp_password_file: Path | None = Field(
        default=None,
        description="A file holding the RabbitMQ password (a Docker secret); replaces the "
        "password in the AMQP URL",
    )
    orderflow_bus_users: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("ORDERFLOW_BUS_USERS", "orderflow_bus_users"),
        description="The RabbitMQ user of each service, JSON, when not the service's name: "
        '{"intake": "intake-eu"}. Consumers accept an event only from its producer\'s user',
    )
    orderflow_allow_guest: bool = Field(
        default=False,
        validation_alias=AliasChoices("ORDERFLOW_ALLOW_GUEST", "orderflow_allow_guest"),
        description="Let a service connect to RabbitMQ as `guest` (a throw-away local broker)",
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "INFO"
    log_json: bool = True
    db_pool_min: int = Field(default=1, ge=1)
    db_pool_max: int = Field(default=10, ge=1)
    prefetch: int = Field(default=20, ge=1, description="Unacknowledged messages per consumer")
    publish_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for a confirm")
    outbox_poll_interval: float = Field(default=1.0, gt=0)
    outbox_batch: int = Field(default=100, ge=1)
    graceful_timeout: float = Field(
        default=20.0, gt=0, description="Seconds in-flight messages get to finish on shutdown"
    )
    console_base_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL of the console, for deep links"
    )

    @property
    def dsn(self) -> str:
        return str(self.database_url)

    @property
    def bus_url(self) -> str:
        """The AMQP URL, with the password from `amqp_password_file` when one is set."""
        if self.amqp_password_file is None:
            return self.amqp_url
        password = self.amqp_password_file.read_text().strip()
        parts = urlsplit(self.amqp_url)
        user = parts.username or ""
        host = parts.hostname or ""
        netloc = f"{user}:{quote(password, safe='')}@{host}" + (
            f":{parts.port}" if parts.port else ""
        )
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def bus_user(self) -> str:
        """The RabbitMQ user this service connects as (`guest` when the URL names none,
        as the AMQP client then does)."""
        return unquote(urlsplit(self.amqp_url).username or "") or GUEST

    def check_bus_user(self, service: str) -> None:
        if self.bus_user == GUEST and not self.orderflow_allow_guest:
            raise RuntimeError(
                f"{service} refuses to connect to RabbitMQ as 'guest', which may do anything "
                "on the broker: give the service its own user in the AMQP URL (`orderflow-bus "
                "provision` creates them), or set ORDERFLOW_ALLOW_GUEST=true for a "
                "throw-away local broker"
            )
