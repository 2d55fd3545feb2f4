"""Review-router settings, read from `REVIEW_ROUTER_*` environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from orderflow.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REVIEW_ROUTER_", extra="ignore")

    http_port: int = 8001
