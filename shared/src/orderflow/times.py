"""The one way Orderflow writes a point in time, on the bus and over HTTP.

RFC 3339 in UTC with a `Z` and exactly three fractional digits (`2026-12-03T14:05:09.120Z`):
every language parses it, and it sorts as text. Finer precision is cut, not rounded, so a
time written out never lies in the future of the moment it stands for.
"""

from __future__ import annotations

from datetime import UTC, datetime

#: The pattern every written time matches (for JSON Schema and tests).
PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


def utc(value: datetime) -> datetime:
    """`value` in UTC, cut to milliseconds; a naive time is refused, not guessed."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a time must carry its offset from UTC")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def format_time(value: datetime) -> str:
    """`value` as RFC 3339 UTC with milliseconds: `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    value = utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def now() -> datetime:
    """This moment in UTC, at the precision Orderflow writes."""
    return utc(datetime.now(UTC))
