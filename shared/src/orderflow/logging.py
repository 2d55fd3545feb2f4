"""structlog set up once per process: JSON lines for machines, console for people (with
colours only on a terminal).

Every line, from structlog or from a library's stdlib logger (uvicorn, aio-pika, httpx...),
passes `redact` before it is rendered: each configured secret value, and whatever looks
like a secret in a URL (a password in `scheme://user:pass@`, query parameters such as
`key`, `access_token` or `sign`, chat robots' webhook paths), is replaced by `***`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

MASK = "***"

#: query parameters that carry a credential (WeCom `key`, DingTalk `access_token`+`sign`...)
SECRET_PARAMETERS = (
    "key",
    "access_token",
    "token",
    "sign",
    "signature",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "auth",
    "authorization",
    "client_secret",
    "refresh_token",
    "id_token",
    "code",
)

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:password@host (amqp, postgresql, http...)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@'\"]*):[^\s@/'\"]*@"), rf"\1:{MASK}@"),
    # ?key=... &access_token=... &sign=...
    (
        re.compile(
            r"(?i)([?&;](?:" + "|".join(SECRET_PARAMETERS) + r")=)[^&\s'\"<>#]+",
        ),
        rf"\1{MASK}",
    ),
    # Slack: hooks.slack.com/services/T.../B.../token (and workflows, triggers)
    (
        re.compile(r"(?i)(hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s'\"?#]+"),
        rf"\1{MASK}",
    ),
    # Feishu / Lark: /open-apis/bot/v2/hook/<token>
    (re.compile(r"(?i)(/bot/v2/hook/)[^\s'\"?#/]+"), rf"\1{MASK}"),
    # WeCom / DingTalk carry theirs in the query (above); a bare `Bearer <token>` too
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1{MASK}"),
]

#: secrets shorter than this are not masked on their own (they would mask ordinary words);
#: a production deployment refuses secrets shorter than 16 characters anyway
MIN_REGISTERED = 6


class _Registry:
    """The configured secret values, as one pattern, longest first."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str | None]) -> None:
        new = {v for v in values if v and len(v) >= MIN_REGISTERED} - self._values
        if not new:
            return
        self._values |= new
        ordered = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def clear(self) -> None:
        self._values.clear()
        self._pattern = None

    def redact(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


_SECRETS = _Registry()


def register_secrets(values: Iterable[str | None]) -> None:
    """Values no log line may show (settings' secrets, robots' keys and tokens)."""
    _SECRETS.add(values)


def forget_secrets() -> None:
    """For tests: start again from no registered value."""
    _SECRETS.clear()


def redact(text: str) -> str:
    """`text` without any registered secret or secret-looking URL part."""
    return _SECRETS.redact(text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    # anything else is rendered by its repr (an httpx.URL, an exception): redact that text
    return redact(repr(value))


def redact_processor(_: Any, __: str, event_dict: structlog.typing.EventDict) -> Any:
    """The structlog processor: every value of the event, the traceback included."""
    return {
        key: value if key.startswith("_") else _redact_value(value)
        for key, value in event_dict.items()
    }


#: libraries that log every request URL (with its key or token) at INFO
QUIET_LOGGERS = ("httpx", "httpcore", "hpack")
#: loggers that may carry a handler of their own (faststream's; uvicorn's, when something
#: in the process configured it), which would bypass the redaction
FOREIGN_HANDLERS = ("faststream", "faststream.access", "uvicorn", "uvicorn.error", "uvicorn.access")


def colours_for(stream: Any, environ: Mapping[str, str] | None = None) -> bool:
    """Colour codes only for a person at a terminal: a log file or a pipe (`run.sh` prefixes
    each line through one) gets plain text. `NO_COLOR` (any value, no-color.org) turns them
    off on a terminal too; `FORCE_COLOR` turns them on anywhere."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed or detached stream
        return False


def configure_logging(
    service: str,
    *,
    level: str = "INFO",
    json: bool = True,
    secrets: Iterable[str | None] = (),
) -> None:
    register_secrets(secrets)
    chain: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=colours_for(sys.stderr))
    )
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*chain, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    configure_stdlib(service, level=numeric, chain=chain, renderer=renderer)


def configure_stdlib(
    service: str,
    *,
    level: int,
    chain: list[structlog.typing.Processor],
    renderer: structlog.typing.Processor,
) -> None:
    """Route the stdlib loggers through the same chain (redaction) and renderer."""

    def add_service(_: Any, __: str, event_dict: structlog.typing.EventDict) -> Any:
        event_dict.setdefault("service", service)
        return event_dict

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, add_service, *chain],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # loggers with handlers of their own: through ours instead
    for name in FOREIGN_HANDLERS:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
