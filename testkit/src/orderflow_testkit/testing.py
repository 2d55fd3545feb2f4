"""Pytest fixtures for tests against the real RabbitMQ and PostgreSQL.

Where they come from, in order: `ORDERFLOW_TEST_AMQP_URL` / `ORDERFLOW_TEST_DATABASE_URL`
(and `ORDERFLOW_TEST_RABBITMQ_API` for the management API), else the local services on
127.0.0.1, else containers started with testcontainers (a laptop with Docker).

Every test gets its own vhost and its own database, removed afterwards, so two runs (or
two tests) never see each other's messages or rows. The vhost gets the whole topology and,
for the least-privilege users this run made (`t<tag>-intake`, `t<tag>-dept-finance`, ...:
users are global in RabbitMQ and others run tests on the same broker), the permissions of
`busaccess`; the services run as those users, and `publish()` sends a message as the user
the contract names as its producer. The fixture's own connection (`amqp`) is the broker's
test administrator, for looking into queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import asyncpg
import httpx
import pytest

from orderflow import busaccess, jsonpointer, provisioning, times, topology
from orderflow.auth import identity
from orderflow.auth import store as auth_store
from orderflow.messages import ReviewRequested, VerdictGiven


@dataclass(frozen=True)
class Servers:
    amqp_url: str  # without a vhost path
    database_url: str  # an admin database to create test databases from
    management_api: str | None  # http://user:pass@host:15672


@dataclass(frozen=True)
class BusUser:
    name: str
    password: str


@dataclass(frozen=True)
class Infra:
    """One test's own vhost and database, and the run's bus users (role -> user: each
    service's name, `dept-<department>`, `submitter`, `listener`)."""

    amqp_url: str  # the test administrator's
    database_url: str
    vhost: str
    database: str
    users: Mapping[str, BusUser] = field(default_factory=dict)

    def user(self, role: str) -> str:
        return self.users[role].name if role in self.users else role

    def url_as(self, role: str) -> str:
        """The test vhost's AMQP URL as one of the run's users (a service, `dept-finance`,
        `submitter`, `listener`)."""
        if role not in self.users:
            raise KeyError(f"no bus user {role!r} in this run: {sorted(self.users)}")
        user = self.users[role]
        parts = urlsplit(self.amqp_url)
        netloc = f"{quote(user.name, safe='')}:{quote(user.password, safe='')}@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def bus_env(self) -> dict[str, str]:
        """The settings that name the run's users to the services."""
        if not self.users:
            return {}
        return {
            "ORDERFLOW_BUS_USERS": json.dumps({s: self.user(s) for s in busaccess.SERVICES}),
            "REVIEW_ROUTER_VERDICT_USER_PATTERN": self.user("dept-") + "{department}",
            "INTAKE_SUBMITTER_USERS": self.user("submitter"),
        }


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    amqp = os.environ.get("ORDERFLOW_TEST_AMQP_URL")
    pg = os.environ.get("ORDERFLOW_TEST_DATABASE_URL")
    api = os.environ.get("ORDERFLOW_TEST_RABBITMQ_API")
    if amqp and pg:
        yield Servers(amqp, pg, api)
        return
    if _reachable("127.0.0.1", 5672) and _reachable("127.0.0.1", 5432):
        local_api = "http://guest:guest@127.0.0.1:15672" if _reachable("127.0.0.1", 15672) else None
        yield Servers(
            "amqp://guest:guest@127.0.0.1:5672",
            "postgresql://postgres@127.0.0.1:5432/postgres",
            api or local_api,
        )
        return
    # a developer laptop with Docker and no local services
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with (
        RabbitMqContainer("rabbitmq:3.13-management").with_exposed_ports(15672) as rabbit,
        PostgresContainer("postgres:16", driver=None) as postgres,
    ):
        host = rabbit.get_container_host_ip()
        yield Servers(
            f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}",
            postgres.get_connection_url(),
            f"http://guest:guest@{host}:{rabbit.get_exposed_port(15672)}",
        )


