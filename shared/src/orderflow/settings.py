"""Settings common to every service; each service subclasses with its own env prefix.

Secrets (every `SecretStr` setting) come from the environment, as `<VAR>` or as
`<VAR>_FILE`, the path of a file holding the value (a Docker or Kubernetes secret under
/run/secrets). `ORDERFLOW_ENVIRONMENT=production` refuses development secrets at start.
"""

from __future__ import annotations

import json
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    PostgresDsn,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from .auth.settings import AuthSettings

Environment = Literal["development", "production"]

#: the shortest password or secret a production deployment may use
MIN_SECRET_LENGTH = 16
#: the broker's default login, which RabbitMQ only accepts from localhost anyway
DEVELOPMENT_LOGINS = {("guest", "guest")}
#: values the repository ships for local use (docker-compose.yml, examples)
DEVELOPMENT_MARKERS = ("-local-only", "replace_me", "replace-me", "changeme")

_POSTGRES_DSN: TypeAdapter[PostgresDsn] = TypeAdapter(PostgresDsn)


def split_list(value: Any) -> Any:
    """`a,b` or a JSON list, as one environment variable gives a list (a shell line stays
    readable); anything else is left to the field's type."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


#: A list setting read from one variable, comma-separated or a JSON list (`NoDecode`:
#: pydantic-settings would otherwise take the variable as JSON only).
EnvList = Annotated[list[str], NoDecode, BeforeValidator(split_list)]


def is_secret_field(field: FieldInfo) -> bool:
    """`SecretStr` or `SecretStr | None`: the settings that may come from `<VAR>_FILE`."""
    annotation = field.annotation
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return SecretStr in typing.get_args(annotation)
    return False


def _environ(name: str) -> str | None:
    """The variable, matched without regard to case, as pydantic-settings does by default."""
    if name in os.environ:
        return os.environ[name]
    wanted = name.lower()
    for key, value in os.environ.items():
        if key.lower() == wanted:
            return value
    return None


def read_secret_file(variable: str, path: str) -> str:
    """The file's text without its trailing newline; a missing, unreadable or empty file
    stops the service, naming the variable (never the value)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise SettingsError(f"{variable}: cannot read the secret file {path}: {reason}") from None
    value = text.rstrip("\r\n")
    if not value:
        raise SettingsError(f"{variable}: the secret file {path} is empty")
    return value


class SecretFilesSource(PydanticBaseSettingsSource):
    """`<PREFIX><NAME>_FILE` for every secret setting: the value is read from that file."""

    def __init__(self, settings_cls: type[BaseSettings], given: set[str]) -> None:
        super().__init__(settings_cls)
        self._given = given

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        prefix = str(self.config.get("env_prefix", ""))
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if name in self._given or not is_secret_field(field):
                continue
            variable = f"{prefix}{name}".upper()
            path = _environ(f"{variable}_FILE")
            if path is None:
                continue
            if _environ(variable):
                raise SettingsError(f"{variable} and {variable}_FILE are both set: give one")
            values[name] = read_secret_file(f"{variable}_FILE", path)
        return values


def development_secret(value: str, *, url: bool) -> str | None:
    """Why `value` is a development secret, in words that never repeat it; None if fine."""
    lowered = value.lower()
    if any(marker in lowered for marker in DEVELOPMENT_MARKERS):
        return "is a development or example value"
    if not url:
        if len(value) < MIN_SECRET_LENGTH:
            return f"is shorter than {MIN_SECRET_LENGTH} characters"
        return None
    parts = urlsplit(value)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if (user, password) in DEVELOPMENT_LOGINS:
        return "uses the development broker login"
    if parts.password is not None and len(password) < MIN_SECRET_LENGTH:
        return f"has a password shorter than {MIN_SECRET_LENGTH} characters"
    return None


GUEST = "guest"


