"""Base classes and bounded field types shared by every command and event on the bus."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation, localcontext
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from .. import limits, times

# --- decimals -------------------------------------------------------------------------------

_NOT_A_DECIMAL = 'must be a decimal number, e.g. "85.50"'
#: The error type and message of a decimal sent as a JSON number (or any other non-string):
#: a float cannot hold 0.1 exactly, so a number is refused rather than guessed at.
NOT_A_STRING = "decimal_not_a_string"
_NOT_A_STRING = 'must be a decimal number written as a string, e.g. "85.50"'


def _as_decimal(value: Any) -> Decimal:
    # Python code of the product may hand a Decimal; from JSON (on the bus, and over HTTP
    # where FastAPI validates the parsed body) only a string is a decimal
    if not isinstance(value, str | Decimal):
        raise PydanticCustomError(NOT_A_STRING, _NOT_A_STRING)
    if isinstance(value, str):
        if len(value) > limits.DECIMAL_CHARS:
            raise ValueError(f"must be a decimal of at most {limits.DECIMAL_CHARS} characters")
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(_NOT_A_DECIMAL) from None
    if not isinstance(value, Decimal):
        raise ValueError(_NOT_A_DECIMAL)
    if not value.is_finite():
        raise ValueError("must be a finite number, not NaN or Infinity")
    return value


def _digits(value: Decimal) -> tuple[int, int]:
    """Digits before and after the point of a finite decimal, trailing zeros not counted,
    from its tuple: "1E-200000000" is never written out."""
    _, coefficient, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    significant = list(coefficient)
    while len(significant) > 1 and significant[-1] == 0 and exponent < 0:
        significant.pop()
        exponent += 1
    before = max(0, len(significant) + exponent) if any(significant) else 0
    return before, max(0, -exponent)


@dataclass(frozen=True)
class Bounded:
    """Decimal metadata: at most `digits` before the point and `places` after it; NaN and
    Infinity refused; the value normalised to one plain form (no exponent: "1E+2" is 100; no
    zeros past `places`; no sign on zero), and written as a string ("85.50") in JSON. Read
    only from a string (or a `Decimal` in Python): a JSON number is refused as
    `decimal_not_a_string`, whether it comes on the bus or over HTTP."""

    digits: int
    places: int

    def parse(self, raw: Any) -> Decimal:
        value = _as_decimal(raw)
        before, after = _digits(value)
        if before > self.digits:
            raise ValueError(f"must have at most {self.digits} digits before the decimal point")
        if after > self.places:
            raise ValueError(f"must have at most {self.places} digits after the decimal point")
        with localcontext(prec=2 * limits.DECIMAL_DIGITS):
            scale = -int(value.as_tuple().exponent)
            if scale < 0:
                value = value.quantize(Decimal(1))
            elif scale > self.places:  # only zeros are there, as checked above
                value = value.quantize(Decimal(10) ** -self.places)
            return abs(value) if value.is_zero() else value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(
            self.parse,
            handler(source),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: format(v, "f"), return_schema=core_schema.str_schema(), when_used="json"
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": rf"^-?[0-9]{{1,{self.digits}}}(\.[0-9]{{1,{self.places}}})?$",
            "maxLength": limits.DECIMAL_CHARS,
            "description": f"A decimal as a string: at most {self.digits} digits before the "
            f"point and {self.places} after",
        }


# Money and quantities travel as decimal strings ("85.50"), never as floats: a float cannot
# hold 0.1 exactly and a contract total must add up to the cent. Every decimal is bounded, so
# "1E-200000000" (200 million digits once written out) is refused as it is read.
DecimalStr = Annotated[Decimal, Bounded(limits.DECIMAL_DIGITS, limits.DECIMAL_PLACES)]
Money = Annotated[Decimal, Bounded(limits.MONEY_DIGITS, limits.MONEY_PLACES)]
Quantity = Annotated[Decimal, Bounded(limits.QUANTITY_DIGITS, limits.QUANTITY_PLACES)]
Rate = Annotated[Decimal, Bounded(1, limits.RATE_PLACES)]
TotalStr = Annotated[Decimal, Bounded(limits.TOTAL_DIGITS, limits.MONEY_PLACES)]

# --- times ----------------------------------------------------------------------------------

# RFC 3339 `date-time`: a `T`, seconds, any fraction, and an offset that is required
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
NOT_A_TIME = "time_not_rfc3339"
_NOT_A_TIME = 'must be an RFC 3339 time with its offset from UTC, e.g. "2026-12-03T14:05:09.120Z"'


def _as_time(value: Any) -> datetime:
    if isinstance(value, str):
        if len(value) > 40 or not _RFC3339.match(value):
            raise PydanticCustomError(NOT_A_TIME, _NOT_A_TIME)
        try:
            value = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        except ValueError:
            raise PydanticCustomError(NOT_A_TIME, _NOT_A_TIME) from None
    if not isinstance(value, datetime):
        raise PydanticCustomError(NOT_A_TIME, _NOT_A_TIME)
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError(NOT_A_TIME, _NOT_A_TIME)
    return times.utc(value)


@dataclass(frozen=True)
class _TimeFormat:
    """Datetime metadata: read from RFC 3339 with a required offset (a naive time, a number
    of seconds or any other form is refused), kept in UTC at millisecond precision, and
    written as `times.format_time` does (`2026-12-03T14:05:09.120Z`)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _as_time,
            serialization=core_schema.plain_serializer_function_ser_schema(
                times.format_time, return_schema=core_schema.str_schema(), when_used="json"
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "date-time", "pattern": times.PATTERN}


