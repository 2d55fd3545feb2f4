"""Setting up a vhost with administrator credentials: the whole topology, and the users of
`busaccess` with their permissions, as one RabbitMQ definitions import (additive: nothing
else on the broker changes).

Two ways in: the management HTTP API (`ManagementApi`, via httpx) or, on the broker's own
machine without the management plugin, `rabbitmqctl` (`Rabbitmqctl`). Users are global
in RabbitMQ: an existing user keeps its password unless it is rotated explicitly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from . import busaccess, topology


@dataclass(frozen=True)
class Account:
    """A RabbitMQ user to exist, with its permissions on the vhost being provisioned."""

    name: str
    permissions: busaccess.Permissions
    kind: str = "service"


def service_accounts(users: Mapping[str, str] | None = None) -> list[Account]:
    names = busaccess.service_users(users)
    return [Account(names[s], busaccess.service_permissions(s)) for s in busaccess.SERVICES]


def department_account(
    department: str, *, pattern: str = "dept-{department}", name: str | None = None
) -> Account:
    user = name or busaccess.department_user(department, pattern=pattern)
    return Account(user, busaccess.department_permissions(department, user), "department")


def submitter_account(name: str) -> Account:
    return Account(name, busaccess.submitter_permissions(name), "submitter")


def listener_account(name: str, event_types: Iterable[str]) -> Account:
    return Account(name, busaccess.listener_permissions(name, event_types), "listener")


def password_hash(password: str) -> str:
    """rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def new_password() -> str:
    # URL- and shell-safe characters, so it goes into an AMQP URL or an env file as it is
    return secrets.token_urlsafe(24)


# --- definitions ------------------------------------------------------------------------


def all_queues(departments: Iterable[str] = ()) -> list[topology.QueueSpec]:
    names = list(dict.fromkeys((*topology.DEFAULT_DEPARTMENTS, *departments)))
    specs = [
        *(q for qs in busaccess.OWN_QUEUES.values() for q in qs),
        topology.verdict_queue(names),
        *(topology.department_queue(d) for d in names),
    ]
    unique: dict[str, topology.QueueSpec] = {}
    for spec in specs:
        unique[spec.name] = spec  # the verdict queue with every department's binding wins
    return list(unique.values())


def topology_definitions(vhost: str, departments: Iterable[str] = ()) -> dict[str, Any]:
    """Exchanges, queues (each with its `.dlq`) and bindings, as a definitions document."""
    exchanges: list[dict[str, Any]] = [
        {
            "name": name,
            "vhost": vhost,
            "type": kind.value,
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        }
        for name, kind in topology.EXCHANGE_TYPES.items()
    ]
    queues: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []

    def binding(exchange: str, queue: str, key: str) -> dict[str, Any]:
        return {
            "source": exchange,
            "vhost": vhost,
            "destination": queue,
            "destination_type": "queue",
            "routing_key": key,
            "arguments": {},
        }

    for spec in all_queues(departments):
        for name, arguments in (
            (spec.dlq, {"x-queue-type": "quorum"}),
            (spec.name, topology.queue_arguments(spec.name)),
        ):
            queues.append(
                {
                    "name": name,
                    "vhost": vhost,
                    "durable": True,
                    "auto_delete": False,
                    "arguments": arguments,
                }
            )
        bindings.append(binding(topology.DLX, spec.dlq, spec.name))
        bindings += [binding(spec.exchange, spec.name, key) for key in spec.routing_keys]
    return {
        "vhosts": [{"name": vhost}],
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
    }


def grant_definitions(vhost: str, accounts: Sequence[Account]) -> dict[str, Any]:
    permissions = []
    topic_permissions = []
    for account in accounts:
        p = account.permissions
        permissions.append(
            {
                "user": account.name,
                "vhost": vhost,
                "configure": p.configure,
                "write": p.write,
                "read": p.read,
            }
        )
        # always set, so a user without one is not allowed every routing key by default
        topic_permissions.append(
            {
                "user": account.name,
                "vhost": vhost,
                "exchange": topology.EVENTS,
                "write": p.topic_write,
                "read": p.topic_read,
            }
        )
    return {"permissions": permissions, "topic_permissions": topic_permissions}


def user_definitions(passwords: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "password_hash": password_hash(password),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": [],
            "limits": {},
        }
        for name, password in passwords.items()
    ]


# --- the broker -------------------------------------------------------------------------


class Broker(Protocol):
    def users(self) -> set[str]: ...

    def import_definitions(self, definitions: Mapping[str, Any]) -> None: ...

    def delete_users(self, names: Iterable[str]) -> None: ...