class ServiceSettings(BaseSettings):
    """Connection and runtime settings. The URLs are required: there is no default broker or
    database, so a service never silently talks to the wrong one."""

    # the inputs are secrets (URLs with passwords): a validation error names the setting
    # and the problem, never the value
    model_config = SettingsConfigDict(
        extra="ignore",
        env_file=None,
        hide_input_in_errors=True,
        populate_by_name=True,
        # an empty variable is an unset one (compose files often leave `VAR: ""`)
        env_ignore_empty=True,
    )

    environment: Environment = Field(
        default="development",
        validation_alias=AliasChoices("ORDERFLOW_ENVIRONMENT"),
        description="ORDERFLOW_ENVIRONMENT, shared by every service: production refuses to "
        "start with a development secret",
    )
    database_url: SecretStr = Field(
        description="PostgreSQL DSN, e.g. postgresql://u:pass@host/db (or <VAR>_FILE)"
    )
    amqp_url: SecretStr = Field(
        description="RabbitMQ URL, e.g. amqp://user:pass@host:5672/vhost (or <VAR>_FILE)"
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

    auth: AuthSettings = Field(
        default_factory=AuthSettings, description="Sign-in, from ORDERFLOW_AUTH_* (all services)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        given = set(getattr(init_settings, "init_kwargs", {}))
        return (
            init_settings,
            env_settings,
            SecretFilesSource(settings_cls, given),
            dotenv_settings,
            file_secret_settings,
        )

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, value: SecretStr) -> SecretStr:
        try:
            _POSTGRES_DSN.validate_python(value.get_secret_value())
        except ValidationError as exc:
            reasons = "; ".join(str(e["msg"]) for e in exc.errors())
            raise ValueError(f"not a PostgreSQL URL (postgresql://...): {reasons}") from None
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("amqp://", "amqps://")):
            raise ValueError("not a RabbitMQ URL (amqp:// or amqps://)")
        return value

    @model_validator(mode="after")
    def _no_development_secrets_in_production(self) -> Self:
        if self.environment != "production":
            return self
        problems = [f"{variable} {why}" for variable, why in self.development_secrets()]
        if problems:
            raise ValueError(
                "ORDERFLOW_ENVIRONMENT is production, but " + "; ".join(problems) + " (set "
                "a real secret, e.g. through <VAR>_FILE)"
            )
        return self

    def variable(self, name: str) -> str:
        """The environment variable a setting is read from."""
        return f"{self.model_config.get('env_prefix', '')}{name}".upper()

    def secrets(self) -> dict[str, str]:
        """Every secret setting that is set, by field name (for checks and log redaction)."""
        found: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if is_secret_field(field) and isinstance(value, SecretStr):
                found[name] = value.get_secret_value()
        return found

    def development_secrets(self) -> list[tuple[str, str]]:
        """(variable, why) for each secret a production deployment must not use."""
        found = []
        for name, value in self.secrets().items():
            why = development_secret(value, url=name.endswith("_url"))
            if why:
                found.append((self.variable(name), why))
        return found

    def secret_values(self) -> list[str]:
        """The values a log line must never show: each secret, and each URL's password."""
        values: list[str] = []
        for name, value in self.secrets().items():
            values.append(value)
            if name.endswith("_url"):
                password = urlsplit(value).password
                if password:
                    values += [password, unquote(password)]
        return values

    @property
    def dsn(self) -> str:
        return self.database_url.get_secret_value()

    @property
    def broker_url(self) -> str:
        """The AMQP URL, with the password from `amqp_password_file` when one is set."""
        url = self.amqp_url.get_secret_value()
        if self.amqp_password_file is None:
            return url
        password = read_secret_file("AMQP_PASSWORD_FILE", str(self.amqp_password_file))
        parts = urlsplit(url)
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
        return unquote(urlsplit(self.amqp_url.get_secret_value()).username or "") or GUEST

    def check_bus_user(self, service: str) -> None:
        if self.bus_user == GUEST and not self.orderflow_allow_guest:
            raise RuntimeError(
                f"{service} refuses to connect to RabbitMQ as 'guest', which may do anything "
                "on the broker: give the service its own user in the AMQP URL (`orderflow-bus "
                "provision` creates them), or set ORDERFLOW_ALLOW_GUEST=true for a "
                "throw-away local broker"
            )
