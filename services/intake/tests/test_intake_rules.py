"""Intake's rules for files, the customer's confirmation, revisions and their differences,
the ETag, duplicates, withdrawal, the timeline and bulk imports; without I/O."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from intake import bulk, domain
from intake.domain import Status
from orderflow.messages import AttachmentRef, FieldChange, OrderDocument, Problem

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"
TODAY = date(2026, 12, 1)
ORDER_ID = "0193b2f4-5a10-7d22-8e0b-6b2c1e4a7f01"


def load(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8")))


def file(kind: str, number: int, name: str = "file.pdf") -> AttachmentRef:
    attachment_id = f"00000000-0000-4000-8000-{number:012d}"
    return AttachmentRef(
        id=attachment_id,
        name=name,
        kind=kind,
        content_type="application/pdf",
        size=1000 + number,
        sha256=f"{number:064x}",
        download_path=f"/api/v1/orders/{ORDER_ID}/attachments/{attachment_id}",
    )


SPEC = file("requirements_spec", 1, "需求规格书.pdf")
DRAWING = file("drawing", 2, "图纸.pdf")
CONFIRMATION = file("customer_confirmation", 3, "客户确认函.pdf")
CONTRACT = file("contract", 4, "合同.pdf")


def problems_of(
    document: dict[str, Any], attachments: list[AttachmentRef] | None
) -> list[tuple[str, str]]:
    found = domain.self_check(
        OrderDocument.model_validate(document), today=TODAY, attachments=attachments or []
    )
    return [(p.pointer, p.detail) for p in found]


def pointers(document: dict[str, Any], attachments: list[AttachmentRef] | None) -> list[str]:
    return [pointer for pointer, _ in problems_of(document, attachments)]


# ---------------------------------------------------------------------------------------
# the self-check's file and confirmation rules


def custom(document: dict[str, Any]) -> dict[str, Any]:
    document["order_type"] = "custom"
    return document


def without_technical_requirements(document: dict[str, Any]) -> dict[str, Any]:
    del document["technical_requirements"]
    return document


def confirmed(method: str, attachment: AttachmentRef | None = None) -> Any:
    def mutate(document: dict[str, Any]) -> dict[str, Any]:
        document["customer_confirmation"]["method"] = method
        if attachment is not None:
            document["customer_confirmation"]["attachment_id"] = str(attachment.id)
        return document

    return mutate


def big(document: dict[str, Any]) -> dict[str, Any]:
    """The product example at 100 000.00 CNY exactly (tax exempt)."""
    document["lines"] = document["lines"][:1]
    document["lines"][0]["quantity"] = "1000"
    document["lines"][0]["unit_price"] = "100.00"
    document["tax_rate"] = "0"
    return document


def chain(*steps: Any) -> Any:
    def mutate(document: dict[str, Any]) -> dict[str, Any]:
        for step in steps:
            document = step(document)
        return document

    return mutate


def same(document: dict[str, Any]) -> dict[str, Any]:
    return document


# (name, example, mutation, files (None: submitted in one step, so none), expected pointers)
FILE_CASES: list[tuple[str, str, Any, list[AttachmentRef] | None, list[str]]] = [
    ("technical requirements without a specification", "order-product", same, [], ["/attachments"]),
    ("a drawing is not the specification", "order-product", same, [DRAWING], ["/attachments"]),
    ("technical requirements with the specification", "order-product", same, [SPEC], []),
    ("no technical requirements, no file needed", "order-service", same, [], []),
    (
        "custom order with neither drawing nor specification (and a confirmation on file)",
        "order-product",
        chain(custom, confirmed("signed_reply", CONFIRMATION)),
        [CONFIRMATION, CONTRACT],
        ["/attachments", "/attachments"],
    ),
    (
        "custom order with a drawing still needs the specification of its requirements",
        "order-product",
        chain(custom, confirmed("signed_reply", CONFIRMATION)),
        [DRAWING, CONFIRMATION],
        ["/attachments"],
    ),
    (
        "custom order with its specification",
        "order-product",
        chain(custom, confirmed("signed_reply", CONFIRMATION)),
        [SPEC, CONFIRMATION],
        [],
    ),
    # the customer's confirmation (process 2.1)
    (
        "custom order confirmed by phone, nothing on file",
        "order-product",
        chain(custom, confirmed("phone")),
        [SPEC],
        ["/customer_confirmation/attachment_id"],
    ),
    (
        "custom order confirmed by email, the email not on file",
        "order-product",
        chain(custom, confirmed("email")),
        [SPEC, CONFIRMATION],
        ["/customer_confirmation/attachment_id"],
    ),
    (
        "custom order confirmed by phone, the written confirmation on file",
        "order-product",
        chain(custom, confirmed("phone", CONFIRMATION)),
        [SPEC, CONFIRMATION],
        [],
    ),
    (
        "a total at the threshold needs the written confirmation",
        "order-product",
        chain(big, confirmed("in_person")),
        [SPEC],
        ["/customer_confirmation/attachment_id"],
    ),
    (
        "a total at the threshold, confirmation on file",
        "order-product",
        chain(big, confirmed("in_person", CONFIRMATION)),
        [SPEC, CONFIRMATION],
        [],
    ),
    (
        "a small order confirmed by phone is fine",
        "order-product",
        confirmed("phone"),
        [SPEC],
        [],
    ),
    (
        "the named confirmation is not a file of the revision",
        "order-product",
        confirmed("email", CONFIRMATION),
        [SPEC],
        ["/customer_confirmation/attachment_id"],
    ),
    (
        "the named confirmation is a drawing",
        "order-product",
        confirmed("email", DRAWING),
        [SPEC, DRAWING],
        ["/customer_confirmation/attachment_id"],
    ),
    (
        "when and by whom",
        "order-service",
        lambda d: {
            **d,
            "customer_confirmation": {"method": "email"},
        },
        [],
        ["/customer_confirmation/confirmed_at", "/customer_confirmation/confirmed_by"],
    ),
    # submitted in one step: no file, and the same rules as from a draft
    (
        "one step: technical requirements need the specification all the same",
        "order-product",
        same,
        None,
        ["/attachments"],
    ),
    (
        "one step: without technical requirements no file is needed",
        "order-product",
        without_technical_requirements,
        None,
        [],
    ),
    (
        "one step: a custom order confirmed in writing still needs its files",
        "order-product",
        chain(custom, confirmed("signed_reply")),
        None,
        ["/customer_confirmation/attachment_id", "/attachments", "/attachments"],
    ),
    (
        "one step: a large order needs its written confirmation on file",
        "order-product",
        chain(without_technical_requirements, big, confirmed("email")),
        None,
        ["/customer_confirmation/attachment_id"],
    ),
    (
        "one step: a named confirmation cannot exist",
        "order-product",
        chain(without_technical_requirements, confirmed("email", CONFIRMATION)),
        None,
        ["/customer_confirmation/attachment_id"],
    ),
]


@pytest.mark.parametrize(
    ("example", "mutation", "files", "expected"),
    [pytest.param(ex, m, f, exp, id=name) for name, ex, m, f, exp in FILE_CASES],
)
def test_file_and_confirmation_rules(
    example: str, mutation: Any, files: list[AttachmentRef] | None, expected: list[str]
) -> None:
    assert pointers(mutation(load(example)), files) == expected


def test_file_problems_say_what_to_upload() -> None:
    document = chain(custom, confirmed("phone"))(load("order-product"))
    found = dict(problems_of(without_technical_requirements(document), [CONTRACT]))
    assert found.keys() == {
        "/technical_requirements",
        "/customer_confirmation/attachment_id",
        "/attachments",
    }
    assert "drawing or requirement specification" in found["/attachments"]
    assert "requirements_spec" in found["/attachments"]
    detail = found["/customer_confirmation/attachment_id"]
    assert "a custom order" in detail and "by phone is not enough" in detail
    assert "customer_confirmation" in detail

    large = dict(problems_of(chain(big, confirmed("in_person"))(load("order-product")), [SPEC]))
    assert "100000.00 CNY (from 100000.00 CNY)" in large["/customer_confirmation/attachment_id"]

    named = dict(problems_of(confirmed("email", DRAWING)(load("order-product")), [SPEC, DRAWING]))
    assert "'图纸.pdf' is attached as drawing" in named["/customer_confirmation/attachment_id"]


@pytest.mark.parametrize(
    ("currency", "total", "important"),
    [
        ("CNY", "99999.99", False),
        ("CNY", "100000.00", True),
        ("USD", "14999.99", False),
        ("USD", "15000.00", True),
        ("CHF", "10.00", True),  # no agreed threshold: every order
        ("XYZ", "10.00", False),  # not a currency at all: reported as such
    ],
)
def test_which_orders_are_important(currency: str, total: str, important: bool) -> None:
    document = load("order-service")
    document["currency"] = currency
    document["tax_rate"] = "0"
    document["lines"][0]["unit_price"] = total
    order = OrderDocument.model_validate(document)
    assert (domain.important_because(order) is not None) is important
    order.order_type = domain.OrderType.CUSTOM
    assert domain.important_because(order) == "a custom order"


# ---------------------------------------------------------------------------------------
# file names and types


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("drawing.pdf", "drawing.pdf"),
        ("技术图纸 v2.pdf", "技术图纸 v2.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\x.pdf", "x.pdf"),
        ("C:\\Users\\li\\需求.docx", "需求.docx"),
        ("/abs/path/spec.pdf", "spec.pdf"),
        ("..", ""),
        ("./..", ""),
        (".htaccess", "htaccess"),
        ("a..b...pdf", "a.b.pdf"),
        ("bad\x00name\x1f.pdf", "badname.pdf"),
        ("inv\u202eoice.pdf", "invoice.pdf"),  # a right-to-left override disguises names
        ('what?<>:"|*.pdf', "what_______.pdf"),
        ("  spaced   out  .pdf ", "spaced out.pdf"),
        ("CON.pdf", "_CON.pdf"),
        ("lpt1", "_lpt1"),
        ("console.pdf", "console.pdf"),
        ("", ""),
        (None, ""),
    ],
)
def test_file_names_are_sanitised(raw: str | None, expected: str) -> None:
    assert domain.sanitise_filename(raw) == expected


def test_long_file_names_keep_their_extension_within_the_limits() -> None:
    name = domain.sanitise_filename("图" * 300 + ".pdf")
    assert name.endswith(".pdf")
    assert len(name) <= domain.MAX_NAME_CHARS
    assert len(name.encode()) <= domain.MAX_NAME_BYTES
    assert name == "图" * ((255 - 4) // 3) + ".pdf"
    ascii_name = domain.sanitise_filename("a" * 500 + ".docx")
    assert ascii_name == "a" * (200 - 5) + ".docx"


PDF = "application/pdf"
PNG = "image/png"

# (detected from the bytes, declared, file name) -> (stored type, stored name)
ACCEPTED = [
    (PDF, PDF, "spec.pdf", PDF, "spec.pdf"),
    (PDF, None, "spec.pdf", PDF, "spec.pdf"),
    (PDF, "application/octet-stream", "spec", PDF, "spec.pdf"),
    (PDF, "application/pdf; name=x", "spec.PDF", PDF, "spec.PDF"),
    (PNG, PNG, "照片.png", PNG, "照片.png"),
    ("image/jpeg", "image/jpg", "photo.jpeg", "image/jpeg", "photo.jpeg"),
    ("image/tiff", "image/tiff", "scan.tif", "image/tiff", "scan.tif"),
    (domain.DOCX, domain.DOCX, "需求.docx", domain.DOCX, "需求.docx"),
    (domain.XLSX, None, "报价.xlsx", domain.XLSX, "报价.xlsx"),
    ("image/vnd.dwg", "application/acad", "part.dwg", "image/vnd.dwg", "part.dwg"),
    ("image/vnd.dxf", "text/plain", "part.dxf", "image/vnd.dxf", "part.dxf"),
    ("text/plain", "text/plain", "notes.txt", "text/plain", "notes.txt"),
    ("text/plain", "text/csv", "bom.csv", "text/csv", "bom.csv"),
    ("text/plain", "application/vnd.ms-excel", "bom.csv", "text/csv", "bom.csv"),
    ("text/plain", None, "reply.eml", "text/plain", "reply.eml"),
    ("text/plain", "text/plain", "../../etc/passwd", "text/plain", "passwd.txt"),
    (PDF, PDF, "..", PDF, "attachment.pdf"),
    (PDF, PDF, "scan.dat", PDF, "scan.dat"),
]


@pytest.mark.parametrize(("detected", "declared", "name", "stored_type", "stored_name"), ACCEPTED)
def test_files_accepted(
    detected: str, declared: str | None, name: str, stored_type: str, stored_name: str
) -> None:
    accepted = domain.accept_file(detected=detected, declared=declared, filename=name)
    assert (accepted.content_type, accepted.name) == (stored_type, stored_name)


# (detected, declared, name) -> status
REFUSED = [
    (PNG, PDF, "drawing.pdf", 422),  # a PNG sent as a PDF
    (PNG, PNG, "drawing.pdf", 422),  # named as what it is not
    (PDF, "image/png", "drawing.png", 422),
    ("text/plain", PDF, "spec.pdf", 422),
    ("application/x-msdownload", PDF, "spec.pdf", 415),  # an executable renamed .pdf
    ("application/x-executable", None, "tool", 415),
    ("application/zip", "application/zip", "files.zip", 415),
    ("image/gif", "image/gif", "x.gif", 415),
    (None, PDF, "spec.pdf", 415),  # bytes of no known kind
    (PDF, PDF, "invoice.exe", 415),  # a real PDF, but a trap of a name
    ("text/plain", "text/plain", "run.bat", 415),
    ("text/plain", "text/html", "page.html", 415),
]


@pytest.mark.parametrize(("detected", "declared", "name", "status"), REFUSED)
def test_files_refused(detected: str | None, declared: str | None, name: str, status: int) -> None:
    with pytest.raises(domain.FileRefused) as caught:
        domain.accept_file(detected=detected, declared=declared, filename=name)
    assert caught.value.status == status
    assert caught.value.problems and all(p.pointer == "/file" for p in caught.value.problems)


def test_refusals_say_what_the_bytes_are() -> None:
    with pytest.raises(domain.FileRefused) as caught:
        domain.accept_file(detected=PNG, declared=PDF, filename="drawing.pdf")
    first, second = caught.value.problems
    assert "sent as application/pdf but its content is PNG" in first.detail
    assert "named *.pdf (PDF) but its content is PNG" in second.detail
    with pytest.raises(domain.FileRefused) as caught:
        domain.accept_file(detected="application/x-msdownload", declared=PDF, filename="a.pdf")
    [problem] = caught.value.problems
    assert "application/x-msdownload, which is not accepted" in problem.detail
    assert "PDF, PNG, JPEG" in problem.detail


# ---------------------------------------------------------------------------------------
# differences between revisions

DIFFS: list[tuple[str, Any, Any, list[tuple[str, Any, Any]]]] = [
    ("equal", {"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 2]}, []),
    ("a value", {"a": 1}, {"a": 2}, [("/a", 1, 2)]),
    ("null to a value", {"a": None}, {"a": "x"}, [("/a", None, "x")]),
    ("a value to null", {"a": "x"}, {"a": None}, [("/a", "x", None)]),
    ("key added", {"a": 1}, {"a": 1, "b": 2}, [("/b", None, 2)]),
    ("key removed", {"a": 1, "b": 2}, {"a": 1}, [("/b", 2, None)]),
    ("nested", {"p": {"t": "30%"}}, {"p": {"t": "50%"}}, [("/p/t", "30%", "50%")]),
    (
        "list item changed",
        {"l": [{"q": "1"}, {"q": "2"}]},
        {"l": [{"q": "1"}, {"q": "3"}]},
        [("/l/1/q", "2", "3")],
    ),
    ("list item added", {"l": [1]}, {"l": [1, {"x": 1}]}, [("/l/1", None, {"x": 1})]),
    ("list items removed", {"l": [1, 2, 3]}, {"l": [1]}, [("/l/1", 2, None), ("/l/2", 3, None)]),
    ("type changed", {"a": {"x": 1}}, {"a": [1]}, [("/a", {"x": 1}, [1])]),
    ("1 is not true", {"a": 1}, {"a": True}, [("/a", 1, True)]),
    ("1 is not 1.0", {"a": 1}, {"a": 1.0}, [("/a", 1, 1.0)]),
    (
        "keys escaped",
        {"a/b": 1, "c~d": 1},
        {"a/b": 2, "c~d": 2},
        [("/a~1b", 1, 2), ("/c~0d", 1, 2)],
    ),
    (
        "keys in sorted order, whatever order they came in",
        {"z": 1, "gone": 1, "a": 1},
        {"new": 1, "z": 2, "a": 2},
        [("/a", 1, 2), ("/gone", 1, None), ("/new", None, 1), ("/z", 1, 2)],
    ),
    ("whole value", 1, 2, [("/", 1, 2)]),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"), [pytest.param(o, n, e, id=name) for name, o, n, e in DIFFS]
)
def test_diff(old: Any, new: Any, expected: list[tuple[str, Any, Any]]) -> None:
    changes = domain.diff(old, new)
    assert [(c.pointer, c.old, c.new) for c in changes] == expected
    # the same values, the same answer
    assert domain.diff(copy.deepcopy(old), copy.deepcopy(new)) == changes


def test_revision_changes_of_the_examples_revision() -> None:
    """The finance department's requests, made: exactly these changes, files included."""
    first = OrderDocument.model_validate(load("order-product")).model_dump(mode="json")
    second = copy.deepcopy(first)
    second["payment"]["terms"] = "50% 预付，50% 货到后 30 天内付清"
    second["lines"][0]["unit_price"] = "95.00"
    second["lines"][1]["attributes"]["colour"] = "white"
    del second["lines"][0]["attributes"]["colour"]
    second["lines"].append({**second["lines"][1], "item": "螺栓"})
    new_spec = file("requirements_spec", 9, "需求规格书 v2.pdf")
    changes = domain.revision_changes(
        old_document=first,
        old_attachments=[SPEC, DRAWING],
        new_document=second,
        new_attachments=[DRAWING, new_spec],
    )
    entry = SPEC.model_dump(mode="json", exclude={"id"})
    assert changes == [
        FieldChange(pointer="/lines/0/attributes/colour", old="本色", new=None),
        FieldChange(pointer="/lines/0/unit_price", old="85.50", new="95.00"),
        FieldChange(pointer="/lines/1/attributes/colour", old=None, new="white"),
        FieldChange(pointer="/lines/2", old=None, new=second["lines"][2]),
        FieldChange(
            pointer="/payment/terms",
            old="30% 预付，70% 货到后 30 天内付清",
            new=second["payment"]["terms"],
        ),
        FieldChange(pointer=f"/attachments/{SPEC.id}", old=entry, new=None),
        FieldChange(
            pointer=f"/attachments/{new_spec.id}",
            old=None,
            new=new_spec.model_dump(mode="json", exclude={"id"}),
        ),
    ]
    assert entry["download_path"].endswith(str(SPEC.id))
    back = domain.revision_changes(
        old_document=second,
        old_attachments=[DRAWING, new_spec],
        new_document=first,
        new_attachments=[SPEC, DRAWING],
    )
    assert {c.pointer for c in back} == {c.pointer for c in changes}


