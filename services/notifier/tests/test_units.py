"""Pure parts, without broker or database: the contacts file, quiet hours, back-off, routing,
templates and the email's encoding."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, time, timedelta, timezone
from email import message_from_bytes
from email.policy import SMTP
from email.policy import default as default_policy
from pathlib import Path

import pytest

from notifier import contacts, domain
from notifier.adapters.mail import build_message
from notifier.adapters.outgoing import Outgoing
from notifier.adapters.templates import TemplateProblem, Templates
from notifier.main import create_app
from notifier.settings import Settings

SHANGHAI = timezone(timedelta(hours=8))


def person(**kw: object) -> domain.Person:
    values: dict[str, object] = {
        "id": "zhang.wei",
        "name": "张伟",
        "email": "zhang.wei@example.com",
        "language": "zh",
        "channels": ("inbox", "email"),
        "tz": SHANGHAI,
        "quiet_hours": None,
    }
    values.update(kw)
    return domain.Person(**values)  # type: ignore[arg-type]


# --- the contacts file ---------------------------------------------------------------------

GOOD = """
[defaults]
language = "en"
timezone = "Asia/Shanghai"

[[people]]
id = "zhang.wei"
name = "张伟"
email = "zhang.wei@example.com"
language = "zh"
channels = ["inbox", "email", "sales-ding"]
quiet_hours = { start = "22:00", end = "08:00" }

[[people]]
id = "wang.fang"

[webhooks.sales-ding]
kind = "dingtalk"
url = "https://oapi.dingtalk.com/robot/send?access_token=abc"
secret_env = "TEST_DING_SECRET"
rate_limit = { limit = 10, window = 60 }

