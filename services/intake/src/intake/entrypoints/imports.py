"""Bulk intake over HTTP: a CSV or JSON Lines body, read as it streams in, one order at a
time, each in its own transaction, answered with a report of every accepted order and
every refused row. The formats are described in `intake.bulk`."""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal
from uuid import UUID

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from orderflow.auth import Caller
from orderflow.db import Pool
from orderflow.http import Problem, ProblemDetails
from orderflow.messages import OrderDocument
from orderflow.messages import Problem as FieldProblem

from .. import bulk, domain, handlers
from .access import Db, Today, Writer, salesperson_refusal
from .http import PROBLEMS

log = structlog.get_logger(__name__)

#: A longer row is refused on its own: a sane order never needs a megabyte.
MAX_ROW_BYTES = 1 << 20

CSV_TYPES = frozenset({"text/csv", "application/csv"})
JSONL_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
        "application/json-lines",
    }
)


class RowProblem(BaseModel):
    row: int = Field(
        description="The row: the line of a JSON Lines file; in CSV, row 1 is the header"
    )
    column: str | None = Field(default=None, description="The CSV column, when known")
    pointer: str = Field(description="JSON pointer into the order document")
    detail: str


class ImportedOrder(BaseModel):
    row: int = Field(description="The order's first row")
    rows: list[int]
    order_ref: str | None = Field(default=None, description="The CSV order_ref")
    order_id: UUID
    revision: int
    possible_duplicate_of: list[UUID] = Field(default_factory=list)


class RefusedOrder(BaseModel):
    row: int = Field(description="The order's first row")
    rows: list[int] = Field(description="Every row of the order, none of which was imported")
    order_ref: str | None = None
    problems: list[RowProblem] = Field(description="Every problem, with its row and field")


class ImportReport(BaseModel):
    format: Literal["csv", "jsonl"]
    rows: int = Field(description="Data rows read (CSV: without the header)")
    accepted: int
    rejected: int
    orders: list[ImportedOrder] = Field(description="The orders created and submitted")
    rejections: list[RefusedOrder] = Field(description="The orders refused, and why")
    stopped: str | None = Field(
        default=None, description="Why reading stopped before the end of the body, if it did"
    )
    seconds: float = Field(description="How long the import took")


class ImportTooLarge(Exception):
    pass


CSV_COLUMNS = (
    "**CSV**: UTF-8, separated by commas, semicolons or tabs, a header row first (row 1). "
    "One row per order line; the rows of one order share its `order_ref` and follow each "
    "other. The order's columns may be filled on its first row only, or repeated on every "
    "row, but must not disagree. Every column but `order_ref` is optional in the file; "
    "what the self-check needs must be there for the order to go in. Columns:\n\n"
    + bulk.columns_table()
)


IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "CSV (text/csv, one row per order line, rows of an order grouped by "
        "order_ref) or JSON Lines (application/x-ndjson, one order document per line)\n\n"
        + CSV_COLUMNS,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}

router = APIRouter(prefix="/api/v1", tags=["import"], responses=PROBLEMS)


async def _lines(
    stream: AsyncIterator[bytes], *, limit: int
) -> AsyncIterator[tuple[int, bytes | None]]:
    """Physical lines (1-based) as they arrive, without their line break; None for a line
    longer than MAX_ROW_BYTES, whose bytes are skipped."""
    buffer = bytearray()
    number = 0
    skipping = False
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise ImportTooLarge
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not skipping:
                    buffer += chunk[start:]
                    if len(buffer) > MAX_ROW_BYTES:
                        skipping = True
                        buffer.clear()
                break
            number += 1
            if skipping:
                yield number, None
                skipping = False
            else:
                buffer += chunk[start:end]
                yield number, bytes(buffer.removesuffix(b"\r"))
            buffer.clear()
            start = end + 1
    if skipping:
        yield number + 1, None
    elif buffer:
        yield number + 1, bytes(buffer.removesuffix(b"\r"))


def _decode(raw: bytes, first: bool) -> str:
    text = raw.decode("utf-8")
    return text.removeprefix("\ufeff") if first else text


#: Orders placed at the same time during an import: enough to overlap the database round
#: trips, few enough to leave connections to the bus consumers.
CONCURRENT_ORDERS = 4