#: A point in time, on the bus and over HTTP: RFC 3339, UTC `Z`, milliseconds.
Timestamp = Annotated[datetime, _TimeFormat()]

# --- text -----------------------------------------------------------------------------------

# C0 and C1 control characters and lone surrogates (which cannot be stored as UTF-8): never
# in a name or an id; in longer text only tabs and line breaks are allowed.
_LINE_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# the same rules for the JSON Schema (ECMA regex syntax), so clients and fuzzers see them
_LINE_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"
_TEXT_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"


@dataclass(frozen=True)
class Chars:
    """String metadata: at most `max_length` characters (at least `min_length`), without
    control characters; `lines=True` allows tabs and line breaks (addresses, notes)."""

    max_length: int
    min_length: int = 0
    lines: bool = False

    def check(self, value: str) -> str:
        if not self.min_length <= len(value) <= self.max_length:
            raise ValueError(
                f"must have {self.min_length} to {self.max_length} characters, not {len(value)}"
            )
        if (_TEXT_FORBIDDEN if self.lines else _LINE_FORBIDDEN).search(value):
            raise ValueError(
                "must not contain control characters other than tabs and line breaks"
                if self.lines
                else "must not contain control characters (NUL, line breaks, tabs, ...)"
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        schema = handler(source)
        if schema["type"] == "str":  # sized as it is read, so a huge string stops early
            schema = {**schema, "min_length": self.min_length, "max_length": self.max_length}
        return core_schema.no_info_after_validator_function(self.check, schema)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        found = handler(schema)
        if found.get("type") == "string":
            found.setdefault("minLength", self.min_length)
            found.setdefault("maxLength", self.max_length)
        if found.get("type") == "string" and "pattern" not in found:
            found["pattern"] = _TEXT_PATTERN if self.lines else _LINE_PATTERN
        return found


#: A revision number: from 1, stored as a PostgreSQL integer.
RevisionNo = Annotated[int, Field(ge=1, le=limits.MAX_REVISION)]
#: One line: names, items, units.
ShortText = Annotated[str, Chars(limits.SHORT_TEXT)]
#: Several lines: addresses, terms, requirements, notes, comments.
Text = Annotated[str, Chars(limits.TEXT, lines=True)]
#: An identifier or a reference: one line, not empty.
Id = Annotated[str, Chars(limits.ID, min_length=1)]


class Document(BaseModel):
    """A part of a public document: unknown fields are refused, so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Message(BaseModel):
    """One command or event. Its class names the AMQP `type` and the schema version.

    Unknown fields are refused (decision 0022): every consumer of a message is either a
    service of Orderflow, deployed from the same release as its producer, or a system outside
    that codes against the published schema, so a field nobody knows is a mistake (a typo, a
    producer on the wrong version) and says so instead of being dropped. A new field is a new
    `schema_version`. Systems outside read tolerantly if they like; the guide says where.
    """

    model_config = ConfigDict(extra="forbid")

    message_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    @classmethod
    def schema_name(cls) -> str:
        return f"orderflow.{cls.message_type}"
