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
from typing import Annotated, Any, Literal, Protocol, Self
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_settings import SettingsError

from orderflow.logging import SECRET_PARAMETERS
from orderflow.messages import Salesperson
from orderflow.settings import DEVELOPMENT_MARKERS, development_secret, read_secret_file

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


def _from_env_or_file(
    where: str, value: str | None, env: str | None, file: Path | None
) -> str | None:
    """One of a literal value, an environment variable's name or a file's path."""
    given = [x for x in (value, env, file) if x is not None]
    if len(given) > 1:
        raise ValueError(f"give one of {where}, {where}_env and {where}_file")
    if env is not None:
        found = os.environ.get(env)
        if not found:
            raise ValueError(f"environment variable {env} is not set")
        return found
    if file is not None:
        try:
            return read_secret_file(f"{where}_file", str(file))
        except SettingsError as exc:
            raise ValueError(str(exc)) from None
    return value


class WebhookConfig(_Model):
    """A robot's URL and signing secret: WeCom, DingTalk and Slack carry their key in the
    URL, so both may come from the environment (`*_env`) or a file (`*_file`, e.g. a
    Docker secret) instead of this file."""

    kind: WebhookKind
    # repr=False: a robot's URL holds its key, and a repr may end up in a log or traceback
    url: str | None = Field(default=None, repr=False, description="The robot's URL, with its key")
    url_env: str | None = Field(default=None, description="Variable holding the URL")
    url_file: Path | None = Field(default=None, description="File holding the URL")
    secret: str | None = Field(default=None, repr=False, description="Signing secret (the robot's)")
    secret_env: str | None = Field(
        default=None, description="Name of an environment variable holding the secret"
    )
    secret_file: Path | None = Field(default=None, description="File holding the secret")
    rate_limit: RateLimit | None = None

    _target: str = PrivateAttr(default="")
    _secret: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        url = _from_env_or_file("url", self.url, self.url_env, self.url_file)
        if url is None:
            raise ValueError("give the robot's url (or url_env, url_file)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
            raise ValueError("the url must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("the url must not carry a user or password")
        secret = _from_env_or_file("secret", self.secret, self.secret_env, self.secret_file)
        if self.kind == "webhook" and not secret:
            raise ValueError("a generic webhook needs a secret to sign its requests")
        self._target, self._secret = url, secret
        return self

    def target_url(self) -> str:
        """The robot's URL, wherever it came from; configuration only, never a message."""
        return self._target

    def signing_secret(self) -> str | None:
        return self._secret

    def secret_values(self) -> list[str]:
        """What a log line must not show: the secret, the URL and the key or token in it
        (a credential-named query parameter, or a long one; Slack's and Feishu's token is
        the last part of the path)."""
        parts = urlsplit(self._target)
        values = [self._target]
        for name, value in parse_qsl(parts.query):
            if name.lower() in SECRET_PARAMETERS or len(value) >= TOKEN_LENGTH:
                values.append(value)
        last = parts.path.rstrip("/").rpartition("/")[2]
        if self.kind in ("slack", "feishu") and len(last) >= TOKEN_LENGTH:
            values.append(last)
        if self._secret:
            values.append(self._secret)
        return values

    def development_secrets(self) -> list[tuple[str, str]]:
        """(which, why) for each value a production deployment must not use."""
        found: list[tuple[str, str]] = []
        if any(marker in self._target.lower() for marker in DEVELOPMENT_MARKERS):
            found.append(("url", "is an example value"))
        if self._secret is not None:
            why = development_secret(self._secret, url=False) if self._secret else "is empty"
            if why:
                found.append(("secret", why))
        return found


#: a query value or path part this long is taken for a token
TOKEN_LENGTH = 16


class DepartmentConfig(_Model):
    contacts: list[PersonId] = Field(
        default_factory=list, description="Told a review was sent, and when it is overdue"
    )
    escalation: list[PersonId] = Field(
        default_factory=list, description="Told when an overdue review is escalated"
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


class EmailAddresses(Protocol):
    """Where a person's email address comes from: the contacts file today; an identity
    provider's directory can stand in (the same method). Never the order or the event:
    an address taken from a message would let whoever wrote it choose the recipient."""

    def email_of(self, person_id: str) -> str | None: ...


class Directory:
    """Who is who, resolved from the contacts file (or the defaults without one)."""

    def __init__(
        self, config: ContactsFile | None = None, *, addresses: EmailAddresses | None = None
    ) -> None:
        self.config = config or ContactsFile()
        self._people = {p.id: p for p in self.config.people}
        self._addresses: EmailAddresses = addresses or self

    @property
    def webhooks(self) -> dict[str, WebhookConfig]:
        return dict(self.config.webhooks)

    def email_of(self, person_id: str) -> str | None:
        """The address the contacts file gives for the person, if any."""
        p = self._people.get(person_id)
        return str(p.email) if p and p.email else None

    def person(self, person_id: str, *, known_as: Salesperson | None = None) -> domain.Person:
        """The person's preferences; someone not in the file gets the defaults. `known_as`
        (from the event) lends a display name only, never an address."""
        d = self.config.defaults
        p = self._people.get(person_id)
        quiet = p.quiet_hours if p else None
        return domain.Person(
            id=person_id,
            name=(p.name if p else None) or (known_as.name if known_as else None),
            email=self._addresses.email_of(person_id),
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

    def secret_values(self) -> list[str]:
        """Every robot's URL, key, token and secret: for the log redaction."""
        return [v for hook in self.config.webhooks.values() for v in hook.secret_values()]

    def development_secrets(self) -> list[str]:
        """`webhooks.<name>.<url|secret> <why>` for each value production must not use."""
        return [
            f"webhooks.{name}.{which} {why}"
            for name, hook in self.config.webhooks.items()
            for which, why in hook.development_secrets()
        ]


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
