"""Bulk intake, for moving orders over from another system: CSV or JSON Lines, turned into
order documents row by row, and each problem traced back to its row and column. Pure, no
I/O.

JSON Lines (`application/x-ndjson`): one order document per line, exactly as
`POST /api/v1/orders` takes it; blank lines are skipped; the row number is the line number.

CSV (`text/csv`, UTF-8, comma, semicolon or tab separated, a header row first): one row per
order line. The rows of one order share its `order_ref` (any text of the file's own; it
only groups rows) and follow each other. The order's columns may be filled on its first
row only, or repeated on every row, but must not disagree. Row 1 is the header, as in a
spreadsheet. The columns, with what each holds, are `COLUMN_HELP` below: the import
route's OpenAPI description and docs/integration.md ("Bulk import") show the same table.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orderflow import jsonpointer
from orderflow.messages import Problem

REF_COLUMN = "order_ref"

ORDER_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "order_type": ("order_type",),
    "external_ref": ("external_ref",),
    "salesperson_id": ("salesperson", "id"),
    "salesperson_name": ("salesperson", "name"),
    "salesperson_email": ("salesperson", "email"),
    "customer_name": ("customer", "name"),
    "customer_contact_name": ("customer", "contact_name"),
    "customer_phone": ("customer", "phone"),
    "customer_email": ("customer", "email"),
    "customer_address": ("customer", "address"),
    "customer_language": ("customer", "language"),
    "company_kind": ("customer", "company", "kind"),
    "company_business_scope": ("customer", "company", "business_scope"),
    "company_credit_standing": ("customer", "company", "credit_standing"),
    "currency": ("currency",),
    "tax_rate": ("tax_rate",),
    "quality_requirements": ("quality_requirements",),
    "usage_scenario": ("usage_scenario",),
    "technical_requirements": ("technical_requirements",),
    "delivery_date": ("delivery", "date"),
    "delivery_method": ("delivery", "method"),
    "delivery_address": ("delivery", "address"),
    "payment_method": ("payment", "method"),
    "payment_terms": ("payment", "terms"),
    "payment_settlement_days": ("payment", "settlement_days"),
    "confirmation_method": ("customer_confirmation", "method"),
    "confirmation_at": ("customer_confirmation", "confirmed_at"),
    "confirmation_by": ("customer_confirmation", "confirmed_by"),
    "notes": ("notes",),
}
LINE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "line_item": ("item",),
    "line_specification": ("specification",),
    "line_model": ("model",),
    "line_quantity": ("quantity",),
    "line_unit": ("unit",),
    "line_unit_price": ("unit_price",),
    "line_amount": ("amount",),
    "line_attributes": ("attributes",),
    "service_content": ("service", "content"),
    "service_standard": ("service", "standard"),
    "service_period_start": ("service", "period_start"),
    "service_period_end": ("service", "period_end"),
}
COLUMNS = frozenset({REF_COLUMN, *ORDER_COLUMNS, *LINE_COLUMNS})

#: What each CSV column holds, for the people who fill them in: the OpenAPI description
#: of the import route and the integration guide are written from it.
COLUMN_HELP: Mapping[str, str] = {
    REF_COLUMN: "required; groups the rows of one order (any text of the file's own)",
    "order_type": "product, service or custom",
    "external_ref": "the customer's purchase-order reference, e.g. PO-SJPM-2026-0042",
    "salesperson_id": "the salesperson's user id, e.g. zhang.wei",
    "salesperson_name": "the salesperson's name",
    "salesperson_email": "the salesperson's email",
    "customer_name": "the customer (company or person)",
    "customer_contact_name": "the customer's contact person",
    "customer_phone": "the contact's phone (a phone or an email is required)",
    "customer_email": "the contact's email",
    "customer_address": "the customer's full address",
    "customer_language": "zh or en: the language the customer is written to in",
    "company_kind": "for a company customer: the kind of enterprise",
    "company_business_scope": "for a company customer: its business scope",
    "company_credit_standing": "for a company customer: good, fair, poor or unknown",
    "currency": "ISO 4217 code, e.g. CNY (the default)",
    "tax_rate": "e.g. 0.13; 0 when exempt",
    "quality_requirements": "free text",
    "usage_scenario": "free text",
    "technical_requirements": "free text; an order with them needs the customer's "
    "requirement specification as a file, so it cannot come in by import (import it "
    "without, or create a draft, upload the file, submit)",
    "delivery_date": "YYYY-MM-DD, not in the past, e.g. 2027-03-15",
    "delivery_method": "e.g. 物流配送",
    "delivery_address": "where to deliver",
    "payment_method": "e.g. bank_transfer",
    "payment_terms": "the settlement terms, e.g. 30% 预付，70% 货到后 30 天内付清",
    "payment_settlement_days": "whole days, e.g. 30",
    "confirmation_method": "how the customer confirmed: email, phone, in_person or signed_reply",
    "confirmation_at": "when, RFC 3339, e.g. 2026-11-20T10:00:00+08:00",
    "confirmation_by": "who confirmed for the customer",
    "notes": "free text",
    "line_item": "the line's product or service",
    "line_specification": "the product's specification (a product line needs it or a model)",
    "line_model": "the product's model",
    "line_quantity": "a decimal, greater than 0, e.g. 200",
    "line_unit": "e.g. 件, kg, year",
    "line_unit_price": "a decimal, e.g. 85.50",
    "line_amount": "optional; when given it must equal quantity x unit price",
    "line_attributes": "product parameters: material=304; size=DN50, or a JSON object",
    "service_content": "a service line's content",
    "service_standard": "a service line's standard",
    "service_period_start": "YYYY-MM-DD",
    "service_period_end": "YYYY-MM-DD, not before the start nor in the past",
}


def columns_table() -> str:
    """The CSV columns as a Markdown table: the order's columns, then its line's."""
    rows = ["| column | what it holds |", "| --- | --- |"]
    for column in (REF_COLUMN, *ORDER_COLUMNS, *LINE_COLUMNS):
        rows.append(f"| `{column}` | {COLUMN_HELP[column]} |")
    return "\n".join(rows)


_ORDER_BY_PATH = {path: column for column, path in ORDER_COLUMNS.items()}
_LINE_BY_PATH = {path: column for column, path in LINE_COLUMNS.items()}


@dataclass(frozen=True)
class RowProblem:
    row: int
    pointer: str
    detail: str
    column: str | None = None


def pointer(loc: Sequence[str | int]) -> str:
    return jsonpointer.join(loc) or "/"


# --- CSV ----------------------------------------------------------------------------------


def dialect_of(header_line: str) -> type[csv.Dialect]:
    """Comma, semicolon (spreadsheets in many locales) or tab, whichever the header uses."""
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    delimiter = max(counts, key=lambda d: counts[d])

    class Dialect(csv.excel):
        pass

    Dialect.delimiter = delimiter
    return Dialect


def parse_record(lines: Sequence[str], dialect: type[csv.Dialect]) -> list[str]:
    """One CSV record from its physical lines (several when a quoted cell holds newlines)."""
    reader = csv.reader([line + "\n" for line in lines], dialect)
    return next(reader, [])


def header_problems(header: Sequence[str]) -> list[str]:
    problems = []
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        problems.append(
            f"unknown column(s) {', '.join(repr(c) for c in unknown)}; the columns are "
            f"{', '.join(sorted(COLUMNS))}"
        )
    if REF_COLUMN not in header:
        problems.append(f"the column {REF_COLUMN!r} is required: it groups the rows of an order")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        problems.append(f"column(s) {', '.join(repeated)} appear more than once")
    return problems


def normalise_header(cells: Iterable[str]) -> list[str]:
    return [c.strip().lstrip("\ufeff").strip().lower() for c in cells]


@dataclass
class CsvRow:
    number: int
    values: dict[str, str]


@dataclass
class CsvOrder:
    ref: str
    rows: list[CsvRow] = field(default_factory=list)

    @property
    def numbers(self) -> list[int]:
        return [r.number for r in self.rows]


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = target
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _attributes(text: str) -> dict[str, str]:
    if text.startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        return {str(k): str(v) for k, v in value.items()}
    pairs: dict[str, str] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item.strip()!r} is not name=value")
        pairs[key.strip()] = value.strip()
    return pairs


@dataclass
class CsvDocument:
    """An order built from its rows, with where each of its values came from."""

    document: dict[str, Any]
    problems: list[RowProblem]
    first_row: int
    value_rows: dict[str, int]
    line_rows: list[int]

    def locate(self, problem: Problem) -> RowProblem:
        """The row and column a problem with the document comes from."""
        parts = tuple(p for p in problem.pointer.strip("/").split("/") if p)
        if len(parts) >= 2 and parts[0] == "lines" and parts[1].isdigit():
            index = int(parts[1])
            row = self.line_rows[index] if index < len(self.line_rows) else self.first_row
            column = _longest(parts[2:], _LINE_BY_PATH)
            return RowProblem(row, problem.pointer, problem.detail, column)
        column = _longest(parts, _ORDER_BY_PATH)
        row = self.value_rows.get(column or "", self.first_row)
        return RowProblem(row, problem.pointer, problem.detail, column)


def _longest(parts: tuple[str, ...], by_path: Mapping[tuple[str, ...], str]) -> str | None:
    for end in range(len(parts), 0, -1):
        column = by_path.get(parts[:end])
        if column is not None:
            return column
    return None


def csv_document(order: CsvOrder) -> CsvDocument:
    """The order document of one order's rows."""
    document: dict[str, Any] = {}
    problems: list[RowProblem] = []
    first: dict[str, tuple[int, str]] = {}
    for row in order.rows:
        for column, path in ORDER_COLUMNS.items():
            value = row.values.get(column, "").strip()
            if not value:
                continue
            if column not in first:
                first[column] = (row.number, value)
                _put(document, path, value)
            elif first[column][1] != value:
                earlier_row, earlier = first[column]
                problems.append(
                    RowProblem(
                        row.number,
                        pointer(path),
                        f"{column} is {value!r} here but {earlier!r} on row {earlier_row}; "
                        "the rows of one order must agree on its columns",
                        column,
                    )
                )
    lines: list[dict[str, Any]] = []
    line_rows: list[int] = []
    for row in order.rows:
        line: dict[str, Any] = {}
        for column, path in LINE_COLUMNS.items():
            value = row.values.get(column, "").strip()
            if not value:
                continue
            if column == "line_attributes":
                try:
                    _put(line, path, _attributes(value))
                except ValueError as exc:
                    problems.append(
                        RowProblem(
                            row.number,
                            f"/lines/{len(lines)}/attributes",
                            f"line_attributes {exc}: write name=value; name=value, or a "
                            "JSON object",
                            column,
                        )
                    )
                continue
            _put(line, path, value)
        if line:
            lines.append(line)
            line_rows.append(row.number)
    if lines:
        document["lines"] = lines
    return CsvDocument(
        document=document,
        problems=problems,
        first_row=order.rows[0].number,
        value_rows={column: n for column, (n, _) in first.items()},
        line_rows=line_rows,
    )


# --- JSON Lines ---------------------------------------------------------------------------


def jsonl_document(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """A line's order document, or why it is not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(value, dict):
        return None, f"an order document is a JSON object, not {type(value).__name__}"
    return value, None
