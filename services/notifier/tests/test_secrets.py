"""No secret reaches a log line, a delivery record or an API answer.

The four services run as processes, as deployed, with every secret set: the WeCom key,
DingTalk access token and signing secret, Slack token, Feishu and generic webhook
secrets, an SMTP password, and database and broker passwords (some as `<VAR>_FILE`).
Deliveries go through every channel, including retries, a platform error and a refused
target; then every log file, every row of the notifier's schema and the API's answers are
searched for each secret value.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from starlette.responses import JSONResponse, Response

from notifier.contacts import ContactsError
from orderflow_testkit.testing import (
    Infra,
    Servers,
    bearer,
    eventually,
    free_port,
    issue_key_for,
    service_processes,
    start_service,
)

from .conftest import Mail, SmtpServer, changes_requested, send

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]

ALL = ("intake", "review-router", "contracts", "notifier")


def token(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


@pytest.fixture
def secrets() -> dict[str, str]:
    return {
        "wecom_key": token("wecomkey"),
        "dingtalk_token": token("dingtoken"),
        "dingtalk_secret": "SEC" + uuid.uuid4().hex,
        "slack_token": token("slacktoken"),
        "feishu_secret": token("feishusecret"),
        "generic_secret": token("genericsecret"),
        "refused_key": token("refusedkey"),
        "smtp_password": token("smtppass"),
        "database_password": token("pgpass"),
        "broker_password": token("amqppass"),
    }


# --- a broker user with a real password, and an SMTP server that checks its login ---------


def _broker_user(servers: Servers, infra: Infra, user: str, password: str, create: bool) -> None:
    if servers.management_api:
        parts = urlsplit(servers.management_api)
        base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        auth = (parts.username or "guest", parts.password or "guest")
        with httpx.Client(base_url=base, auth=auth, timeout=30) as client:
            if create:
                client.put(
                    f"/api/users/{user}", json={"password": password, "tags": ""}
                ).raise_for_status()
                client.put(
                    f"/api/permissions/{quote(infra.vhost, safe='')}/{user}",
                    json={"configure": ".*", "write": ".*", "read": ".*"},
                ).raise_for_status()
            else:
                client.delete(f"/api/users/{user}")
        return
    if create:
        subprocess.run(["rabbitmqctl", "-q", "add_user", user, password], check=True)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", infra.vhost, user, ".*", ".*", ".*"],
            check=True,
        )
    else:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], check=False)


@pytest.fixture
def broker_url(servers: Servers, infra: Infra, secrets: dict[str, str]) -> Iterator[str]:
    user = f"orderflow-test-{uuid.uuid4().hex[:8]}"
    _broker_user(servers, infra, user, secrets["broker_password"], create=True)
    parts = urlsplit(infra.amqp_url)
    netloc = f"{user}:{secrets['broker_password']}@{parts.hostname}:{parts.port or 5672}"
    try:
        yield urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    finally:
        _broker_user(servers, infra, user, "", create=False)


def database_url(infra: Infra, password: str) -> str:
    # the test server trusts local connections; the password travels in the URL all the same
    parts = urlsplit(infra.database_url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _CheckedLogin:
    def __init__(self, user: str, password: str) -> None:
        self.expected = (user.encode(), password.encode())
        self.logins = 0

    def __call__(self, _: Any, __: Any, ___: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == self.expected
        self.logins += ok
        return AuthResult(success=ok, handled=False)


class _Handler:
    def __init__(self, inbox: list[Mail]) -> None:
        self.inbox = inbox

    async def handle_DATA(self, _: Any, __: Any, envelope: Any) -> str:
        self.inbox.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, 0))
        return "250 OK"


@pytest.fixture
def smtp_with_login(secrets: dict[str, str]) -> Iterator[tuple[SmtpServer, _CheckedLogin]]:
    server = SmtpServer("127.0.0.1", free_port())
    login = _CheckedLogin("orderflow", secrets["smtp_password"])
    controller = Controller(
        _Handler(server.received),
        hostname=server.host,
        port=server.port,
        authenticator=login,
        auth_required=True,
        auth_require_tls=False,  # a local test server without a certificate
    )
    controller.start()
    try:
        yield server, login
    finally:
        controller.stop()


# --- the run -----------------------------------------------------------------------------


def contacts(receiver: Any, refused_port: int, secrets: dict[str, str]) -> dict[str, Any]:
    robots = {
        "crm": {"kind": "webhook", "url": receiver.url("/generic"), "secret_env": "CRM_SECRET"},
        "wecom": {"kind": "wecom", "url": receiver.url("/wecom") + f"?key={secrets['wecom_key']}"},
        "dingtalk": {
            "kind": "dingtalk",
            "url": receiver.url("/dingtalk") + f"?access_token={secrets['dingtalk_token']}",
            "secret_file": "SECRETS_DIR/dingtalk-secret",
        },
        "feishu": {
            "kind": "feishu",
            "url": receiver.url("/feishu"),
            "secret_env": "FEISHU_SECRET",
        },
        "slack": {"kind": "slack", "url_file": "SECRETS_DIR/slack-url"},
        # not allowed (127.0.0.2 is loopback, only 127.0.0.1 is allowed): refused
        "internal": {
            "kind": "wecom",
            "url": f"http://127.0.0.2:{refused_port}/hook?key={secrets['refused_key']}",
        },
    }
    return {
        "people": [
            {
                "id": "zhang.wei",
                "name": "张伟",
                "email": "zhang.wei@example.com",
                "channels": ["inbox", "email", *robots],
            }
        ],
        "webhooks": robots,
    }


def write_secrets(folder: Path, receiver: Any, secrets: dict[str, str]) -> None:
    folder.mkdir()
    files = {
        "dingtalk-secret": secrets["dingtalk_secret"],
        "slack-url": receiver.url(f"/services/T0001/B0001/{secrets['slack_token']}"),
        "smtp-password": secrets["smtp_password"],
    }
    for name, value in files.items():
        (folder / name).write_text(value + "\n", encoding="utf-8")


def answers(receiver: Any) -> None:
    def fails_first(status: int, body: Any) -> Any:
        async def answer(_: Any, seen: int) -> Response:
            if seen == 1:
                # a remote body naming our secrets: it must be neither stored nor logged
                return JSONResponse(body, status_code=status)
            return JSONResponse({"errcode": 0, "errmsg": "ok", "code": 0})

        return answer

    echo = {"echo": "REMOTE-BODY-MARKER"}
    receiver.on("/generic", fails_first(500, echo))
    receiver.on("/wecom", fails_first(503, echo))
    receiver.on("/dingtalk", fails_first(200, {"errcode": 310000, "errmsg": "REMOTE-BODY-MARKER"}))
    receiver.on("/feishu", fails_first(200, {"code": 19021, "msg": "REMOTE-BODY-MARKER"}))


async def every_row(dsn: str, schema: str) -> str:
    """Every row of every table of the schema, as text."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        rows = []
        for t in tables:
            rows += await conn.fetch(f'SELECT t::text AS row FROM "{schema}"."{t["table_name"]}" t')
        return "\n".join(r["row"] for r in rows)
    finally:
        await conn.close()


