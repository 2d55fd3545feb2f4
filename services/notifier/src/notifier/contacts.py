"""The contacts file: people and their preferences, department contacts, chat robots.

TOML or JSON (by the file's suffix), checked in full when the service starts, so a typo
stops the service with every problem named instead of silently not notifying someone.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Sequence
from datetime import UTC, time, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, model_validator

from orderflow.messages import Salesperson

from . import domain
from .settings import RateLimit

Language = Literal["zh", "en"]
WebhookKind = Literal["webhook", "wecom", "dingtalk", "feishu", "slack"]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
PersonId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@-]+$")]

DEFAULT_TIMEZONE = "Asia/Shanghai"
_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{1,2})(?::?(\d{2}))?$")


class ContactsError(Exception):
    """The contacts file cannot be used; the message names every problem."""


def resolve_timezone(name: str) -> tzinfo:
    """An IANA zone (Asia/Shanghai) or a fixed offset (+08:00, UTC+8)."""
    if name.upper() == "UTC":
        return UTC
    m = _OFFSET.match(name)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        hours, minutes = int(m.group(2)), int(m.group(3) or 0)
        if hours > 14 or minutes > 59:
            raise ValueError(f"offset {name!r} is out of range")
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        if name == DEFAULT_TIMEZONE:
            # the default must work on a slim image without a time zone database: China
            # has kept UTC+8 all year since 1991
            return timezone(timedelta(hours=8), DEFAULT_TIMEZONE)
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Asia/Shanghai "
            "(the system's time zone database must have it) or an offset such as +08:00"
        ) from exc


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuietHoursConfig(_Model):
    start: time = Field(description="Local time quiet hours begin, e.g. 22:00")
    end: time = Field(description="Local time they end, e.g. 08:00 (the next day if earlier)")


class PersonConfig(_Model):
    id: PersonId
    name: str | None = None
    email: EmailStr | None = None
    language: Language | None = None
    timezone: str | None = None
    channels: list[str] | None = Field(
        default=None, description='"inbox", "email" or the name of a robot under [webhooks]'
    )
    quiet_hours: QuietHoursConfig | None = None

    @model_validator(mode="after")
    def _zone(self) -> Self:
        if self.timezone is not None:
            resolve_timezone(self.timezone)
        return self


class WebhookConfig(_Model):
    kind: WebhookKind
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    secret: str | None = Field(default=None, description="Signing secret (the robot's)")
    secret_env: str | None = Field(
        default=None, description="Name of an environment variable holding the secret"
    )
    rate_limit: RateLimit | None = None

    @model_validator(mode="after")
    def _secret(self) -> Self:
        if self.secret and self.secret_env:
            raise ValueError("give either secret or secret_env, not both")
        if self.secret_env and not os.environ.get(self.secret_env):
            raise ValueError(f"environment variable {self.secret_env} is not set")
        if self.kind == "webhook" and not (self.secret or self.secret_env):
            raise ValueError("a generic webhook needs a secret to sign its requests")
        return self

    def signing_secret(self) -> str | None:
        return os.environ.get(self.secret_env) if self.secret_env else self.secret


class DepartmentConfig(_Model):
    contacts: list[PersonId] = Field(default_factory=list, description="Told a review waits")
    escalation: list[PersonId] = Field(
        default_factory=list, description="Told, with the contacts, when a review is overdue"
    )


class Defaults(_Model):
    language: Language = "zh"
    timezone: str = DEFAULT_TIMEZONE
    channels: list[str] = Field(default_factory=lambda: [domain.INBOX, domain.EMAIL])

    @model_validator(mode="after")
    def _zone(self) -> Self:
        resolve_timezone(self.timezone)
        return self


class ContactsFile(_Model):
    defaults: Defaults = Field(default_factory=Defaults)
    people: list[PersonConfig] = Field(default_factory=list)
    webhooks: dict[Name, WebhookConfig] = Field(default_factory=dict)
    departments: dict[
        Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,40}$")], DepartmentConfig
    ] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> Self:
        problems: list[str] = []
        ids = [p.id for p in self.people]
        for pid in sorted({i for i in ids if ids.count(i) > 1}):
            problems.append(f"people: {pid!r} is listed more than once")
        channels = {domain.INBOX, domain.EMAIL, *self.webhooks}
        for where, chosen in [("defaults.channels", self.defaults.channels)] + [
            (f"people[{i}].channels", p.channels) for i, p in enumerate(self.people)
        ]:
            for c in chosen or ():
                if c not in channels:
                    problems.append(
                        f"{where}: {c!r} is neither inbox, email nor a robot under [webhooks]"
                    )
        known = set(ids)
        for dept, config in self.departments.items():
            for role in ("contacts", "escalation"):
                for pid in getattr(config, role):
                    if pid not in known:
                        problems.append(
                            f"departments.{dept}.{role}: {pid!r} is not one of the people"
                        )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Directory:
    """Who is who, resolved from the contacts file (or the defaults without one)."""

    def __init__(self, config: ContactsFile | None = None) -> None:
        self.config = config or ContactsFile()
        self._people = {p.id: p for p in self.config.people}

    @property
    def webhooks(self) -> dict[str, WebhookConfig]:
        return dict(self.config.webhooks)

    def person(self, person_id: str, *, known_as: Salesperson | None = None) -> domain.Person:
        """The person's preferences; someone not in the file gets the defaults."""
        d = self.config.defaults
        p = self._people.get(person_id)
        quiet = p.quiet_hours if p else None
        return domain.Person(
            id=person_id,
            name=(p.name if p else None) or (known_as.name if known_as else None),
            email=(str(p.email) if p and p.email else None)
            or (str(known_as.email) if known_as and known_as.email else None),
            language=(p.language if p else None) or d.language,
            channels=tuple((p.channels if p and p.channels is not None else None) or d.channels),
            tz=resolve_timezone((p.timezone if p else None) or d.timezone),
            quiet_hours=domain.QuietHours(quiet.start, quiet.end) if quiet else None,
        )

    def contacts(self, department: str) -> list[str]:
        config = self.config.departments.get(department)
        return list(config.contacts) if config else []

    def escalation(self, department: str) -> list[str]:
        config = self.config.departments.get(department)
        return list(config.escalation) if config else []


def _location(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def parse(text: str, *, suffix: str, source: str = "contacts file") -> Directory:
    try:
        raw: Any = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ContactsError(f"{source}: not valid {suffix.lstrip('.').upper()}: {exc}") from exc
    try:
        return Directory(ContactsFile.model_validate(raw))
    except ValidationError as exc:
        problems = [f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ContactsError(f"{source}: " + "; ".join(problems)) from exc


def load(path: Path | None) -> Directory:
    """Read and check the contacts file; no file means everyone gets the defaults."""
    if path is None:
        return Directory()
    if path.suffix not in (".toml", ".json"):
        raise ContactsError(f"{path}: the contacts file must be .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ContactsError(f"{path}: cannot read the contacts file: {exc}") from exc
    return parse(text, suffix=path.suffix, source=str(path))
