"""Secrets come from the environment or from files (`<VAR>_FILE`), are never printed by a
settings' repr or error, and a production deployment refuses development ones."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict, SettingsError

from orderflow.settings import ServiceSettings

STRONG = "Zq8-strong-password-2026"
DATABASE = f"postgresql://orderflow:{STRONG}@db.internal:5432/orderflow"
BROKER = f"amqp://orderflow:{STRONG}@mq.internal:5672/orderflow"


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "AMQP_URL"):
        for suffix in ("", "_FILE"):
            monkeypatch.delenv(f"DEMO_{name}{suffix}", raising=False)
    monkeypatch.delenv("ORDERFLOW_ENVIRONMENT", raising=False)


def secret_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n", encoding="utf-8")  # as `echo value > file` leaves it
    return path


def test_secrets_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEMO_DATABASE_URL_FILE", str(secret_file(tmp_path, "db", DATABASE)))
    monkeypatch.setenv("DEMO_AMQP_URL_FILE", str(secret_file(tmp_path, "mq", BROKER)))
    settings = DemoSettings()  # type: ignore[call-arg]
    assert settings.dsn == DATABASE and settings.broker_url == BROKER
    assert STRONG not in repr(settings) and STRONG not in str(settings)
    assert STRONG in settings.secret_values()


def test_the_notifiers_smtp_password_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from notifier.settings import Settings

    monkeypatch.setenv("NOTIFIER_SMTP_PASSWORD_FILE", str(secret_file(tmp_path, "pw", STRONG)))
    settings = Settings(database_url=DATABASE, amqp_url=BROKER)
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == STRONG
    assert STRONG not in repr(settings)


def test_a_missing_secret_file_stops_the_service_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEMO_DATABASE_URL_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("DEMO_AMQP_URL", BROKER)
    with pytest.raises(SettingsError, match=r"DEMO_DATABASE_URL_FILE: cannot read the secret"):
        DemoSettings()  # type: ignore[call-arg]
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    monkeypatch.setenv("DEMO_DATABASE_URL_FILE", str(empty))
    with pytest.raises(SettingsError, match=r"DEMO_DATABASE_URL_FILE: the secret file .* empty"):
        DemoSettings()  # type: ignore[call-arg]


def test_a_secret_given_twice_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEMO_DATABASE_URL_FILE", str(secret_file(tmp_path, "db", DATABASE)))
    monkeypatch.setenv("DEMO_DATABASE_URL", DATABASE)
    monkeypatch.setenv("DEMO_AMQP_URL", BROKER)
    with pytest.raises(SettingsError, match="DEMO_DATABASE_URL and DEMO_DATABASE_URL_FILE"):
        DemoSettings()  # type: ignore[call-arg]


def test_a_bad_url_is_named_without_its_value() -> None:
    with pytest.raises(ValidationError) as caught:
        DemoSettings(database_url=f"mysql://u:{STRONG}@h/db", amqp_url=f"http://u:{STRONG}@h/")
    text = str(caught.value)
    assert "database_url" in text and "amqp_url" in text
    assert STRONG not in text


@pytest.mark.parametrize(
    ("database", "broker", "named", "why"),
    [
        (DATABASE, "amqp://guest:guest@mq:5672/", "DEMO_AMQP_URL", "development broker login"),
        ("postgresql://o:short@db/o", BROKER, "DEMO_DATABASE_URL", "shorter than 16"),
        (
            "postgresql://notifier:notifier-local-only@postgres:5432/orderflow",
            BROKER,
            "DEMO_DATABASE_URL",
            "development or example value",
        ),
    ],
)
def test_production_refuses_development_secrets(
    monkeypatch: pytest.MonkeyPatch, database: str, broker: str, named: str, why: str
) -> None:
    monkeypatch.setenv("ORDERFLOW_ENVIRONMENT", "production")
    with pytest.raises(ValidationError) as caught:
        DemoSettings(database_url=database, amqp_url=broker)
    text = str(caught.value)
    assert named in text and why in text
    for secret in ("guest:guest", "short@", "notifier-local-only"):
        assert secret not in text
    # the same values are fine for development, the default
    monkeypatch.delenv("ORDERFLOW_ENVIRONMENT")
    assert DemoSettings(database_url=database, amqp_url=broker).environment == "development"


def test_production_starts_with_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERFLOW_ENVIRONMENT", "production")
    settings = DemoSettings(database_url=DATABASE, amqp_url=BROKER)
    assert settings.environment == "production"


def test_production_refuses_a_short_smtp_password() -> None:
    from notifier.settings import Settings

    with pytest.raises(ValidationError) as caught:
        Settings(
            environment="production",
            database_url=DATABASE,
            amqp_url=BROKER,
            smtp_password="hunter2",
        )
    assert "NOTIFIER_SMTP_PASSWORD is shorter than 16" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("service", "prefix"), [("intake.settings", "INTAKE"), ("notifier.settings", "NOTIFIER")]
)
@pytest.mark.parametrize(
    "raw",
    ["127.0.0.1, 10.20.0.0/16,files.internal", '["127.0.0.1", "10.20.0.0/16", "files.internal"]'],
)
def test_an_outbound_allow_list_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, service: str, prefix: str, raw: str
) -> None:
    settings_class = importlib.import_module(service).Settings
    monkeypatch.setenv(f"{prefix}_OUTBOUND_ALLOW", raw)
    settings = settings_class(database_url=DATABASE, amqp_url=BROKER)
    assert settings.outbound_allow == ["127.0.0.1", "10.20.0.0/16", "files.internal"]
    assert settings.outbound_policy.host_allowed("files.internal")
    assert f"{prefix}_OUTBOUND_ALLOW" in settings.outbound_policy.setting

    monkeypatch.setenv(f"{prefix}_OUTBOUND_ALLOW", "127.0.0.1,10.0.0.0/33")
    with pytest.raises(ValidationError) as caught:
        settings_class(database_url=DATABASE, amqp_url=BROKER)
    assert "outbound_allow" in str(caught.value) and "10.0.0.0/33" in str(caught.value)
    monkeypatch.delenv(f"{prefix}_OUTBOUND_ALLOW")
    assert settings_class(database_url=DATABASE, amqp_url=BROKER).outbound_allow == []
