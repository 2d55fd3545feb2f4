"""Intake settings, read from `INTAKE_*` environment variables."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

# AllowList at module level: with postponed annotations pydantic resolves it from here
from orderflow.outbound import AllowList, OutboundPolicy
from orderflow.settings import ServiceSettings

OUTBOUND_SETTING = "INTAKE_OUTBOUND_ALLOW"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore")

    http_port: int = 8000
    business_timezone: str = Field(
        default="Asia/Shanghai",
        description="IANA time zone of the business day: a delivery date before today's date "
        "there is in the past",
    )

    submitter_users: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "RabbitMQ users of the systems that may send `order.submit` (comma-separated); a "
            "command from any other user is dead-lettered with the reason"
        ),
    )

    max_attachment_bytes: int = Field(
        default=25 * 1024 * 1024,
        ge=1,
        description="The largest file that may be attached to an order, in bytes; a larger "
        "upload is refused (413) as soon as it passes the limit",
    )
    max_import_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1,
        description="The largest bulk import body, in bytes",
    )

    outbound_allow: AllowList = Field(
        default_factory=list,
        description="Hosts, addresses and networks (CIDR) that files named by URL in "
        "`order.submit` may be fetched from although they are not public (private, "
        "loopback, link-local...): comma-separated or a JSON list, e.g. "
        "10.20.0.0/16,files.internal; empty: public addresses only",
    )
    fetch_timeout: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds to connect to, and between two reads from, the server of a "
        "file named by URL in `order.submit`; a fetch that times out is retried",
    )

    revision_decision_wait: float = Field(
        default=20.0,
        ge=0,
        le=300,
        description="Seconds a revision (PUT or `order.submit` with `order_id`) that finds "
        "the order still under review waits for the departments' decision to reach intake "
        "(it may be on its way); then it is answered as a retryable conflict (409 with "
        "Retry-After, or a reply with `retryable: true`)",
    )

    @field_validator("submitter_users", mode="before")
    @classmethod
    def _users(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def outbound_policy(self) -> OutboundPolicy:
        return OutboundPolicy.parse(self.outbound_allow, setting=OUTBOUND_SETTING)

    @field_validator("business_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (is tzdata installed?)") from exc
        return value

    def today(self) -> date:
        return datetime.now(ZoneInfo(self.business_timezone)).date()