# ---------------------------------------------------------------------------------------
# the ETag, withdrawal, duplicates


def test_etag_and_if_match() -> None:
    current = domain.etag(revision=2, version=5)
    assert current == '"r2.5"'
    domain.check_version(None, revision=2, version=5)  # not asked: not checked
    domain.check_version('"r2.5"', revision=2, version=5)
    domain.check_version('"r1.3", "r2.5"', revision=2, version=5)
    for stale in ('"r2.4"', '"r1.5"', 'W/"r2.5"', "*", "r2.5", ""):
        with pytest.raises(domain.StaleVersion) as caught:
            domain.check_version(stale, revision=2, version=5)
        assert caught.value.current == current and caught.value.revision == 2
        assert "revision 2" in str(caught.value)


@pytest.mark.parametrize("status", list(Status))
def test_withdrawal_only_before_approval(status: Status) -> None:
    allowed = {Status.DRAFT, Status.SUBMITTED, Status.IN_REVIEW, Status.CHANGES_REQUESTED}
    if status in allowed:
        domain.check_withdrawable(status)
    else:
        with pytest.raises(domain.NotWithdrawable) as caught:
            domain.check_withdrawable(status)
        assert status.value in str(caught.value) or "already" in str(caught.value)


@pytest.mark.parametrize(
    ("a", "b", "same_key"),
    [
        (
            ("上海精密机械有限公司", "PO-SJPM-2026-0042"),
            ("上海精密机械有限公司", "po sjpm 2026/0042"),
            True,
        ),
        (("ACME Co., Ltd.", "PO-1"), ("acme co ltd", "PO 1"), True),
        (("ＡＣＭＥ", "ＰＯ－１"), ("acme", "po-1"), True),  # full-width forms
        (("ACME", "PO-1"), ("ACME", "PO-2"), False),
        (("ACME", "PO-1"), ("Other Corp", "PO-1"), False),
        ((None, "PO-1"), (None, "po1"), True),
    ],
)
def test_duplicate_key(
    a: tuple[str | None, str], b: tuple[str | None, str], same_key: bool
) -> None:
    first = domain.duplicate_key(customer_name=a[0], external_ref=a[1])
    second = domain.duplicate_key(customer_name=b[0], external_ref=b[1])
    assert first is not None and second is not None
    assert (first == second) is same_key


