"""The formats of the contract, as an integrator in another language meets them: decimals
only as strings, no unknown fields, one way to write a point in time."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from orderflow import times
from orderflow.messages import (
    EVENTS,
    ContractDrafted,
    OrderDocument,
    ReviewCancelled,
    Salesperson,
    Timestamp,
    Totals,
    VerdictGiven,
)
from orderflow.messages.base import NOT_A_STRING, NOT_A_TIME
from orderflow_testkit.testing import badly_written_times, times_in

ORDER: dict[str, Any] = {
    "order_type": "product",
    "salesperson": {"id": "li.wei"},
    "lines": [{"item": "flange", "quantity": "200", "unit_price": "85.50"}],
    "tax_rate": "0.13",
}

VERDICT: dict[str, Any] = {
    "review_id": str(uuid.uuid4()),
    "order_id": str(uuid.uuid4()),
    "revision": 1,
    "department": "finance",
    "decision": "approve",
    "reviewer": {"id": "wang.fang"},
}


def errors(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[tuple[Any, ...], str]]:
    return [(e["loc"], e["type"]) for e in exc.value.errors()]


# --- decimals ------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [85.5, 85, 0.1 + 0.2, 0])
@pytest.mark.parametrize("how", ["json", "python"])
def test_a_json_number_for_money_is_refused_naming_the_field(number: Any, how: str) -> None:
    body = json.loads(json.dumps(ORDER))
    body["lines"][0]["unit_price"] = number
    # on the bus the body is JSON; over HTTP FastAPI validates the parsed JSON
    read = OrderDocument.model_validate_json if how == "json" else OrderDocument.model_validate
    with pytest.raises(ValidationError) as refused:
        read(json.dumps(body) if how == "json" else body)  # type: ignore[operator]
    assert errors(refused) == [(("lines", 0, "unit_price"), NOT_A_STRING)]
    [error] = refused.value.errors()
    assert error["msg"] == 'must be a decimal number written as a string, e.g. "85.50"'


@pytest.mark.parametrize(
    ("pointer", "number"),
    [
        (("lines", 0, "quantity"), 200),
        (("lines", 0, "amount"), 17100.0),
        (("tax_rate",), 0.13),
    ],
)
def test_every_bounded_decimal_is_a_string_only(pointer: tuple[Any, ...], number: Any) -> None:
    body = json.loads(json.dumps(ORDER))
    target = body
    for step in pointer[:-1]:
        target = target[step]
    target[pointer[-1]] = number
    with pytest.raises(ValidationError) as refused:
        OrderDocument.model_validate_json(json.dumps(body))
    assert errors(refused) == [(pointer, NOT_A_STRING)]


def test_a_boolean_or_an_object_is_not_a_decimal_either() -> None:
    for value in (True, {"amount": "1"}, ["1"], None):
        with pytest.raises(ValidationError) as refused:
            Totals.model_validate({"currency": "CNY", "subtotal": value, "tax": "0", "total": "0"})
        assert errors(refused)[0][0] == ("subtotal",)


def test_decimal_strings_and_decimals_are_read_and_written_as_strings() -> None:
    document = OrderDocument.model_validate_json(json.dumps(ORDER))
    assert document.lines[0].unit_price == Decimal("85.50")
    totals = Totals.of(document)
    assert totals.model_dump(mode="json") == {
        "currency": "CNY",
        "subtotal": "17100.00",
        "tax": "2223.00",
        "total": "19323.00",
    }
    # the product's own code hands Decimals
    again = Totals(currency="CNY", subtotal=Decimal("1"), tax=Decimal("0"), total=Decimal("1"))
    assert json.loads(again.model_dump_json())["total"] == "1"


def test_json_schema_of_a_decimal_stays_a_string_with_its_pattern() -> None:
    schema = OrderDocument.model_json_schema()
    price = schema["$defs"]["OrderLine"]["properties"]["unit_price"]["anyOf"][0]
    assert price["type"] == "string"
    assert re.fullmatch(price["pattern"], "85.50")
    assert not re.fullmatch(price["pattern"], "8.5E1")


# --- unknown fields ----------------------------------------------------------------------


def test_a_message_with_an_unknown_field_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError) as refused:
        VerdictGiven.model_validate_json(json.dumps({**VERDICT, "reviwer_note": "typo"}))
    assert errors(refused) == [(("reviwer_note",), "extra_forbidden")]
    # nested parts too
    with pytest.raises(ValidationError) as refused:
        VerdictGiven.model_validate({**VERDICT, "reviewer": {"id": "x", "email": "x@y"}})
    assert errors(refused) == [(("reviewer", "email"), "extra_forbidden")]


@pytest.mark.parametrize("message_type", sorted(EVENTS))
def test_every_event_refuses_unknown_fields(message_type: str) -> None:
    model = EVENTS[message_type]
    assert model.model_config.get("extra") == "forbid"
    assert model.model_json_schema().get("additionalProperties") is False


def test_a_verdict_as_written_is_read() -> None:
    verdict = VerdictGiven.model_validate_json(json.dumps(VERDICT))
    assert VerdictGiven.model_validate_json(verdict.model_dump_json()) == verdict


# --- times -------------------------------------------------------------------------------

TIME = TypeAdapter(Timestamp)
UTC_120 = datetime(2026, 12, 3, 14, 5, 9, 120_000, tzinfo=UTC)
UTC_123 = datetime(2026, 12, 3, 14, 5, 9, 123_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("2026-12-03T14:05:09.120Z", UTC_120),
        ("2026-12-03T14:05:09Z", datetime(2026, 12, 3, 14, 5, 9, tzinfo=UTC)),
        ("2026-12-03t14:05:09.5z", datetime(2026, 12, 3, 14, 5, 9, 500_000, tzinfo=UTC)),
        ("2026-12-03T22:05:09.123456+08:00", UTC_123),
        ("2026-12-03T14:05:09.123456789-00:00", UTC_123),
    ],
)
def test_any_rfc3339_time_is_read_and_kept_in_utc_milliseconds(
    written: str, meant: datetime
) -> None:
    read = TIME.validate_json(json.dumps(written))
    assert read == meant and read.utcoffset() == timedelta(0)
    assert TIME.dump_json(read).decode() == json.dumps(times.format_time(meant))


@pytest.mark.parametrize(
    "written",
    [
        "2026-12-03T14:05:09",  # no offset: which 14:05?
        "2026-12-03 14:05:09Z",  # not RFC 3339's T
        "2026-12-03",
        "2026-12-03T14:05Z",
        "2026-13-03T14:05:09Z",
        "yesterday",
        1764770709,  # seconds since 1970: in which unit?
        1764770709.12,
    ],
)
def test_a_time_not_in_rfc3339_with_its_offset_is_refused(written: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        TIME.validate_json(json.dumps(written))
    assert [e["type"] for e in refused.value.errors()] == [NOT_A_TIME]


def test_a_naive_datetime_is_refused_in_python_too() -> None:
    with pytest.raises(ValidationError):
        TIME.validate_python(datetime(2026, 12, 3, 14, 5, 9))
    aware = datetime(2026, 12, 3, 22, 5, 9, 999_999, tzinfo=timezone(timedelta(hours=8)))
    assert TIME.validate_python(aware) == datetime(2026, 12, 3, 14, 5, 9, 999_000, tzinfo=UTC)


def test_every_time_field_of_a_message_is_written_one_way() -> None:
    moment = datetime(2026, 12, 3, 14, 5, 9, 123_456, tzinfo=UTC)
    drafted = ContractDrafted(
        contract_id=uuid.uuid4(),
        contract_number="HT-2026-000001",
        order_id=uuid.uuid4(),
        revision=1,
        salesperson=Salesperson(id="li.wei"),
        currency="CNY",
        total=Decimal("19323.00"),
        drafted_at=moment,
    )
    body = json.loads(drafted.model_dump_json())
    assert body["drafted_at"] == "2026-12-03T14:05:09.123Z"
    assert body["total"] == "19323.00"
    cancelled = json.loads(
        ReviewCancelled(
            review_id=uuid.uuid4(),
            order_id=uuid.uuid4(),
            revision=1,
            department="finance",
            reason="withdrawn",
            cancelled_at=moment,
        ).model_dump_json()
    )
    assert times_in(cancelled) == [("/cancelled_at", "2026-12-03T14:05:09.123Z")]
    assert badly_written_times(cancelled) == []


def test_json_schema_of_a_time() -> None:
    schema = ContractDrafted.model_json_schema()["properties"]["drafted_at"]
    assert {k: v for k, v in schema.items() if k != "title"} == {
        "type": "string",
        "format": "date-time",
        "pattern": times.PATTERN,
    }
    for model in EVENTS.values():
        for name, prop in model.model_json_schema()["properties"].items():
            if name.endswith("_at"):
                found = prop.get("anyOf", [prop])[0]
                assert found.get("pattern") == times.PATTERN, (model.__name__, name)


def test_the_helpers_find_every_time_however_written() -> None:
    document = {
        "at": "2026-12-03T14:05:09.120Z",
        "nested": [{"when": "2026-12-03T14:05:09.120123+00:00"}, {"d": "2026-12-03"}],
        "a/b": "2026-12-03 14:05:09",
        "n": 3,
    }
    assert times_in(document) == [
        ("/at", "2026-12-03T14:05:09.120Z"),
        ("/nested/0/when", "2026-12-03T14:05:09.120123+00:00"),
        ("/a~1b", "2026-12-03 14:05:09"),
    ]
    assert badly_written_times(document) == [
        ("/nested/0/when", "2026-12-03T14:05:09.120123+00:00"),
        ("/a~1b", "2026-12-03 14:05:09"),
    ]
