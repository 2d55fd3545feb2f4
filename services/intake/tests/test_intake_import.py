"""Bulk intake against the real broker and database: 1,000 rows with a handful of bad ones,
in JSON Lines and in CSV; the report names exactly the bad rows, the good ones are
submitted like any other order."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI

from intake import bulk
from orderflow import topology
from orderflow.messages import OrderSubmitted
from orderflow_testkit.testing import eventually, get_messages, queue_depth

JSONL = {"content-type": "application/x-ndjson"}
CSV = {"content-type": "text/csv; charset=utf-8"}


async def import_body(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], chunk: int = 64 * 1024
) -> tuple[dict[str, Any], float]:
    """Send the body in chunks, as a large upload arrives; the report and the seconds taken."""

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), chunk):
            yield body[start : start + chunk]

    started = time.perf_counter()
    response = await client.post(
        "/api/v1/orders/import", content=stream(), headers=headers, timeout=120
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report, elapsed


def numbered(document: dict[str, Any], n: int) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    copy["external_ref"] = f"MIG-{n:05d}"
    return copy


async def test_a_thousand_json_lines_with_a_handful_of_bad_ones(
    app: tuple[FastAPI, httpx.AsyncClient],
    amqp: Any,
    product_order: dict[str, Any],
    service_order: dict[str, Any],
) -> None:
    _, client = app
    lines = [
        json.dumps(numbered(product_order if n % 2 else service_order, n), ensure_ascii=False)
        for n in range(1, 1001)
    ]
    # the bad rows, and exactly what is wrong with each
    lines[6] = '{"order_type": "product", '  # row 7: cut off
    bad = numbered(product_order, 250)
    bad["lines"][1]["quantity"] = "four hundred"
    bad["colour"] = "red"
    lines[249] = json.dumps(bad, ensure_ascii=False)  # row 250: not an order document
    bad = numbered(service_order, 251)
    del bad["customer"]["name"]
    bad["delivery"]["date"] = "2026-01-01"
    lines[250] = json.dumps(bad, ensure_ascii=False)  # row 251: fails the self-check
    lines[599] = "[1, 2, 3]"  # row 600: not an object
    bad = numbered(product_order, 999)
    bad["order_type"] = "custom"
    bad["customer_confirmation"]["method"] = "phone"
    lines[998] = json.dumps(bad, ensure_ascii=False)  # row 999: unconfirmed custom order
    lines.insert(500, "")  # a blank line is skipped (and counted as a line: row 501)
    body = ("\n".join(lines) + "\n").encode()

    report, elapsed = await import_body(client, body, JSONL)
    print(f"\nJSON Lines import: 1000 rows, {len(body)} bytes, {elapsed:.2f} s")
    assert report["format"] == "jsonl"
    assert report["rows"] == 1000
    assert (report["accepted"], report["rejected"]) == (995, 5)
    assert report["stopped"] is None
    problems = {
        r["row"]: [(p["row"], p["pointer"]) for p in r["problems"]] for r in report["rejections"]
    }
    assert problems == {
        7: [(7, "/")],
        250: [(250, "/lines/1/quantity"), (250, "/colour")],
        251: [(251, "/customer/name"), (251, "/delivery/date")],
        601: [(601, "/")],
        # submitted in one step, by the same rules as from a draft: it has no files
        1000: [
            (1000, "/technical_requirements"),
            (1000, "/customer_confirmation/attachment_id"),
            (1000, "/attachments"),
        ],
    }
    details = {r["row"]: r["problems"][0]["detail"] for r in report["rejections"]}
    assert details[7].startswith("not valid JSON")
    assert "not list" in details[601]
    unconfirmed = report["rejections"][-1]["problems"][1]["detail"]
    assert "a custom order needs the customer's written confirmation on file" in unconfirmed
    assert "by phone is not enough" in unconfirmed
    assert [r["rows"] for r in report["rejections"]] == [[7], [250], [251], [601], [1000]]

    accepted = report["orders"]
    assert len(accepted) == 995 and len({o["order_id"] for o in accepted}) == 995
    assert accepted[0]["row"] == 1 and accepted[-1]["row"] == 1001
    assert elapsed < 30, f"1,000 rows took {elapsed:.1f} s"

    # submitted like any other order: in review's queue, channel `import`
    order = (await client.get(f"/api/v1/orders/{accepted[0]['order_id']}")).json()
    assert order["status"] in ("submitted", "in_review")
    assert order["channel"] == "import"
    assert order["external_ref"] == "MIG-00001"
    page = (await client.get("/api/v1/orders", params={"limit": 1})).json()
    assert page["total"] == 995

    async def all_routed() -> bool:
        return await queue_depth(amqp, topology.ROUTER_SUBMITTED.name) == 995

    await eventually(all_routed, timeout=60)
    [first] = await get_messages(amqp, topology.ROUTER_SUBMITTED.name, 1)
    assert OrderSubmitted.model_validate_json(first.body).channel == "import"

    # the same file again: nothing is silently doubled, every order is flagged
    again, _ = await import_body(client, "\n".join(lines[:3]).encode(), JSONL)
    assert [o["possible_duplicate_of"] for o in again["orders"]] == [
        [o["order_id"]] for o in accepted[:3]
    ]


def csv_rows(document: dict[str, Any], ref: str) -> list[dict[str, str]]:
    """An order document as CSV rows: its columns on the first row, one row per line."""

    def get(node: Any, path: tuple[str, ...]) -> str:
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return ""
            node = node[part]
        if node is None:
            return ""
        if isinstance(node, dict):
            return "; ".join(f"{k}={v}" for k, v in node.items())
        return str(node)

    rows = []
    for index, line in enumerate(document["lines"]):
        row = {"order_ref": ref}
        if index == 0:
            row |= {c: get(document, p) for c, p in bulk.ORDER_COLUMNS.items()}
        row |= {c: get(line, p) for c, p in bulk.LINE_COLUMNS.items()}
        rows.append(row)
    return rows


def to_csv(rows: list[dict[str, str]], delimiter: str = ",") -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(
        out,
        fieldnames=["order_ref", *bulk.ORDER_COLUMNS, *bulk.LINE_COLUMNS],
        delimiter=delimiter,
        lineterminator="\r\n",
    )
    writer.writeheader()
    writer.writerows(rows)
    return "\ufeff".encode() + out.getvalue().encode()


async def test_a_thousand_csv_rows_grouped_into_orders(
    app: tuple[FastAPI, httpx.AsyncClient],
    product_order: dict[str, Any],
    service_order: dict[str, Any],
) -> None:
    _, client = app
    rows: list[dict[str, str]] = []
    first_row_of: dict[str, int] = {}
    n = 0
    while len(rows) < 1000:
        n += 1
        ref = f"A{n:04d}"
        first_row_of[ref] = len(rows) + 2
        document = numbered(product_order if n % 3 else service_order, n)
        rows.extend(csv_rows(document, ref))
    rows = rows[:1000]
    last_ref = rows[-1]["order_ref"]
    if rows[-2]["order_ref"] != last_ref and n % 3:
        rows.pop()  # a product order cut in half at the end would be an order of one line

    def row(number: int) -> dict[str, str]:
        return rows[number - 2]

    # the bad rows: a quantity that is no number on the second line of an order
    row(first_row_of["A0010"] + 1)["line_quantity"] = "viele"
    # a currency that disagrees with the order's first row
    row(first_row_of["A0100"] + 1)["currency"] = "USD"
    # no order_ref
    row(first_row_of["A0200"])["order_ref"] = ""
    # a line's attributes written wrong
    row(first_row_of["A0301"])["line_attributes"] = "material: steel"
    # a note over two lines, quoted: fine
    row(first_row_of["A0400"])["notes"] = "分两批发货\n第一批 3 月"
    body = to_csv(rows)

    report, elapsed = await import_body(client, body, CSV, chunk=4096)
    print(f"\nCSV import: {len(rows)} rows, {len(body)} bytes, {elapsed:.2f} s")
    assert report["format"] == "csv"
    assert report["rows"] == len(rows)
    refused = {
        r["order_ref"]: (r["rows"], [(p["row"], p["column"], p["pointer"]) for p in r["problems"]])
        for r in report["rejections"]
    }
    a10, a100, a200, a301 = (first_row_of[r] for r in ("A0010", "A0100", "A0200", "A0301"))
    assert refused == {
        "A0010": ([a10, a10 + 1], [(a10 + 1, "line_quantity", "/lines/1/quantity")]),
        "A0100": ([a100, a100 + 1], [(a100 + 1, "currency", "/currency")]),
        # without its order_ref, the first row stands alone; the order's second row is then
        # an order of its own that lacks everything its first row had
        None: ([a200], [(a200, "order_ref", "/")]),
        "A0301": ([a301, a301 + 1], [(a301, "line_attributes", "/lines/0/attributes")]),
    } | {"A0200": refused["A0200"]}
    assert refused["A0200"][0] == [a200 + 1]
    assert {p[2] for p in refused["A0200"][1]} >= {"/order_type", "/salesperson"}
    assert report["rejected"] == 5
    orders = len(first_row_of)
    assert report["accepted"] == orders - 4
    assert elapsed < 30, f"{len(rows)} rows took {elapsed:.1f} s"

    imported = {o["order_ref"]: o for o in report["orders"]}
    noted = (await client.get(f"/api/v1/orders/{imported['A0400']['order_id']}")).json()
    assert noted["document"]["notes"] == "分两批发货\n第一批 3 月"
    product = (await client.get(f"/api/v1/orders/{imported['A0001']['order_id']}")).json()
    assert product["document"]["lines"][0]["attributes"] == {
        "material": "304 不锈钢",
        "size": "DN50",
        "colour": "本色",
    }
    assert product["totals"]["total"] == "20769.40"
    assert imported["A0001"]["rows"] == [2, 3]


async def test_csv_mistakes_in_the_file_itself(
    client: httpx.AsyncClient, product_order: dict[str, Any]
) -> None:
    rows = csv_rows(numbered(product_order, 1), "A") + csv_rows(numbered(product_order, 2), "B")
    rows += csv_rows(numbered(product_order, 3), "A")  # A again, after B
    body = to_csv(rows, delimiter=";")
    report, _ = await import_body(client, body, CSV)
    assert report["accepted"] == 2
    [late] = report["rejections"]
    assert late["rows"] == [6, 7] and late["order_ref"] == "A"
    assert late["problems"] == [
        {
            "row": 6,
            "column": "order_ref",
            "pointer": "/",
            "detail": "the rows of order 'A' must follow each other; it started on row 2 and "
            "other orders came between",
        }
    ]
    assert report["rows"] == 6

    header = await client.post(
        "/api/v1/orders/import", content=b"order_ref,colour\nA,red\n", headers=CSV
    )
    assert header.status_code == 422
    assert "'colour'" in header.json()["detail"]
    assert header.json()["errors"][0]["pointer"] == "/header"

    neither = await client.post(
        "/api/v1/orders/import", content=b"{}", headers={"content-type": "application/json"}
    )
    assert neither.status_code == 415
