"""Review-router settings, read from `REVIEW_ROUTER_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from orderflow.messages import Department
from orderflow.settings import EnvList, ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REVIEW_ROUTER_", extra="ignore")

    http_port: int = 8001
    policy_file: Path | None = Field(
        default=None,
        description="The review policy (TOML); the default policy shipped with the router if unset",
    )
    require_verdict_user: bool = Field(
        default=True,
        description=(
            "Accept verdicts, annotations and reassignments only with an AMQP user_id (which "
            "RabbitMQ validates) of a user that speaks for the department named"
        ),
    )
    verdict_user_pattern: str = Field(
        default="dept-{department}",
        pattern=r"\{department\}",
        description="The RabbitMQ user of each department, by convention",
    )
    verdict_users: dict[str, Department] = Field(
        default_factory=dict,
        description='More RabbitMQ users and their department, JSON: {"erp-finance": "finance"}',
    )
    verdict_acting_users: EnvList = Field(
        default_factory=list,
        description=(
            "RabbitMQ users that may act for any department (the console acting for a "
            "logged-in reviewer); comma-separated or a JSON list"
        ),
    )
    timer_poll_interval: float = Field(
        default=5.0, gt=0, description="Seconds between looks at the review deadline timers"
    )
    timer_batch: int = Field(default=100, ge=1, description="Timers fired per look, at most")