@dataclass
class _Importer:
    pool: Pool
    today: date
    report: ImportReport
    caller: Caller
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENT_ORDERS))
    _running: set[asyncio.Task[None]] = field(default_factory=set)

    async def order(
        self,
        *,
        document: dict[str, Any] | None,
        problems: list[bulk.RowProblem],
        rows: list[int],
        order_ref: str | None,
        locate: Callable[[FieldProblem], bulk.RowProblem],
    ) -> None:
        """Check an order's document and place it, or report why not. Waits while as many
        orders as allowed are being placed, so the rows never pile up in memory."""
        parsed = None
        if document is not None:
            try:
                parsed = handlers.parsed_document(document, today=self.today, submit=True)
            except domain.SelfCheckFailed as exc:
                # the type errors and the rules over the rest, as one submission lists them
                problems = problems + [locate(p) for p in exc.problems]
        if parsed is not None:
            refused = salesperson_refusal(self.caller, parsed.salesperson.id)
            problems = problems + ([locate(refused)] if refused else [])
        if parsed is None or problems:
            self._refuse(rows, order_ref, problems)
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._place(parsed, rows, order_ref, locate))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _place(
        self,
        document: OrderDocument,
        rows: list[int],
        order_ref: str | None,
        locate: Callable[[FieldProblem], bulk.RowProblem],
    ) -> None:
        try:
            outcome = await handlers.import_order(
                self.pool, document=document, today=self.today, actor=self.caller.audit()
            )
        finally:
            self._slots.release()
        if isinstance(outcome, handlers.Outcome):
            self.report.accepted += 1
            self.report.orders.append(
                ImportedOrder(
                    row=rows[0],
                    rows=rows,
                    order_ref=order_ref,
                    order_id=outcome.order_id,
                    revision=outcome.revision,
                    possible_duplicate_of=outcome.possible_duplicate_of,
                )
            )
        else:
            self._refuse(rows, order_ref, [locate(p) for p in outcome])

    def _refuse(
        self, rows: list[int], order_ref: str | None, problems: list[bulk.RowProblem]
    ) -> None:
        self.report.rejected += 1
        self.report.rejections.append(
            RefusedOrder(
                row=rows[0],
                rows=rows,
                order_ref=order_ref,
                problems=[
                    RowProblem(row=p.row, column=p.column, pointer=p.pointer, detail=p.detail)
                    for p in problems
                ],
            )
        )

    async def finish(self) -> None:
        """Wait for the orders still being placed; then the report in row order."""
        await asyncio.gather(*self._running)
        self.report.orders.sort(key=lambda o: o.row)
        self.report.rejections.sort(key=lambda r: r.row)


async def _jsonl(lines: AsyncIterator[tuple[int, bytes | None]], importer: _Importer) -> None:
    async for number, raw in lines:

        def here(p: FieldProblem, n: int = number) -> bulk.RowProblem:
            return bulk.RowProblem(n, p.pointer, p.detail)

        if raw is None:
            importer.report.rows += 1
            await importer.order(
                document=None,
                problems=[bulk.RowProblem(number, "/", f"longer than {MAX_ROW_BYTES} bytes")],
                rows=[number],
                order_ref=None,
                locate=here,
            )
            continue
        error: str | None = None
        try:
            text = _decode(raw, number == 1)
        except UnicodeDecodeError:
            text, error = "", "not UTF-8 text"
        if not text.strip() and error is None:
            continue
        importer.report.rows += 1
        document = None
        if error is None:
            document, error = bulk.jsonl_document(text)
        await importer.order(
            document=document,
            problems=[bulk.RowProblem(number, "/", error)] if error else [],
            rows=[number],
            order_ref=None,
            locate=here,
        )