[departments.finance]
contacts = ["wang.fang"]
escalation = ["zhang.wei"]
"""


def test_a_contacts_file_in_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DING_SECRET", "SECabc")
    directory = contacts.parse(GOOD, suffix=".toml")
    zhang = directory.person("zhang.wei")
    assert zhang.language == "zh" and zhang.channels == ("inbox", "email", "sales-ding")
    assert zhang.quiet_hours == domain.QuietHours(time(22), time(8))
    assert directory.person("wang.fang").language == "en"  # the file's default
    stranger = directory.person("chen.jing")
    assert stranger.channels == ("inbox", "email") and stranger.email is None
    assert directory.contacts("finance") == ["wang.fang"]
    assert directory.escalation("finance") == ["zhang.wei"]
    assert directory.contacts("technical") == []
    hook = directory.webhooks["sales-ding"]
    assert hook.signing_secret() == "SECabc"
    assert hook.rate_limit is not None and hook.rate_limit.limit == 10


def test_every_problem_of_a_contacts_file_is_named_at_once() -> None:
    bad = """
    {"people": [{"id": "a", "language": "fr", "channels": ["inbox", "pager"]},
                {"id": "a", "timezone": "Mars/Olympus"}],
     "webhooks": {"crm": {"kind": "webhook", "url": "https://crm.example/hook"}},
     "departments": {"finance": {"contacts": ["nobody"]}}}
    """
    with pytest.raises(contacts.ContactsError) as caught:
        contacts.parse(bad, suffix=".json", source="contacts.json")
    message = str(caught.value)
    assert message.startswith("contacts.json: ")
    assert "people[0].language" in message
    assert "people[1]" in message and "Mars/Olympus" in message
    assert "webhooks.crm" in message and "needs a secret" in message


def test_references_to_unknown_people_and_robots_are_refused() -> None:
    bad = """
    {"people": [{"id": "a", "channels": ["inbox", "pager"]}, {"id": "a"}],
     "departments": {"finance": {"contacts": ["nobody"]}}}
    """
    with pytest.raises(contacts.ContactsError) as caught:
        contacts.parse(bad, suffix=".json")
    message = str(caught.value)
    assert "'a' is listed more than once" in message
    assert "people[0].channels: 'pager' is neither inbox, email nor a robot" in message
    assert "departments.finance.contacts: 'nobody' is not one of the people" in message


def test_the_service_does_not_start_with_a_broken_contacts_file(tmp_path: Path) -> None:
    path = tmp_path / "contacts.toml"
    path.write_text("[[people]]\nid = \n", encoding="utf-8")
    settings = Settings(
        database_url="postgresql://u@127.0.0.1/db",
        amqp_url="amqp://127.0.0.1",
        contacts_file=path,
    )
    with pytest.raises(contacts.ContactsError, match=r"contacts\.toml: not valid TOML"):
        create_app(settings)
    with pytest.raises(contacts.ContactsError, match=r"must be \.toml or \.json"):
        contacts.load(tmp_path / "contacts.yaml")
    with pytest.raises(contacts.ContactsError, match="cannot read"):
        contacts.load(tmp_path / "missing.json")


def test_email_needs_a_sender_address() -> None:
    with pytest.raises(ValueError, match="NOTIFIER_MAIL_FROM is required"):
        Settings(database_url="postgresql://u@h/db", amqp_url="amqp://h", smtp_host="mail")


def test_time_zones_by_name_or_offset() -> None:
    assert contacts.resolve_timezone("+08:00").utcoffset(None) == timedelta(hours=8)
    assert contacts.resolve_timezone("UTC-5").utcoffset(None) == timedelta(hours=-5)
    assert contacts.resolve_timezone("UTC") is UTC
    with pytest.raises(ValueError, match="unknown time zone"):
        contacts.resolve_timezone("Nowhere/City")


# --- quiet hours, back-off, routing --------------------------------------------------------


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 5, 9, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


def test_quiet_hours_across_midnight() -> None:
    night = person(quiet_hours=domain.QuietHours(time(22), time(8)))
    assert domain.quiet_until(at(21, 59), night) is None
    next_morning = datetime(2026, 5, 10, 8, 0, tzinfo=SHANGHAI)
    assert domain.quiet_until(at(22, 0), night) == next_morning
    assert domain.quiet_until(at(23, 30), night) == next_morning
    assert domain.quiet_until(at(3, 0), night) == datetime(2026, 5, 9, 8, 0, tzinfo=SHANGHAI)
    assert domain.quiet_until(at(8, 0), night) is None


def test_quiet_hours_within_a_day() -> None:
    lunch = person(quiet_hours=domain.QuietHours(time(12), time(13, 30)))
    assert domain.quiet_until(at(12, 15), lunch) == datetime(2026, 5, 9, 13, 30, tzinfo=SHANGHAI)
    assert domain.quiet_until(at(13, 30), lunch) is None
    assert domain.quiet_until(at(12, 15), person()) is None


def test_back_off_grows_with_jitter_and_a_ceiling() -> None:
    rng = random.Random(7)
    delays = [domain.retry_delay(n, base=10, cap=300, rng=rng) for n in range(1, 9)]
    for n, d in enumerate(delays, start=1):
        ceiling = min(300, 10 * 2 ** (n - 1))
        assert ceiling / 2 <= d <= ceiling
    assert delays[-1] <= 300
    assert len({round(domain.retry_delay(3, base=10, cap=300), 6) for _ in range(20)}) > 1


def test_routes_follow_preferences_and_a_shared_robot_posts_once() -> None:
    now = at(10)
    a = domain.Recipient(person(id="a", channels=("inbox", "email", "group")))
    b = domain.Recipient(person(id="b", email=None, channels=("email", "group", "gone")))
    routes = domain.route([a, b], now=now, email_enabled=True, webhooks=["group"])
    assert [(r.recipient.person.id, r.channel) for r in routes] == [
        ("a", "inbox"),
        ("a", "email"),
        ("a", "webhook:group"),
    ]
    assert routes[1].address == "zhang.wei@example.com"
    no_mail = domain.route([a], now=now, email_enabled=False, webhooks=[])
    assert [r.channel for r in no_mail] == ["inbox"]
    sleeping = domain.Recipient(person(id="c", quiet_hours=domain.QuietHours(time(9), time(11))))
    inbox, mail = domain.route([sleeping], now=now, email_enabled=True, webhooks=[])
    assert inbox.not_before is None
    assert mail.not_before == datetime(2026, 5, 9, 11, 0, tzinfo=SHANGHAI)


def test_field_labels() -> None:
    assert domain.field_label("/lines/0/unit_price", "zh") == "明细 › 第 1 行 › 单价"
    assert domain.field_label("/lines/2/unit_price", "en") == "Lines › #3 › Unit price"
    assert domain.field_label("/customer/x~1y", "en") == "Customer › x/y"
    assert domain.field_label("", "en") == ""


def test_a_field_label_unescapes_as_rfc_6901_says() -> None:
    # `~01` is the key `~1`, not `/`: `~1` is undone before `~0`
    assert domain.field_label("/customer/a~01b", "en") == "Customer › a~1b"
    assert domain.field_label("/customer/a~0~1b", "en") == "Customer › a~/b"


# --- templates and the email itself ---------------------------------------------------------


def test_a_template_dir_overrides_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "contract.drafted.en.subject").write_text(
        "Sign {{ contract_number }} today\n", encoding="utf-8"
    )
    templates = Templates(tmp_path)
    templates.check()
    context = {
        "event_type": "contract.drafted",
        "order_id": str(uuid.uuid4()),
        "order_ref": "abcd1234",
        "revision": 1,
        "link": "http://console/orders/x",
        "contract_number": "HT-1",
        "customer_name": None,
        "total": "10.00",
        "currency": "CNY",
        "recipient_name": "Wei",
    }
    assert templates.render("contract.drafted", "en", context).subject == "Sign HT-1 today"
    # the other files are still the built-in ones
    assert "Contract HT-1" in templates.render("contract.drafted", "en", context).text
    assert templates.render("contract.drafted", "zh", context).subject == "合同 HT-1 已起草"


def test_a_broken_template_stops_the_service_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "order.approved.zh.txt").write_text("{% if %}\n", encoding="utf-8")
    with pytest.raises(TemplateProblem, match=r"order\.approved\.zh\.txt"):
        Templates(tmp_path).check()
    with pytest.raises(TemplateProblem, match="is not a directory"):
        Templates(tmp_path / "nope")


def test_the_email_encodes_chinese_headers_and_carries_both_parts() -> None:
    delivery_id = uuid.uuid4()
    message = Outgoing(
        id=delivery_id,
        event_id="e1",
        event_type="order.approved",
        recipient="zhang.wei",
        recipient_name="张伟",
        channel="email",
        address="zhang.wei@example.com",
        order_id=uuid.uuid4(),
        subject="订单 abcd1234 已通过评审（第 1 版）",
        body="正文\n",
        html="<p>正文</p>",
        markdown=None,
        link="http://console/orders/x",
        language="zh",
        created_at=datetime.now(UTC),
    )
    mail = build_message(message, sender="notify@example.com", sender_name="订单评审")
    raw = mail.as_bytes(policy=SMTP)
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert headers.isascii() and b"=?utf-8?" in headers
    parsed = message_from_bytes(raw, policy=default_policy)
    assert parsed["Subject"] == message.subject
    assert parsed["To"].addresses[0].display_name == "张伟"
    assert parsed["Message-ID"] == f"<{delivery_id}@example.com>"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["Content-Language"] == "zh-CN"
    assert [p["Content-Language"] for p in parsed.iter_parts()] == ["zh-CN", "zh-CN"]


@pytest.mark.parametrize(("language", "tag"), [("zh", "zh-CN"), ("en", "en")])
@pytest.mark.parametrize("html", [None, "<p>Hello</p>"])
def test_every_email_says_its_language(language: str, tag: str, html: str | None) -> None:
    """Set after the content is: `set_content()` would drop a Content-Language set before."""
    message = Outgoing(
        id=uuid.uuid4(),
        event_id="e1",
        event_type="review.sent",
        recipient="li.na",
        recipient_name="Li Na",
        channel="email",
        address="li.na@example.com",
        order_id=uuid.uuid4(),
        subject="Review waiting",
        body="Hello\n",
        html=html,
        markdown=None,
        link="http://console/orders/x",
        language=language,
        created_at=datetime.now(UTC),
    )
    raw = build_message(message, sender="notify@example.com", sender_name="Orderflow").as_bytes(
        policy=SMTP
    )
    parsed = message_from_bytes(raw, policy=default_policy)
    assert parsed["Content-Language"] == tag
    assert [p["Content-Language"] for p in parsed.iter_parts()] == ([tag, tag] if html else [])


def test_the_example_contacts_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DINGTALK_SALES_SECRET", "FEISHU_FINANCE_SECRET", "ERP_WEBHOOK_SECRET"):
        monkeypatch.setenv(name, "example-secret")
    example = Path(__file__).resolve().parents[1] / "contacts.example.toml"
    directory = contacts.load(example)
    assert directory.escalation("finance") == ["li.na"]
    assert directory.person("li.na").language == "en"
    assert sorted(directory.webhooks) == ["erp", "finance-feishu", "sales-dingtalk"]


def test_the_default_time_zone_works_without_a_time_zone_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zoneinfo import ZoneInfoNotFoundError

    def missing(name: str) -> None:
        raise ZoneInfoNotFoundError(name)

    monkeypatch.setattr(contacts, "ZoneInfo", missing)
    zone = contacts.resolve_timezone("Asia/Shanghai")
    assert zone.utcoffset(None) == timedelta(hours=8)
    assert contacts.Directory().person("someone").tz is not None
    with pytest.raises(ValueError, match="unknown time zone"):
        contacts.resolve_timezone("Europe/Berlin")