def test_no_reference_no_duplicate() -> None:
    assert domain.duplicate_key(customer_name="ACME", external_ref=None) is None
    assert domain.duplicate_key(customer_name="ACME", external_ref=" - / ") is None


# ---------------------------------------------------------------------------------------
# the timeline


def test_timeline_lines_say_who_did_what() -> None:
    seller = {"id": "zhang.wei", "name": "张伟"}
    verdict = domain.describe(
        "review.verdict_recorded",
        {
            "department": "finance",
            "decision": "request_changes",
            "reviewer": {"id": "wang.fang", "name": "王芳"},
            "comment": "付款条件需调整",
            "annotations": [{"field": "/payment/terms", "message": "预付比例至少 50%"}],
        },
        salesperson=seller,
    )
    assert verdict.actor == {
        "kind": "reviewer",
        "id": "wang.fang",
        "name": "王芳",
        "department": "finance",
    }
    assert verdict.summary == "finance asked for changes (1 annotation(s))"
    assert verdict.details["annotations"][0]["field"] == "/payment/terms"

    asked = domain.describe(
        "order.withdrawal_requested", {"reason": "客户取消"}, salesperson=seller
    )
    assert asked.actor == {"kind": "salesperson", "id": "zhang.wei", "name": "张伟"}
    assert asked.summary == "Withdrawal requested: 客户取消"
    # the review-router decides withdrawals: its answer is its own
    withdrawn = domain.describe("order.withdrawn", {"reason": "客户取消"}, salesperson=seller)
    assert withdrawn.actor == {"kind": "system", "id": "review-router", "name": None}
    assert withdrawn.summary == "Order withdrawn: 客户取消"
    refused = domain.describe(
        "order.withdrawal_refused",
        {"reason": "the order was approved before the withdrawal arrived", "decision": "approved"},
        salesperson=seller,
    )
    assert refused.summary == (
        "Withdrawal refused: the order was approved before the withdrawal arrived"
    )

    opened = domain.describe(
        "review.round_opened", {"departments": ["supervisor"]}, salesperson=seller
    )
    assert opened.actor is not None and opened.actor["id"] == "review-router"
    assert opened.summary == "Review opened: supervisor"

    sent = domain.describe(
        "review.sent",
        {"department": "finance", "stage": 2, "due_at": "2026-05-09T10:00:00Z"},
        salesperson=seller,
    )
    assert sent.summary == "Review sent to finance (due 2026-05-09T10:00:00Z)"
    assert sent.details["stage"] == 2
    escalated = domain.describe(
        "review.escalated",
        {"department": "finance", "due_at": "2026-05-09T10:00:00Z", "escalate_to": "finance.head"},
        salesperson=seller,
    )
    assert (
        escalated.summary
        == "Review by finance escalated to finance.head (due 2026-05-09T10:00:00Z)"
    )

    unknown = domain.describe("inventory.reserved", {"sku": "X"}, salesperson=seller)
    assert unknown.actor is None and unknown.details == {"sku": "X"}


