"""Settings common to every service; each service subclasses with its own env prefix."""

from __future__ import annotations

from pydantic import Field, PostgresDsn
from pydantic_settings import BaseSettings, SettingsConfigDict

from .auth.settings import AuthSettings


class ServiceSettings(BaseSettings):
    """Connection and runtime settings. The URLs are required: there is no default broker or
    database, so a service never silently talks to the wrong one."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    database_url: PostgresDsn = Field(description="PostgreSQL DSN, e.g. postgresql://u@host/db")
    amqp_url: str = Field(
        pattern=r"^amqps?://", description="RabbitMQ URL, e.g. amqp://user:pass@host:5672/vhost"
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

    auth: AuthSettings = Field(
        default_factory=AuthSettings, description="Sign-in, from ORDERFLOW_AUTH_* (all services)"
    )

    @property
    def dsn(self) -> str:
        return str(self.database_url)
