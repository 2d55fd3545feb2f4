"""Contracts settings, read from `CONTRACTS_*` environment variables."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, StringConstraints, field_validator
from pydantic_settings import SettingsConfigDict

from orderflow.settings import ServiceSettings

from . import domain
from .adapters import documents

Detail = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CONTRACTS_", extra="ignore")

    http_port: int = 8002

    # The seller is the company itself. Its name has no default: a contract must never go
    # out under a made-up seller.
    seller_name: Detail = Field(description="The seller's legal name, as on the contract")
    seller_address: Detail | None = None
    seller_contact: Detail | None = Field(default=None, description="The seller's contact person")
    seller_phone: Detail | None = None
    seller_email: Detail | None = None
    seller_tax_id: Detail | None = Field(default=None, description="Taxpayer identification")
    seller_bank_name: Detail | None = None
    seller_bank_account_name: Detail | None = None
    seller_bank_account: Detail | None = None

    contract_number_pattern: str = Field(
        default=domain.DEFAULT_NUMBER_PATTERN,
        description="Contract numbers: {seq} (required) and {year}, with format specs",
    )
    number_timezone: str = Field(
        default="Asia/Shanghai",
        description="The time zone whose calendar year a contract number carries",
    )

    template_dir: Path | None = Field(
        default=None,
        description="Folder with the contract templates, one `<order type>.<language>.typ` "
        "each (and what they import); unset: the templates that come with the service",
    )
    font_path: str = Field(
        default=os.pathsep.join(str(d) for d in documents.DEFAULT_FONT_DIRS),
        description=f"Font folders for the documents, separated by {os.pathsep!r}; the "
        "templates name Noto Serif CJK SC and Noto Sans CJK SC (Debian: fonts-noto-cjk)",
    )
    signed_copy_max_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        le=200 * 1024 * 1024,
        description="Largest signed copy accepted for upload, in bytes",
    )
    render_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Tries at typesetting a contract's document before its approval is "
        "dead-lettered and its number handed back",
    )
    render_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How long a replica holds a contract it typesets before another may take "
        "it over (a crashed replica's work)",
    )

    @field_validator("template_dir")
    @classmethod
    def _templates(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        missing = documents.missing_templates(value)
        if missing:
            raise ValueError(f"{value} lacks the templates {', '.join(missing)}")
        return value

    @field_validator("contract_number_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        return domain.check_number_pattern(value)

    @field_validator("number_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        cls._zone(value)
        return value

    @staticmethod
    def _zone(name: str) -> dt.tzinfo:
        if name.upper() == "UTC":
            return dt.UTC  # needs no time zone database
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc

    @property
    def timezone(self) -> dt.tzinfo:
        return self._zone(self.number_timezone)

    @property
    def seller(self) -> domain.Party:
        return domain.Party(
            name=self.seller_name,
            address=self.seller_address,
            contact=self.seller_contact,
            phone=self.seller_phone,
            email=self.seller_email,
            tax_id=self.seller_tax_id,
            bank_name=self.seller_bank_name,
            bank_account_name=self.seller_bank_account_name,
            bank_account=self.seller_bank_account,
        )

    @property
    def templates(self) -> Path:
        return self.template_dir or documents.PACKAGED_TEMPLATES

    @property
    def font_dirs(self) -> tuple[Path, ...]:
        return tuple(Path(p) for p in self.font_path.split(os.pathsep) if p.strip())