# ---------------------------------------------------------------------------------------
# bulk import formats


def csv_order(*rows: dict[str, str], first: int = 2) -> bulk.CsvOrder:
    return bulk.CsvOrder("A", [bulk.CsvRow(first + i, r) for i, r in enumerate(rows)])


def test_csv_rows_make_one_order() -> None:
    built = bulk.csv_document(
        csv_order(
            {
                "order_ref": "A",
                "order_type": "product",
                "salesperson_id": "zhang.wei",
                "customer_name": "上海精密机械有限公司",
                "company_credit_standing": "good",
                "payment_settlement_days": "30",
                "line_item": "不锈钢法兰",
                "line_quantity": "200",
                "line_attributes": "material=304 不锈钢; size=DN50",
            },
            {
                "order_ref": "A",
                "customer_name": "上海精密机械有限公司",
                "line_item": "密封垫片",
                "line_quantity": "400",
                "line_attributes": '{"material": "PTFE"}',
            },
        )
    )
    assert built.problems == []
    assert built.document == {
        "order_type": "product",
        "salesperson": {"id": "zhang.wei"},
        "customer": {"name": "上海精密机械有限公司", "company": {"credit_standing": "good"}},
        "payment": {"settlement_days": "30"},
        "lines": [
            {
                "item": "不锈钢法兰",
                "quantity": "200",
                "attributes": {"material": "304 不锈钢", "size": "DN50"},
            },
            {"item": "密封垫片", "quantity": "400", "attributes": {"material": "PTFE"}},
        ],
    }
    order = OrderDocument.model_validate(built.document)
    assert order.payment.settlement_days == 30