def _vhost_via_api(api: str, vhost: str, user: str, *, create: bool) -> None:
    parts = urlsplit(api)
    auth = (parts.username or "guest", parts.password or "guest")
    base = urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port or 15672}", "", "", ""))
    name = quote(vhost, safe="")
    with httpx.Client(base_url=base, auth=auth, timeout=30) as client:
        if create:
            client.put(f"/api/vhosts/{name}").raise_for_status()
            client.put(
                f"/api/permissions/{name}/{quote(user, safe='')}",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            ).raise_for_status()
        else:
            client.delete(f"/api/vhosts/{name}")


def _vhost_via_ctl(vhost: str, user: str, *, create: bool) -> None:
    if create:
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
    else:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True
        )


def manage_vhost(servers: Servers, vhost: str, *, create: bool) -> None:
    user = urlsplit(servers.amqp_url).username or "guest"
    if servers.management_api:
        _vhost_via_api(servers.management_api, vhost, user, create=create)
    elif shutil.which("rabbitmqctl"):
        _vhost_via_ctl(vhost, user, create=create)
    else:
        raise RuntimeError(
            "cannot create a test vhost: set ORDERFLOW_TEST_RABBITMQ_API to the management API "
            "or install rabbitmqctl"
        )


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def admin_broker(servers: Servers) -> provisioning.Broker:
    if servers.management_api:
        return provisioning.ManagementApi(servers.management_api)
    if shutil.which("rabbitmqctl"):
        return provisioning.Rabbitmqctl()
    raise RuntimeError(
        "cannot create the test's bus users: set ORDERFLOW_TEST_RABBITMQ_API to the management "
        "API or install rabbitmqctl"
    )


#: The departments each run has a user for (the process's own).
TEST_DEPARTMENTS = topology.DEFAULT_DEPARTMENTS


@dataclass(frozen=True)
class RunUsers:
    """This test run's bus users: role -> user, and their accounts (permissions)."""

    users: dict[str, BusUser]
    accounts: list[provisioning.Account]


def _run_accounts(prefix: str) -> tuple[dict[str, str], list[provisioning.Account]]:
    roles = {s: f"{prefix}{s}" for s in busaccess.SERVICES}
    roles.update({f"dept-{d}": f"{prefix}dept-{d}" for d in TEST_DEPARTMENTS})
    roles["dept-"] = f"{prefix}dept-"  # the pattern's stem, not a user
    roles["submitter"] = f"{prefix}submitter"
    roles["listener"] = f"{prefix}listener"
    accounts = provisioning.service_accounts({s: roles[s] for s in busaccess.SERVICES})
    accounts += [
        provisioning.department_account(d, name=roles[f"dept-{d}"]) for d in TEST_DEPARTMENTS
    ]
    accounts.append(provisioning.submitter_account(roles["submitter"]))
    accounts.append(provisioning.listener_account(roles["listener"], busaccess.EVENT_PRODUCERS))
    return roles, accounts


def create_run_users(broker: provisioning.Broker, prefix: str) -> RunUsers:
    """Every kind of bus user, named `<prefix><role>`, with new passwords."""
    roles, accounts = _run_accounts(prefix)
    passwords = {a.name: provisioning.new_password() for a in accounts}
    broker.import_definitions({"users": provisioning.user_definitions(passwords)})
    users = {role: BusUser(name, passwords.get(name, "")) for role, name in roles.items()}
    return RunUsers(users, accounts)


def provisioned(
    broker: provisioning.Broker, *, amqp_url: str, database_url: str, vhost: str, database: str
) -> Infra:
    """A broker of the test's own (a local node): its users, the topology and permissions
    on `vhost`, as the provisioning step of a deployment makes them."""
    run = create_run_users(broker, "")
    provisioning.apply_vhost(broker, vhost=vhost, accounts=run.accounts)
    made = Infra(amqp_url, database_url, vhost, database, users=run.users)
    _RUNNING[vhost] = made
    return made


@pytest.fixture(scope="session")
def bus_users(servers: Servers) -> Iterator[RunUsers]:
    """Users of this run only (never a shared user whose password others rely on), deleted
    at the end; each test's vhost grants them their permissions."""
    broker = admin_broker(servers)
    run = create_run_users(broker, f"t{uuid.uuid4().hex[:10]}-")
    try:
        yield run
    finally:
        broker.delete_users(a.name for a in run.accounts)


#: vhost -> its test's infra, so `publish()` can send as the producer's user
_RUNNING: dict[str, Infra] = {}


