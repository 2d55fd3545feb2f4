"""The deployment files agree with the code and with each other: docker-compose.yml sets only
settings the services have, each service's bus user and password file come from the bus
set-up (no password committed), its database credentials match the PostgreSQL init script,
and the Procfile runs the services' own console scripts."""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from orderflow.settings import is_secret_field

ROOT = Path(__file__).resolve().parents[1]

# compose service -> (settings package, env prefix, port, console script)
SERVICES = {
    "intake": ("intake", "INTAKE_", 8000, "orderflow-intake"),
    "review-router": ("review_router", "REVIEW_ROUTER_", 8001, "orderflow-review-router"),
    "contracts": ("contracts", "CONTRACTS_", 8002, "orderflow-contracts"),
    "notifier": ("notifier", "NOTIFIER_", 8003, "orderflow-notifier"),
}


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def definitions() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text()
    )
    return document


def variables(prefix: str, field: str, info: Any) -> list[str]:
    """The environment variables a setting is read from: `<PREFIX><FIELD>`, or its alias
    (`ORDERFLOW_ENVIRONMENT`, shared by every service)."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str)]
    variable = prefix + field.upper()
    # a secret may come from a file instead: <VARIABLE>_FILE
    return [variable, f"{variable}_FILE"] if is_secret_field(info) else [variable]


@pytest.mark.parametrize("name", list(SERVICES))
def test_compose_sets_only_settings_the_service_has(name: str) -> None:
    package, prefix, _, _ = SERVICES[name]
    settings = importlib.import_module(f"{package}.settings").Settings
    known = {
        variable
        for field, info in settings.model_fields.items()
        for variable in variables(prefix, field, info)
    }
    environment = compose()["services"][name]["environment"]
    unknown = sorted(set(environment) - known)
    assert not unknown, f"{name}: docker-compose.yml sets {unknown}, not settings of {package}"
    missing = sorted(
        prefix + field.upper()
        for field, info in settings.model_fields.items()
        if info.is_required() and not set(variables(prefix, field, info)) & set(environment)
    )
    assert not missing, f"{name}: docker-compose.yml lacks the required {missing}"


@pytest.mark.parametrize("name", list(SERVICES))
def test_compose_service_is_healthchecked_and_stops_gracefully(name: str) -> None:
    _, prefix, port, script = SERVICES[name]
    doc = compose()
    service = doc["services"][name]
    assert service["command"] == [script]
    assert service["environment"][f"{prefix}HTTP_PORT"] == str(port)
    assert service["environment"][f"{prefix}HTTP_HOST"] == "0.0.0.0"
    assert f"127.0.0.1:{port}:{port}" in service["ports"]
    check = " ".join(service["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/health/ready" in check
    for dependency in ("postgres", "rabbitmq"):
        assert service["depends_on"][dependency]["condition"] == "service_healthy"
        assert "healthcheck" in doc["services"][dependency]
    assert service["restart"] == "unless-stopped"
    assert service["stop_grace_period"]
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"


@pytest.mark.parametrize("name", list(SERVICES))
def test_compose_credentials_match_the_broker_and_database_set_up(name: str) -> None:
    from orderflow import busaccess

    _, prefix, _, _ = SERVICES[name]
    doc = compose()
    service = doc["services"][name]
    environment = service["environment"]

    # the bus: its own user, no password in any committed file, its own password volume
    amqp = urlsplit(environment[f"{prefix}AMQP_URL"])
    assert amqp.username == busaccess.service_users()[name] and amqp.password is None
    password_file = environment[f"{prefix}AMQP_PASSWORD_FILE"]
    volumes = [v for v in service["volumes"] if v.startswith("bus-")]
    assert volumes == [f"bus-{name}:/var/lib/orderflow-bus/{name}:ro"], volumes
    assert password_file == f"/var/lib/orderflow-bus/{name}/password"
    setup = doc["services"]["bus-setup"]
    assert f"bus-{name}:/var/lib/orderflow-bus/{name}" in setup["volumes"]
    command = setup["command"]
    assert command[command.index("--vhost") + 1] == unquote(amqp.path.lstrip("/"))
    assert service["depends_on"]["bus-setup"]["condition"] == "service_completed_successfully"

    database = urlsplit(environment[f"{prefix}DATABASE_URL"])
    init = (ROOT / "deploy" / "postgres" / "initdb" / "10-orderflow.sh").read_text()
    assert re.search(rf"CREATE ROLE {database.username} LOGIN PASSWORD :'(\w+)'", init)
    assert database.path == "/orderflow" and "CREATE DATABASE orderflow;" in init
    variable = f"{database.username.upper()}_DB_PASSWORD" if database.username else ""
    postgres_env = compose()["services"]["postgres"]["environment"]
    assert postgres_env[variable] == unquote(database.password or ""), (
        f"{name}: the database password differs from the postgres container's {variable}"
    )


def test_the_committed_definitions_are_the_topology_and_no_users() -> None:
    from orderflow import provisioning

    defs = definitions()
    assert defs == provisioning.topology_definitions("orderflow"), (
        "deploy/rabbitmq/definitions.json is stale: "
        "uv run orderflow-bus definitions > deploy/rabbitmq/definitions.json"
    )
    assert not {"users", "permissions", "topic_permissions"} & set(defs)
    assert "local-only" not in (ROOT / "docker-compose.yml").read_text().split("rabbitmq")[0]


def test_service_permissions_cover_their_own_queues_and_no_others() -> None:
    from orderflow import busaccess, topology

    for service in busaccess.SERVICES:
        perms = busaccess.service_permissions(service)
        own = busaccess.OWN_QUEUES[service]
        for spec in own:
            assert re.search(perms.configure, spec.name), (service, spec.name)
            assert re.search(perms.read, spec.name) and re.search(perms.read, spec.dlq)
            assert re.search(perms.read, spec.exchange)
        for other, specs in busaccess.OWN_QUEUES.items():
            if other == service:
                continue
            for spec in specs:
                assert not re.search(perms.read, spec.name), (service, "reads", spec.name)
                assert not re.search(perms.configure, spec.name), (service, spec.name)
        # dead letters, and replies to a command's reply_to through the default exchange
        assert re.search(perms.write, topology.DLX) and re.search(perms.write, "amq.default")
        for kind, producer in busaccess.EVENT_PRODUCERS.items():
            assert bool(re.search(perms.topic_write, kind)) == (producer == service), kind


def test_procfile_runs_each_service_console_script() -> None:
    entries = dict(
        line.split(":", 1)
        for line in (ROOT / "Procfile").read_text().splitlines()
        if re.match(r"^[A-Za-z0-9_-]+:", line)
    )
    assert {k: v.strip() for k, v in entries.items()} == {
        name: script for name, (_, _, _, script) in SERVICES.items()
    }
    for name, (_, _, _, script) in SERVICES.items():
        project = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())
        assert script in project["project"]["scripts"]


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_setting_is_documented_in_the_readme(name: str) -> None:
    package, prefix, _, _ = SERVICES[name]
    settings = importlib.import_module(f"{package}.settings").Settings
    readme = (ROOT / "README.md").read_text()
    undocumented = [
        prefix + field.upper()
        for field, info in settings.model_fields.items()
        if field != "auth"  # read with a prefix of its own: see the next test
        and f"`{field.upper()}`" not in readme
        and not any(f"`{v}`" in readme for v in variables(prefix, field, info))
    ]
    assert not undocumented, f"README.md's configuration tables lack {undocumented}"


def test_every_sign_in_setting_is_documented_in_the_readme() -> None:
    from orderflow.auth import AuthSettings

    readme = (ROOT / "README.md").read_text()
    undocumented = [
        f"ORDERFLOW_AUTH_{field.upper()}"
        for field in AuthSettings.model_fields
        if f"`ORDERFLOW_AUTH_{field.upper()}`" not in readme
    ]
    assert not undocumented, f"README.md's configuration tables lack {undocumented}"