class ManagementApi:
    """The management HTTP API, as an administrator: `http://admin:secret@host:15672`."""

    def __init__(self, url: str, *, timeout: float = 60) -> None:
        parts = urlsplit(url)
        if not parts.username:
            raise ValueError("management API URL: give the administrator as user:password@")
        self._auth = (parts.username, parts.password or "")
        netloc = f"{parts.hostname}:{parts.port or 15672}"
        self._base = urlunsplit((parts.scheme or "http", netloc, parts.path.rstrip("/"), "", ""))
        self._timeout = timeout

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self._base, auth=self._auth, timeout=self._timeout)

    def users(self) -> set[str]:
        with self._client() as client:
            response = client.get("/api/users")
            response.raise_for_status()
            return {u["name"] for u in response.json()}

    def import_definitions(self, definitions: Mapping[str, Any]) -> None:
        with self._client() as client:
            client.post("/api/definitions", json=dict(definitions)).raise_for_status()

    def delete_users(self, names: Iterable[str]) -> None:
        with self._client() as client:
            for name in names:
                client.delete(f"/api/users/{quote(name, safe='')}")


class Rabbitmqctl:
    """`rabbitmqctl` on the broker's machine (root, or the rabbitmq user)."""

    def __init__(
        self,
        command: str = "rabbitmqctl",
        *,
        node: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._command = [command, *(["-n", node] if node else [])]
        self._env = dict(env) if env is not None else None

    def _run(self, *args: str) -> str:
        done = subprocess.run(  # noqa: S603  # fixed command, our own arguments
            [*self._command, "-q", *args],
            check=False,
            capture_output=True,
            text=True,
            env=self._env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def users(self) -> set[str]:
        rows = json.loads(self._run("list_users", "--formatter", "json") or "[]")
        return {row["user"] for row in rows}

    def import_definitions(self, definitions: Mapping[str, Any]) -> None:
        # password hashes only, never a password, and readable by its owner alone
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
            json.dump(definitions, file)
        try:
            os.chmod(file.name, 0o644)  # the broker's CLI may run as another user
            self._run("import_definitions", file.name)
        finally:
            os.unlink(file.name)

    def delete_users(self, names: Iterable[str]) -> None:
        # one CLI start for all of them: each start of rabbitmqctl takes a second
        quoted = ", ".join(f"<<{json.dumps(n)}/utf8>>" for n in names)
        if quoted:
            self._run(
                "eval",
                f'[rabbit_auth_backend_internal:delete_user(N, <<"orderflow">>) '
                f"|| N <- [{quoted}]], ok.",
            )


# --- provisioning -----------------------------------------------------------------------


@dataclass
class Outcome:
    created: dict[str, str]  # user -> its new password (created or rotated)
    kept: list[str]  # users that existed and keep their password


def provision(
    broker: Broker,
    *,
    vhost: str,
    accounts: Sequence[Account],
    departments: Iterable[str] = (),
    rotate: Iterable[str] = (),
    with_topology: bool = True,
) -> Outcome:
    """Make the vhost, its topology, the users and their permissions exist; idempotent."""
    existing = broker.users()
    rotating = set(rotate)
    created = {
        a.name: new_password() for a in accounts if a.name not in existing or a.name in rotating
    }
    apply_vhost(
        broker,
        vhost=vhost,
        accounts=accounts,
        departments=departments,
        with_topology=with_topology,
        users=created,
    )
    kept = [a.name for a in accounts if a.name not in created]
    return Outcome(created=created, kept=kept)


def apply_vhost(
    broker: Broker,
    *,
    vhost: str,
    accounts: Sequence[Account],
    departments: Iterable[str] = (),
    with_topology: bool = True,
    users: Mapping[str, str] | None = None,
) -> None:
    """One definitions import: the vhost, its topology, the accounts' permissions on it,
    and the `users` given (name -> password; others are not touched)."""
    definitions: dict[str, Any] = (
        topology_definitions(vhost, departments) if with_topology else {"vhosts": [{"name": vhost}]}
    )
    definitions.update(grant_definitions(vhost, accounts))
    definitions["users"] = user_definitions(users or {})
    broker.import_definitions(definitions)


# --- where credentials are written ------------------------------------------------------


def env_name(user: str) -> str:
    """`review-router` -> `ORDERFLOW_BUS_PASSWORD_REVIEW_ROUTER`."""
    return "ORDERFLOW_BUS_PASSWORD_" + "".join(c if c.isalnum() else "_" for c in user).upper()


def _private_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                values[key.strip()] = value.strip()
    return values


def write_env_file(path: Path, passwords: Mapping[str, str]) -> None:
    """Add or replace `ORDERFLOW_BUS_PASSWORD_<USER>=...` lines, mode 600."""
    values = read_env_file(path)
    values.update({env_name(user): pw for user, pw in passwords.items()})
    header = "# RabbitMQ passwords written by `orderflow-bus provision`; keep this file private\n"
    _private_write(path, header + "".join(f"{k}={v}\n" for k, v in sorted(values.items())))


def secret_file(directory: Path, user: str) -> Path:
    """`<directory>/<user>/password`: a directory per user, so each service can be given
    (a volume with) its own password and no other."""
    return directory / user / "password"


def write_secrets_dir(directory: Path, passwords: Mapping[str, str]) -> None:
    for user, password in passwords.items():
        path = secret_file(directory, user)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private_write(path, password)