@pytest.fixture
async def infra(servers: Servers, bus_users: RunUsers) -> AsyncIterator[Infra]:
    tag = uuid.uuid4().hex[:12]
    vhost = f"orderflow-test-{tag}"
    database = f"orderflow_test_{tag}"
    await asyncio.to_thread(manage_vhost, servers, vhost, create=True)
    # the provisioning step of a deployment: topology, and the run's users' permissions
    await asyncio.to_thread(
        provisioning.apply_vhost, admin_broker(servers), vhost=vhost, accounts=bus_users.accounts
    )
    await _create_database(servers.database_url, database)
    made = Infra(
        amqp_url=_with_path(servers.amqp_url, "/" + quote(vhost, safe="")),
        database_url=_with_path(servers.database_url, "/" + database),
        vhost=vhost,
        database=database,
        users=bus_users.users,
    )
    # services built in this process read who is who from the environment
    saved = {k: os.environ.get(k) for k in made.bus_env()}
    os.environ.update(made.bus_env())
    _RUNNING[vhost] = made
    try:
        yield made
    finally:
        _RUNNING.pop(vhost, None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        await asyncio.to_thread(manage_vhost, servers, vhost, create=False)
        await _drop_database(servers.database_url, database)


@pytest.fixture
async def amqp(infra: Infra) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(infra.amqp_url)
    try:
        yield connection
    finally:
        await connection.close()


async def get_messages(
    connection: aio_pika.abc.AbstractConnection,
    queue: str,
    count: int,
    *,
    timeout: float = 15.0,
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take `count` messages from a queue (acknowledging them), waiting up to `timeout`."""
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with connection.channel() as channel:
        q = await channel.get_queue(queue, ensure=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < count and loop.time() < deadline:
            msg = await q.get(fail=False, no_ack=True)
            if msg is None:
                await asyncio.sleep(0.05)
                continue
            got.append(msg)
    if len(got) < count:
        raise AssertionError(
            f"expected {count} message(s) on {queue}, got {len(got)} in {timeout}s"
        )
    return got


async def queue_depth(connection: aio_pika.abc.AbstractConnection, queue: str) -> int:
    async with connection.channel() as channel:
        q = await channel.declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)


async def eventually(check: Any, *, timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Await `check()` until it returns a truthy value (or raise its last AssertionError)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: BaseException | None = None
    while loop.time() < deadline:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    if last is not None:
        raise last
    raise AssertionError(f"condition not met within {timeout}s")


#: The type of the marker `nothing_more` sends; no service handles it.
MARKER_TYPE = "test.marker"


async def _pending(connection: aio_pika.abc.AbstractConnection, outboxes: Sequence[Any]) -> int:
    """Unsent rows in the outboxes: a pool (its own schema), or a schema's name in the test's
    database."""
    pending = 0
    for outbox in outboxes:
        if not isinstance(outbox, str):
            pending += int(
                await outbox.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            )
            continue
        infra = _infra_of(connection)
        assert infra is not None, "a schema's outbox needs the test's own vhost"
        conn = await asyncpg.connect(infra.database_url)
        try:
            table = f'"{outbox}".outbox'
            pending += int(
                await conn.fetchval(f"SELECT count(*) FROM {table} WHERE sent_at IS NULL")
            )
        finally:
            await conn.close()
    return pending


async def nothing_more(
    connection: aio_pika.abc.AbstractConnection,
    queue: str,
    *,
    outboxes: Sequence[Any] = (),
    inputs: Sequence[str] = (),
    through: str | None = None,
    received: Any = None,
    timeout: float = 15.0,
) -> None:
    """The positive signal before asserting that nothing (more) came to `queue`, in place of
    a fixed sleep that passes whenever the relay is slow.

    First the services are drained: their `inputs` queues hold no ready message and their
    `outboxes` (pools, or schema names) no unsent row, so what they committed is confirmed by
    the broker and sits in `queue` if it was routed there. Then a marker published to `queue`
    after that must arrive: read from the queue, anything before it fails the test; or, for a
    queue the test consumes itself, `received()` (what its consumer collected) must come to
    hold it, and the caller asserts on what else is there. A marker sent `through` a
    consumer's input queue instead comes out in `queue`, its dead-letter queue (no consumer
    takes the marker's type), once the consumer has handled every message before it."""

    async def drained() -> bool:
        for name in inputs:
            if await queue_depth(connection, name):
                return False
        return await _pending(connection, outboxes) == 0

    await eventually(drained, timeout=timeout)
    marker = f"marker-{uuid.uuid4()}"
    async with connection.channel(publisher_confirms=True) as channel:
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"marker": true}', message_id=marker, type=MARKER_TYPE),
            routing_key=through or queue,
            mandatory=True,
        )
    if received is not None:
        await eventually(lambda: marker in [m.message_id for m in received()], timeout=timeout)
        return
    before: list[str] = []
    while True:
        [msg] = await get_messages(connection, queue, 1, timeout=timeout)
        if msg.message_id == marker:
            break
        before.append(f"{msg.type} {msg.body[:200]!r}")
    assert not before, f"{len(before)} message(s) came to {queue} before the marker: {before}"