def test_csv_problems_are_traced_to_their_row_and_column() -> None:
    built = bulk.csv_document(
        csv_order(
            {"order_ref": "A", "currency": "CNY", "line_item": "a"},
            {"order_ref": "A", "currency": "USD", "line_item": "b"},
            {"order_ref": "A", "line_attributes": "no equals sign"},
            {"order_ref": "A", "delivery_date": "2027-01-01", "line_item": "c"},
            first=10,
        )
    )
    assert [(p.row, p.column, p.pointer) for p in built.problems] == [
        (11, "currency", "/currency"),
        (12, "line_attributes", "/lines/2/attributes"),
    ]
    located = [
        built.locate(Problem(pointer=p, detail="x"))
        for p in (
            "/lines/1/quantity",
            "/lines/2/service/period_end",
            "/lines/2/attributes/colour",
            "/delivery/date",
            "/customer/company/credit_standing",
            "/salesperson",
            "/lines",
        )
    ]
    assert [(p.row, p.column) for p in located] == [
        (11, "line_quantity"),
        (13, "service_period_end"),  # row 12 made no line: the third line is row 13's
        (13, "line_attributes"),
        (13, "delivery_date"),
        (10, "company_credit_standing"),
        (10, None),
        (10, None),
    ]


def test_csv_header() -> None:
    assert bulk.header_problems(["order_ref", "line_item"]) == []
    problems = bulk.header_problems(["line_item", "colour", "line_item"])
    assert len(problems) == 3
    assert "'colour'" in problems[0]
    assert "order_ref" in problems[1]
    assert "line_item" in problems[2]
    assert bulk.normalise_header(["\ufeffOrder_Ref ", " LINE_ITEM"]) == ["order_ref", "line_item"]
    assert bulk.dialect_of("order_ref;line_item").delimiter == ";"
    assert bulk.dialect_of("order_ref\tline_item").delimiter == "\t"
    record = bulk.parse_record(['A,"two', 'lines",3'], bulk.dialect_of("a,b,c"))
    assert record == ["A", "two\nlines", "3"]