class _CsvReader:
    """The CSV import as it streams in: physical lines joined into records (a quoted cell
    may span lines), the header first, then rows grouped into orders by `order_ref`; each
    order goes to the importer once its rows end."""

    def __init__(self, importer: _Importer) -> None:
        self.importer = importer
        self.header: list[str] | None = None
        self.dialect: type[csv.Dialect] | None = None
        self.record: list[str] = []
        self.quotes = 0
        self.row = 0
        self.group: bulk.CsvOrder | None = None
        #: the row each order started on; those whose rows came back after another order
        self.seen: dict[str, int] = {}
        self.late: dict[str, int] = {}

    async def feed(self, raw: bytes | None) -> None:
        """One physical line (None: one too long to read)."""
        if raw is None:
            self.row += 1
            await self.refuse_row(f"longer than {MAX_ROW_BYTES} bytes")
            return
        try:
            text = _decode(raw, self.row == 0 and not self.record)
        except UnicodeDecodeError:
            self.row += 1
            await self.refuse_row("not UTF-8 text")
            return
        self.record.append(text)
        self.quotes += text.count('"')
        if self.quotes % 2:
            # a quoted cell goes on over the line break
            return
        self.row += 1
        lines_of_record, self.record, self.quotes = self.record, [], 0
        if self.header is None:
            self.read_header(lines_of_record)
        else:
            await self.read_row(lines_of_record, self.header)

    def read_header(self, lines_of_record: list[str]) -> None:
        self.dialect = bulk.dialect_of(lines_of_record[0])
        try:
            self.header = bulk.normalise_header(bulk.parse_record(lines_of_record, self.dialect))
            problems = bulk.header_problems(self.header)
        except csv.Error as exc:
            problems = [f"row 1 is not a CSV header: {exc}"]
        if problems:
            raise Problem(
                422,
                "Not an order import",
                "; ".join(problems),
                type_="urn:orderflow:problem:invalid-import",
                errors=[FieldProblem(pointer="/header", detail=p) for p in problems],
            )

    async def read_row(self, lines_of_record: list[str], header: list[str]) -> None:
        assert self.dialect is not None
        try:
            cells = bulk.parse_record(lines_of_record, self.dialect)
        except csv.Error as exc:  # a NUL byte, a stray quote
            await self.refuse_row(f"not a CSV record: {exc}")
            return
        if not any(c.strip() for c in cells):
            return
        if len(cells) > len(header):
            await self.refuse_row(f"{len(cells)} cells but the header has {len(header)} columns")
            return
        values = dict(zip(header, cells, strict=False))
        ref = values.get(bulk.REF_COLUMN, "").strip()
        if not ref:
            await self.refuse_row(
                "order_ref is required: it groups the rows of an order", "order_ref"
            )
            return
        if self.group is not None and ref == self.group.ref:
            self.importer.report.rows += 1
            self.group.rows.append(bulk.CsvRow(self.row, values))
            return
        await self.flush()
        if ref in self.seen:
            self.late[ref] = self.seen[ref]
        else:
            self.seen[ref] = self.row
        self.importer.report.rows += 1
        self.group = bulk.CsvOrder(ref, [bulk.CsvRow(self.row, values)])

    async def flush(self) -> None:
        """The order whose rows just ended, to the importer."""
        group = self.group
        if group is None:
            return
        if group.ref in self.late:
            # rows of an order already read: refused together, never a second order
            first = group.rows[0].number
            await self.importer.order(
                document=None,
                problems=[
                    bulk.RowProblem(
                        first,
                        "/",
                        f"the rows of order {group.ref!r} must follow each other; it started "
                        f"on row {self.late[group.ref]} and other orders came between",
                        bulk.REF_COLUMN,
                    )
                ],
                rows=group.numbers,
                order_ref=group.ref,
                locate=lambda p: bulk.RowProblem(first, p.pointer, p.detail),
            )
            return
        built = bulk.csv_document(group)
        await self.importer.order(
            document=built.document,
            problems=built.problems,
            rows=group.numbers,
            order_ref=group.ref,
            locate=built.locate,
        )

    async def refuse_row(self, detail: str, column: str | None = None) -> None:
        number = self.row
        self.importer.report.rows += 1
        await self.importer.order(
            document=None,
            problems=[bulk.RowProblem(number, "/", detail, column)],
            rows=[number],
            order_ref=None,
            locate=lambda p: bulk.RowProblem(number, p.pointer, p.detail),
        )

    async def finish(self) -> None:
        await self.flush()
        if self.record:
            self.row += 1
            await self.refuse_row("a quoted cell is never closed")


async def _csv(lines: AsyncIterator[tuple[int, bytes | None]], importer: _Importer) -> None:
    reader = _CsvReader(importer)
    async for _, raw in lines:
        await reader.feed(raw)
    await reader.finish()


@router.post(
    "/orders/import",
    response_model=ImportReport,
    openapi_extra=IMPORT_BODY,
    responses={
        413: {"model": ProblemDetails, "description": "The body is over the size limit"},
        415: {"model": ProblemDetails, "description": "Neither CSV nor JSON Lines"},
    },
)
async def import_orders(request: Request, caller: Writer, pool: Db, today: Today) -> ImportReport:
    """Import many orders at once (CSV or JSON Lines): each valid one is created and
    submitted (channel `import`), each invalid one reported with its rows and every
    problem, type errors and the self-check's together; one bad row never holds back the
    others. An order is submitted in one step, so it meets the same rules as any
    submission with no files: one that needs a file (technical requirements, a custom
    order, the written confirmation of an important order) is refused naming the field.
    An order for a salesperson the caller may not act for is refused in the report
    (/salesperson/id), the others go in. The CSV columns are listed with the request
    body; the guide is docs/integration.md, "Bulk import"."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in CSV_TYPES:
        kind: Literal["csv", "jsonl"] = "csv"
    elif media in JSONL_TYPES:
        kind = "jsonl"
    else:
        raise Problem(
            415,
            "Send CSV or JSON Lines",
            f"Content-Type {media or 'missing'}: send text/csv or application/x-ndjson",
            type_="urn:orderflow:problem:unsupported-media-type",
        )
    limit = int(request.app.state.settings.max_import_bytes)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _import_too_large(limit)
    started = time.perf_counter()
    report = ImportReport(
        format=kind, rows=0, accepted=0, rejected=0, orders=[], rejections=[], seconds=0
    )
    importer = _Importer(pool=pool, today=today, report=report, caller=caller)
    lines = _lines(request.stream(), limit=limit)
    try:
        try:
            await (_csv(lines, importer) if kind == "csv" else _jsonl(lines, importer))
        finally:
            await importer.finish()
    except ImportTooLarge:
        # what was imported stays imported; the report says where it stopped
        report.stopped = (
            f"the body is larger than {limit} bytes; rows after row {report.rows} were not read"
        )
    report.seconds = round(time.perf_counter() - started, 3)
    log.info(
        "import done",
        format=kind,
        rows=report.rows,
        accepted=report.accepted,
        rejected=report.rejected,
        seconds=report.seconds,
    )
    return report


def _import_too_large(limit: int) -> Problem:
    return Problem(
        413,
        "Import too large",
        f"an import may have at most {limit} bytes; split the file",
        type_="urn:orderflow:problem:import-too-large",
        extra={"limit": limit},
    )