async def publish(
    connection: aio_pika.abc.AbstractConnection,
    *,
    exchange: str,
    routing_key: str,
    body: bytes,
    message_id: str | None = None,
    message_type: str | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    user_id: str | None = None,
    as_producer: bool = True,
) -> str:
    """Publish as an outside system would (confirmed, persistent, mandatory).

    Without a `user_id`, the message goes out as the run's user that the contract names as
    the producer of `message_type` (an event's service, `submitter` for `order.submit`, the
    department of a verdict's routing key), with that `user_id`; `as_producer=False` sends
    it on `connection` as it is (to see a message from the wrong party refused)."""
    mid = message_id or str(uuid.uuid4())
    role = _producer_role(message_type, routing_key) if as_producer and not user_id else None
    infra = _infra_of(connection)
    if role is not None and infra is not None and role in infra.users:
        async with await aio_pika.connect(infra.url_as(role)) as as_role:
            return await publish(
                as_role,
                exchange=exchange,
                routing_key=routing_key,
                body=body,
                message_id=mid,
                message_type=message_type,
                correlation_id=correlation_id,
                reply_to=reply_to,
                user_id=infra.user(role),
            )
    async with connection.channel(publisher_confirms=True, on_return_raises=True) as channel:
        ex = await channel.get_exchange(exchange) if exchange else channel.default_exchange
        await ex.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=mid,
                type=message_type,
                correlation_id=correlation_id,
                reply_to=reply_to,
                user_id=user_id,
            ),
            routing_key=routing_key,
            mandatory=True,
        )
    return mid


#: Every role and scope but the people's own: what the tests' default client may do.
ALL_SCOPES = (identity.ADMIN, *identity.SYSTEM_SCOPES)


async def issue_key(pool: Any, scopes: Sequence[str] = ALL_SCOPES, *, name: str = "") -> str:
    """A fresh API key with `scopes` in the store that `pool` reaches (migrated if needed)."""
    await auth_store.prepare(pool)
    _, token = await auth_store.create_api_key(
        pool, name=name or f"test-{uuid.uuid4().hex[:10]}", scopes=scopes, created_by="tests"
    )
    return token


async def issue_key_for(database_url: str, scopes: Sequence[str] = ALL_SCOPES) -> str:
    """`issue_key` on a database of its own URL (services running as processes)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        return await issue_key(pool, scopes)
    finally:
        await pool.close()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def person(
    pool: Any, username: str, roles: Sequence[str], team: Sequence[str] = ()
) -> dict[str, str]:
    """A local account with a fresh session: the headers that sign in as them."""
    await auth_store.prepare(pool)
    await auth_store.upsert_account(
        pool, username=username, display_name=username, roles=roles, team=team
    )
    token, _ = await auth_store.create_session(
        pool, username=username, ttl=timedelta(hours=1), source=None
    )
    return bearer(token)


def _producer_role(message_type: str | None, routing_key: str) -> str | None:
    kind = message_type or ""
    if kind in busaccess.EVENT_PRODUCERS:
        return busaccess.EVENT_PRODUCERS[kind]
    if kind == busaccess.SUBMIT_TYPE:
        return "submitter"
    if kind in busaccess.DEPARTMENT_TYPES:
        return f"dept-{routing_key}"
    return None


def _infra_of(connection: aio_pika.abc.AbstractConnection) -> Infra | None:
    url = getattr(connection, "url", None)
    path = str(getattr(url, "path", "") or "")
    return _RUNNING.get(path[1:] or "/")


@contextlib.asynccontextmanager
async def running(
    app: Any, *, scopes: Sequence[str] | None = ALL_SCOPES
) -> AsyncIterator[httpx.AsyncClient]:
    """Run a service app in this process (its lifespan: pool, broker, relay) with a client
    signed in with an API key of `scopes` (None: an anonymous client)."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        if scopes is not None:
            client.headers.update(bearer(await issue_key(app.state.runtime.pool, scopes)))
        yield client


