"""No log line shows a secret: configured values and secret-looking URL parts are masked
in JSON and console output, for structlog and for the stdlib loggers of libraries; httpx's
request lines (which carry the robots' keys) are not written at all."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from orderflow.logging import colours_for, configure_logging, forget_secrets, redact

WECOM = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
DINGTALK = (
    "https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef"
    "&timestamp=1700000000000&sign=abc%2Bdef%3D"
)
SLACK = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
FEISHU = "https://open.feishu.cn/open-apis/bot/v2/hook/4e0c8f2a-1111-2222-3333-444455556666"
AMQP = "amqp://notifier:broker-pass-123456@rabbitmq:5672/orderflow"
POSTGRES = "postgresql://notifier:db-pass-1234567@postgres:5432/orderflow"
CONFIGURED = "configured-secret-value-42"

LEAKS = [
    "693a91f6-7xxx",
    "0123456789abcdef",
    "abc%2Bdef",
    "XXXXXXXXXXXXXXXXXXXXXXXX",
    "4e0c8f2a-1111",
    "broker-pass-123456",
    "db-pass-1234567",
    CONFIGURED,
]


@pytest.fixture
def reset_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    forget_secrets()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_redact_masks_credentials_in_urls() -> None:
    assert redact(WECOM) == "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***"
    assert redact(DINGTALK) == (
        "https://oapi.dingtalk.com/robot/send?access_token=***&timestamp=1700000000000&sign=***"
    )
    assert redact(SLACK) == "https://hooks.slack.com/services/***"
    assert redact(FEISHU) == "https://open.feishu.cn/open-apis/bot/v2/hook/***"
    assert redact(AMQP) == "amqp://notifier:***@rabbitmq:5672/orderflow"
    assert redact(POSTGRES) == "postgresql://notifier:***@postgres:5432/orderflow"
    # what is not a credential stays readable
    assert redact("https://erp.example.com/hooks?format=json") == (
        "https://erp.example.com/hooks?format=json"
    )


@pytest.mark.parametrize("as_json", [True, False])
def test_no_renderer_shows_a_secret(
    reset_logging: None, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    configure_logging("demo", level="DEBUG", json=as_json, secrets=[CONFIGURED])
    log = structlog.get_logger("demo")
    log.info("sending", url=WECOM, extra={"urls": [DINGTALK, SLACK]}, note=f"x {CONFIGURED} y")
    log.warning(f"connecting to {AMQP}")
    try:
        raise RuntimeError(f"cannot reach {POSTGRES} or {FEISHU}")
    except RuntimeError:
        log.exception("failed")
    # a library's own logger, through the stdlib
    logging.getLogger("aiormq.connection").warning("Connecting to: %s", AMQP)
    logging.getLogger("uvicorn.error").error("boom", exc_info=RuntimeError(CONFIGURED))
    # httpx writes every request URL at INFO: not at all
    logging.getLogger("httpx").info('HTTP Request: POST %s "HTTP/1.1 200 OK"', WECOM)
    logging.getLogger("httpx").warning("a warning of httpx still shows")

    out = capsys.readouterr()
    text = out.out + out.err
    for leak in LEAKS:
        assert leak not in text
    assert "HTTP Request" not in text
    assert "a warning of httpx still shows" in text
    assert "aiormq.connection" in text and "Connecting to: amqp://notifier:***@" in text
    if as_json:
        lines = [json.loads(line) for line in out.err.splitlines()]
        by_event = {line["event"]: line for line in lines}
        assert by_event["sending"]["url"].endswith("key=***")
        assert "Traceback" in by_event["failed"]["exception"]
        assert by_event["boom"]["logger"] == "uvicorn.error"


class _Stream(io.StringIO):
    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("tty", "environ", "expected"),
    [
        (True, {}, True),
        (False, {}, False),  # a pipe or a log file
        (True, {"NO_COLOR": "1"}, False),
        (False, {"FORCE_COLOR": "1"}, True),
        (True, {"NO_COLOR": "", "TERM": "xterm"}, True),  # NO_COLOR counts only when set
    ],
)
def test_colours_only_for_a_terminal(tty: bool, environ: dict[str, str], expected: bool) -> None:
    assert colours_for(_Stream(tty=tty), environ) is expected
    assert colours_for(object(), environ) is (expected and bool(environ.get("FORCE_COLOR")))


@pytest.mark.parametrize("tty", [False, True])
def test_console_lines_have_colour_codes_only_on_a_terminal(
    reset_logging: None, monkeypatch: pytest.MonkeyPatch, tty: bool
) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    stream = _Stream(tty=tty)
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("demo", json=False)
    structlog.get_logger("demo").warning("order submitted", order_id="o-1")
    logging.getLogger("uvicorn.error").error("a library's line")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger("demo").exception("failed")

    text = stream.getvalue()
    assert "order submitted" in text and "a library's line" in text and "boom" in text
    assert ("\x1b[" in text) is tty
