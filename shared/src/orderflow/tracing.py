"""W3C trace context carried in the `traceparent` header from message to message.

A hand-written part: OpenTelemetry would bring an SDK and exporter for what is here one
header; the format is the W3C one, so an OpenTelemetry collector can pick it up later.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_current_trace: ContextVar[str | None] = ContextVar("orderflow_trace_id", default=None)


def new_traceparent(trace_id: str | None = None) -> str:
    trace = trace_id or _current_trace.get() or secrets.token_hex(16)
    return f"00-{trace}-{secrets.token_hex(8)}-01"


def trace_id_of(traceparent: object) -> str | None:
    if isinstance(traceparent, str) and (m := _TRACEPARENT.match(traceparent)):
        return m.group(1)
    return None


def set_current_trace(trace_id: str | None) -> None:
    _current_trace.set(trace_id)


def current_trace() -> str | None:
    return _current_trace.get()