SERVICE_MODULES = {
    "intake": ("intake.main", "INTAKE_"),
    "review-router": ("review_router.main", "REVIEW_ROUTER_"),
    "contracts": ("contracts.main", "CONTRACTS_"),
    "notifier": ("notifier.main", "NOTIFIER_"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """One service running as its own OS process, as in production."""

    name: str
    port: int
    log_path: Any
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        try:
            text: str = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self, timeout: float = 30) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def service_env(infra: Infra, name: str, port: int, **extra: str) -> dict[str, str]:
    _, prefix = SERVICE_MODULES[name]
    env = dict(os.environ)
    env.update(infra.bus_env())
    env.update(
        {
            f"{prefix}DATABASE_URL": infra.database_url,
            # its own least-privilege user when the run has one
            f"{prefix}AMQP_URL": infra.url_as(name) if name in infra.users else infra.amqp_url,
            f"{prefix}HTTP_PORT": str(port),
            f"{prefix}LOG_JSON": "false",
            f"{prefix}GRACEFUL_TIMEOUT": "10",
            "CONTRACTS_SELLER_NAME": env.get("CONTRACTS_SELLER_NAME", "Orderflow Test Seller Ltd."),
        }
    )
    env.update(extra)
    return env


def start_service(infra: Infra, name: str, log_dir: Any, **extra: str) -> ServiceProcess:
    import sys

    module, _ = SERVICE_MODULES[name]
    port = free_port()
    log_path = log_dir / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=service_env(infra, name, port, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess(name, port, log_path, process)


async def wait_ready(service: ServiceProcess, *, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        while loop.time() < deadline:
            if service.process.poll() is not None:
                raise AssertionError(
                    f"{service.name} exited with {service.process.returncode}:\n"
                    f"{service.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/health/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{service.name} not ready in {timeout}s:\n{service.log_tail()}")


@contextlib.asynccontextmanager
async def service_processes(
    infra: Infra, log_dir: Any, names: Any = tuple(SERVICE_MODULES), **extra: str
) -> AsyncIterator[dict[str, ServiceProcess]]:
    """Start the named services as separate processes and wait until each is ready."""
    started = {name: start_service(infra, name, log_dir, **extra) for name in names}
    try:
        await asyncio.gather(*(wait_ready(s) for s in started.values()))
        yield started
    finally:
        for s in started.values():
            await asyncio.to_thread(s.terminate)


# --- an order's journey, as a salesperson and the departments drive it in tests ----------

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "docs" / "examples"


#: A requirement specification as a salesperson uploads it (a text file will do).
SPEC_FILE = ("规格书.txt", "法兰密封面按客户图纸加工，粗糙度 Ra1.6".encode(), "text/plain")


async def submit_with_spec(client: httpx.AsyncClient, document: dict[str, Any]) -> dict[str, Any]:
    """Submit an order with technical requirements the only way it passes the self-check:
    saved as a draft, the customer's requirement specification uploaded (kind
    `requirements_spec`), then submitted. The order as submitted."""
    created = await client.post("/api/v1/orders", json=document)
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    spec = await client.post(
        f"/api/v1/orders/{order_id}/attachments",
        data={"kind": "requirements_spec"},
        files={"file": SPEC_FILE},
    )
    assert spec.status_code == 201, spec.text
    submitted = await client.post(f"/api/v1/orders/{order_id}/submit")
    assert submitted.status_code == 200, submitted.text
    body: dict[str, Any] = submitted.json()
    return body


def example_order(name: str, *, days_ahead: int = 60) -> dict[str, Any]:
    """An example order (docs/examples) with its dates moved into the future, so the
    self-check passes on whatever day the test runs."""
    order: dict[str, Any] = json.loads((EXAMPLES_DIR / f"{name}.json").read_text())
    start = date.today() + timedelta(days=days_ahead)
    order["delivery"]["date"] = start.isoformat()
    for line in order["lines"]:
        if "service" in line:
            line["service"]["period_start"] = start.isoformat()
            line["service"]["period_end"] = (start + timedelta(days=364)).isoformat()
    return order


async def take_review(
    connection: aio_pika.abc.AbstractConnection, department: str, *, timeout: float = 30
) -> ReviewRequested:
    [msg] = await get_messages(connection, f"review.{department}", 1, timeout=timeout)
    assert msg.type == "review.requested", msg.type
    return ReviewRequested.model_validate_json(msg.body)


async def answer_review(
    connection: aio_pika.abc.AbstractConnection,
    review: ReviewRequested,
    decision: str = "approve",
    annotations: list[dict[str, str]] | None = None,
    *,
    user_id: str | None = None,
) -> str:
    """Publish a department's verdict on a review request; the message id. It goes out as
    the run's user of the department (or, for a department without one, the connection's
    user) with that `user_id`, unless told otherwise: the router accepts verdicts only from
    users that may speak for the department."""
    infra = _infra_of(connection)
    if user_id is None and (infra is None or f"dept-{review.department}" not in infra.users):
        # a department of no user of this run's: the connection's (an acting user)
        url = getattr(connection, "url", None)
        user_id = getattr(url, "user", None)
    verdict = VerdictGiven.model_validate(
        {
            "review_id": review.review_id,
            "order_id": review.order_id,
            "revision": review.revision,
            "department": review.department,
            "decision": decision,
            "reviewer": {"id": f"{review.department}.reviewer", "name": "Reviewer"},
            "comment": "ok" if decision == "approve" else "please revise",
            "annotations": annotations or [],
        }
    )
    return await publish(
        connection,
        exchange="orderflow.verdicts",
        routing_key=review.department,
        body=verdict.model_dump_json().encode(),
        message_type=VerdictGiven.message_type,
        correlation_id=str(review.order_id),
        user_id=user_id,
    )


async def wait_status(
    client: httpx.AsyncClient,
    order_id: str,
    wanted: str,
    *,
    timeout: float = 30,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll intake until the order reaches `wanted`; its last view otherwise, in the error."""

    async def check() -> dict[str, Any] | None:
        got = await client.get(f"/api/v1/orders/{order_id}", headers=headers)
        body: dict[str, Any] = got.json()
        return body if body.get("status") == wanted else None

    try:
        result: dict[str, Any] = await eventually(check, timeout=timeout)
    except AssertionError:
        body = (await client.get(f"/api/v1/orders/{order_id}", headers=headers)).json()
        raise AssertionError(f"order {order_id} never reached {wanted}: {body}") from None
    return result


# --- how times are written ---------------------------------------------------------------

# anything that reads as a point in time (a date with a time of day), however it is written;
# a date alone (a delivery date) is not a time
_LOOKS_LIKE_A_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def times_in(payload: Any, pointer: str = "") -> list[tuple[str, str]]:
    """Every string of a JSON document (a message body, a response) that is a point in time,
    with its JSON pointer, whatever its form: keys are not trusted to say which ones are."""
    if isinstance(payload, str):
        return [(pointer or "/", payload)] if _LOOKS_LIKE_A_TIME.match(payload) else []
    if isinstance(payload, dict):
        items = [(jsonpointer.escape(k), v) for k, v in payload.items()]
    elif isinstance(payload, list):
        items = [(str(i), v) for i, v in enumerate(payload)]
    else:
        return []
    found: list[tuple[str, str]] = []
    for key, value in items:
        found += times_in(value, f"{pointer}/{key}")
    return found


def badly_written_times(payload: Any) -> list[tuple[str, str]]:
    """The times of a JSON document not written the one way (`times.PATTERN`: RFC 3339, UTC
    `Z`, milliseconds); empty when all are."""
    return [(p, v) for p, v in times_in(payload) if not re.fullmatch(times.PATTERN, v)]