def test_jsonl_lines() -> None:
    assert bulk.jsonl_document('{"order_type": "product"}') == ({"order_type": "product"}, None)
    document, error = bulk.jsonl_document("[1, 2]")
    assert document is None and error is not None and "JSON object, not list" in error
    document, error = bulk.jsonl_document('{"order_type": ')
    assert document is None and error is not None and error.startswith("not valid JSON")


# ---------------------------------------------------------------------------------------
# the CSV columns, documented where users look


GUIDE = EXAMPLES.parent / "integration.md"


def test_every_csv_column_is_documented_in_the_guide_and_the_openapi_description() -> None:
    from intake.entrypoints.imports import IMPORT_BODY

    assert set(bulk.COLUMN_HELP) == bulk.COLUMNS
    # the guide shows the table as the code has it
    assert bulk.columns_table() in GUIDE.read_text(encoding="utf-8")
    described = IMPORT_BODY["requestBody"]["description"]
    for column in bulk.COLUMNS:
        assert f"| `{column}` |" in described


def test_the_guides_csv_example_is_an_order_that_passes_the_self_check() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    sample = text.split("```csv\n", 1)[1].split("```", 1)[0].splitlines()
    dialect = bulk.dialect_of(sample[0])
    header = bulk.normalise_header(bulk.parse_record([sample[0]], dialect))
    assert bulk.header_problems(header) == []
    rows = [
        bulk.CsvRow(n, dict(zip(header, bulk.parse_record([line], dialect), strict=True)))
        for n, line in enumerate(sample[1:], start=2)
    ]
    built = bulk.csv_document(bulk.CsvOrder(rows[0].values["order_ref"], rows))
    assert built.problems == []
    checked = domain.check_document(built.document, today=TODAY, attachments=[])
    assert checked.problems == []
    assert checked.document is not None and len(checked.document.lines) == 2
