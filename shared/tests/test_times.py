import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from orderflow import times


def test_written_in_utc_with_milliseconds_cut_not_rounded() -> None:
    moment = datetime(2026, 12, 3, 22, 5, 9, 999_999, tzinfo=timezone(timedelta(hours=8)))
    assert times.format_time(moment) == "2026-12-03T14:05:09.999Z"


def test_whole_seconds_still_carry_three_digits() -> None:
    written = times.format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert written == "2026-01-02T03:04:05.000Z"
    assert re.fullmatch(times.PATTERN, written)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        times.format_time(datetime(2026, 1, 2, 3, 4, 5))


def test_now_has_no_microseconds_beyond_milliseconds() -> None:
    assert times.now().microsecond % 1000 == 0
    assert times.now().tzinfo is UTC