def hits(text: str, secrets: dict[str, str]) -> list[str]:
    found = [name for name, value in secrets.items() if value in text]
    # the parts of URLs that carry credentials, whatever their value
    found += [p for p in ("access_token=ding", "key=wecom", "key=refused", "sign=") if p in text]
    return found


async def wait_settled(notifier: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    async def settled() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (
            await notifier.get("/api/v1/deliveries", params={"limit": 200})
        ).json()["items"]
        done = [i for i in items if i["status"] in ("delivered", "failed")]
        return items if len(items) >= count and len(done) == len(items) else None

    result: list[dict[str, Any]] = await eventually(settled, timeout=60)
    return result


@pytest.mark.parametrize("log_json", ["false", "true"])
async def test_no_secret_in_any_log_record_or_answer(
    infra: Infra,
    amqp: Any,
    receiver: Any,
    smtp_with_login: tuple[SmtpServer, _CheckedLogin],
    broker_url: str,
    secrets: dict[str, str],
    tmp_path: Path,
    log_json: str,
) -> None:
    smtp, login = smtp_with_login
    answers(receiver)
    secrets_dir = tmp_path / "secrets"
    write_secrets(secrets_dir, receiver, secrets)
    contacts_file = tmp_path / "contacts.json"
    text = json.dumps(contacts(receiver, free_port(), secrets))
    contacts_file.write_text(text.replace("SECRETS_DIR", str(secrets_dir)), encoding="utf-8")
    (secrets_dir / "notifier-database-url").write_text(
        database_url(infra, secrets["database_password"]) + "\n", encoding="utf-8"
    )
    env: dict[str, str] = {
        "NOTIFIER_DATABASE_URL": "",  # given as a file instead
        "NOTIFIER_DATABASE_URL_FILE": str(secrets_dir / "notifier-database-url"),
        "NOTIFIER_CONTACTS_FILE": str(contacts_file),
        "NOTIFIER_OUTBOUND_ALLOW": "127.0.0.1",
        "NOTIFIER_SMTP_HOST": smtp.host,
        "NOTIFIER_SMTP_PORT": str(smtp.port),
        "NOTIFIER_SMTP_SECURITY": "none",
        "NOTIFIER_SMTP_USERNAME": "orderflow",
        "NOTIFIER_SMTP_PASSWORD_FILE": str(secrets_dir / "smtp-password"),
        "NOTIFIER_MAIL_FROM": "orderflow@example.com",
        "NOTIFIER_DELIVERY_POLL_INTERVAL": "0.1",
        "NOTIFIER_DELIVERY_BACKOFF_BASE": "0.05",
        "NOTIFIER_DELIVERY_BACKOFF_MAX": "0.2",
        "CRM_SECRET": secrets["generic_secret"],
        "FEISHU_SECRET": secrets["feishu_secret"],
    }
    for prefix in ("INTAKE", "REVIEW_ROUTER", "CONTRACTS", "NOTIFIER"):
        env[f"{prefix}_AMQP_URL"] = broker_url
        env[f"{prefix}_LOG_JSON"] = log_json
        # every line a library might write, request URLs included
        env[f"{prefix}_LOG_LEVEL"] = "DEBUG"
        if prefix != "NOTIFIER":
            env[f"{prefix}_DATABASE_URL"] = database_url(infra, secrets["database_password"])
    # the whole system with console logs; the notifier alone with JSON lines
    names = (
        ("intake", "review-router", "contracts", "notifier")
        if log_json == "false"
        else ("notifier",)
    )
    async with service_processes(infra, tmp_path, names=names, **env) as services:
        ops = bearer(await issue_key_for(infra.database_url, ["ops"]))
        reader = bearer(await issue_key_for(infra.database_url, ["notifications:read"]))
        notifier = httpx.AsyncClient(base_url=services["notifier"].url, timeout=10, headers=ops)
        try:
            event = changes_requested()
            await send(amqp, event)
            # inbox, email and six robots
            items = await wait_settled(notifier, 8)
            by_channel = {i["channel"]: i for i in items}
            for channel in (
                "email",
                "webhook:crm",
                "webhook:wecom",
                "webhook:dingtalk",
                "webhook:feishu",
                "webhook:slack",
            ):
                assert by_channel[channel]["status"] == "delivered", by_channel[channel]
            for channel in ("webhook:crm", "webhook:wecom", "webhook:dingtalk", "webhook:feishu"):
                assert by_channel[channel]["attempts"] == 2
            refused = by_channel["webhook:internal"]
            assert refused["status"] == "failed"
            assert refused["last_error"].startswith("refused: 127.0.0.2 is a loopback address")
            assert login.logins >= 1 and len(smtp.received) == 1
            assert len(receiver.at(f"/services/T0001/B0001/{secrets['slack_token']}")) == 1

            answers_text = "\n".join(
                [
                    (await notifier.get("/api/v1/deliveries", params={"limit": 200})).text,
                    *[(await notifier.get(f"/api/v1/deliveries/{i['id']}")).text for i in items],
                    (await notifier.get("/api/v1/inbox/zhang.wei", headers=reader)).text,
                    (await notifier.get("/health/ready")).text,
                    (await notifier.get("/ops/dead-letters")).text,
                    (await notifier.post(f"/api/v1/deliveries/{refused['id']}/retry")).text,
                ]
            )
            rows = await every_row(infra.database_url, "notifier")
        finally:
            await notifier.aclose()
    logs = {s.name: s.log_path.read_text(errors="replace") for s in services.values()}

    assert "REMOTE-BODY-MARKER" not in answers_text + rows
    assert hits(answers_text, secrets) == []
    assert hits(rows, secrets) == []
    for name, text in logs.items():
        assert text.strip(), f"{name} wrote no log"
        assert hits(text, secrets) == [], f"{name}'s log shows a secret"
        assert "REMOTE-BODY-MARKER" not in text
    notifier_log = logs["notifier"]
    # the lines that once carried the URLs are there, masked
    assert "delivery will be retried" in notifier_log and "delivery failed" in notifier_log
    # masking names no more than the secrets: the robots' names still read
    assert "webhook:feishu" in notifier_log and "webhook:slack" in notifier_log
    if log_json == "true":
        lines = [json.loads(line) for line in notifier_log.splitlines() if line.startswith("{")]
        assert any(line.get("logger", "").startswith("uvicorn") for line in lines)


# --- production refuses development secrets, naming the setting and never the value -------


async def test_production_refuses_to_start_with_the_development_broker_login(
    infra: Infra, tmp_path: Path
) -> None:
    dev = "amqp://guest:guest@127.0.0.1:5672/" + quote(infra.vhost, safe="")
    service = start_service(
        infra,
        "notifier",
        tmp_path,
        ORDERFLOW_ENVIRONMENT="production",
        NOTIFIER_AMQP_URL=dev,
        NOTIFIER_SMTP_PASSWORD="hunter2-short",
    )
    code = await asyncio.to_thread(service.process.wait, 60)
    log = service.log_path.read_text(errors="replace")
    assert code != 0
    assert "NOTIFIER_AMQP_URL uses the development broker login" in log
    assert "NOTIFIER_SMTP_PASSWORD is shorter than 16 characters" in log
    assert "guest:guest" not in log and "hunter2-short" not in log


def test_production_refuses_the_example_contacts_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from notifier.main import create_app
    from notifier.settings import Settings

    example = Path(__file__).resolve().parents[1] / "contacts.example.toml"
    for name in ("DINGTALK_SALES_SECRET", "FEISHU_FINANCE_SECRET", "ERP_WEBHOOK_SECRET"):
        monkeypatch.setenv(name, "s3cret")
    strong = "Zq8-strong-password-2026"
    settings = Settings(
        environment="production",
        database_url=f"postgresql://notifier:{strong}@db/orderflow",
        amqp_url=f"amqp://notifier:{strong}@mq/orderflow",
        contacts_file=example,
    )
    with pytest.raises(ContactsError) as caught:
        create_app(settings)
    text = str(caught.value)
    assert "webhooks.sales-dingtalk.url is an example value" in text
    assert "webhooks.erp.secret is shorter than 16 characters" in text
    assert "s3cret" not in text and "REPLACE_ME" not in text
    # in development the example starts
    create_app(settings.model_copy(update={"environment": "development"}))
