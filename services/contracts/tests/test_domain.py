"""The contract content and numbering rules, without broker or database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import domain
from contracts.domain import Action, ContractStatus
from contracts.settings import Settings
from orderflow.messages import AttachmentKind, OrderApproved

from .conftest import TECHNICAL_REVIEW, attachment

Approve = Callable[..., OrderApproved]  # the `approve` fixture of conftest.py

SELLER = domain.Party(
    name="苏州恒达机械制造有限公司",
    address="苏州工业园区星湖街 328 号",
    contact="赵敏",
    phone="+86 512 6666 0000",
    bank_name="中国工商银行苏州分行",
    bank_account="1102 0203 0900 0012 345",
)
DRAFTED_AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
URLS: dict[str, Any] = {
    "database_url": "postgresql://u@db.example/orderflow",
    "amqp_url": "amqp://u:p@mq.example/",
}


def test_product_order_contract(approve: Approve) -> None:
    event = approve("product", revision=2)
    content = domain.draft(event, number="HT-2026-000007", seller=SELLER, drafted_at=DRAFTED_AT)

    assert content.number == "HT-2026-000007"
    assert (content.order_id, content.revision) == (event.order_id, 2)
    assert content.seller == SELLER
    assert content.buyer == domain.Party(
        name="上海精密机械有限公司",
        address="上海市浦东新区张江路 88 号",
        contact="李娜",
        phone="+86 21 5555 0101",
        email="li.na@example.cn",
    )
    assert content.buyer_reference == "PO-SJPM-2026-0042"
    assert content.language == "zh"
    flange, gasket = content.lines
    assert (flange.no, flange.item, flange.specification, flange.model, flange.unit) == (
        1,
        "不锈钢法兰",
        "DN50 PN16",
        "FL-50-16",
        "件",
    )
    assert (flange.quantity, flange.unit_price, flange.amount) == (
        Decimal("200"),
        Decimal("85.50"),
        Decimal("17100.00"),
    )
    assert flange.attributes["material"] == "304 不锈钢"
    assert (gasket.no, gasket.amount) == (2, Decimal("1280.00"))
    # exact to the cent, and kept as the decimal strings they are
    assert content.subtotal == Decimal("18380.00")
    assert content.tax_rate == Decimal("0.13")
    assert content.tax == Decimal("2389.40")
    assert content.total == Decimal("20769.40")
    assert content.currency == "CNY"
    stored = domain.stored(content)
    assert (stored["subtotal"], stored["tax"], stored["total"]) == (
        "18380.00",
        "2389.40",
        "20769.40",
    )
    assert stored["lines"][0]["unit_price"] == "85.50"
    assert domain.ContractContent.model_validate(stored) == content

    assert content.delivery == domain.DeliveryTerms(
        date=datetime(2027, 3, 15).date(), place="上海市浦东新区张江路 88 号", method="物流配送"
    )
    assert content.quality_requirements == "按 GB/T 9124-2019 检验"
    assert content.payment == domain.PaymentTerms(
        method="bank_transfer", terms="30% 预付，70% 货到后 30 天内付清", settlement_days=30
    )
    assert content.technical_requirements == "法兰密封面按客户图纸加工，粗糙度 Ra1.6"
    assert content.service_terms == []
    assert content.salesperson.id == "zhang.wei"
    assert content.drafted_at == DRAFTED_AT


def test_service_order_contract(approve: Approve) -> None:
    event = approve("service")
    content = domain.draft(event, number="HT-2027-000001", seller=SELLER, drafted_at=DRAFTED_AT)

    assert content.language == "en"
    assert content.order_type == "service"
    assert content.buyer.name == "Hangzhou Riverside Logistics Co., Ltd."
    assert content.buyer.contact == "Wang Lei"
    [line] = content.lines
    assert (line.item, line.quantity, line.unit, line.unit_price, line.amount) == (
        "Annual maintenance of conveyor lines",
        Decimal("1"),
        "year",
        Decimal("48000.00"),
        Decimal("48000.00"),
    )
    assert (content.subtotal, content.tax, content.total) == (
        Decimal("48000.00"),
        Decimal("2880.00"),
        Decimal("50880.00"),
    )
    [clause] = content.service_terms
    assert clause.line_no == 1
    assert clause.item == "Annual maintenance of conveyor lines"
    assert clause.content == "Quarterly inspection and repair of 6 conveyor lines, 24h on-call"
    assert clause.standard == "Response within 4 hours; availability 99%"
    assert (clause.period_start.isoformat(), clause.period_end.isoformat()) == (  # type: ignore[union-attr]
        "2027-01-01",
        "2027-12-31",
    )
    assert content.payment.terms == "Quarterly in advance"
    assert content.payment.settlement_days == 15
    assert content.delivery.method == "on site"
    assert content.quality_requirements is None
    assert content.technical_requirements is None


def test_an_incomplete_order_is_refused_with_every_gap(approve: Approve) -> None:
    def strip(document: dict[str, Any]) -> None:
        del document["customer"]["name"]
        del document["lines"][0]["unit_price"]
        document["lines"][1]["amount"] = "1300.00"

    event = approve("product", change=strip)
    with pytest.raises(domain.IncompleteOrder) as caught:
        domain.draft(event, number="HT-2026-000001", seller=SELLER, drafted_at=DRAFTED_AT)
    pointers = [p.pointer for p in caught.value.problems]
    assert pointers == [
        "/order/customer/name",
        "/order/lines/0/unit_price",
        "/order/lines/1/amount",
    ]


def test_totals_that_do_not_add_up_are_refused(approve: Approve) -> None:
    event = approve("product")
    wrong = event.model_copy(
        update={"totals": event.totals.model_copy(update={"subtotal": Decimal("18380.01")})}
    )
    with pytest.raises(domain.IncompleteOrder) as caught:
        domain.draft(wrong, number="HT-2026-000001", seller=SELLER, drafted_at=DRAFTED_AT)
    assert [p.pointer for p in caught.value.problems] == ["/totals/subtotal", "/totals/total"]


def test_number_pattern_formatting() -> None:
    pattern = domain.DEFAULT_NUMBER_PATTERN
    assert domain.format_number(pattern, year=2026, seq=1) == "HT-2026-000001"
    assert domain.format_number(pattern, year=2027, seq=123456) == "HT-2027-123456"
    assert domain.format_number("C{seq:08d}/{year}", year=2026, seq=42) == "C00000042/2026"
    assert domain.check_number_pattern("SO{seq}") == "SO{seq}"
    # numbers restart each year only when the year is part of them
    assert domain.sequence_key(pattern, year=2026) == 2026
    assert domain.sequence_key("SO{seq:05d}", year=2026) == domain.NO_YEAR


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("HT-{year}", "has no {seq}"),
        ("HT-{year}-{number:06d}", "uses number"),
        ("HT-{}-{seq}", "uses {}"),
        ("HT-{year-{seq}", "malformed"),
        ("HT-{seq:06x6}", "cannot be formatted"),
        ("HT-{seq:.0}", "cannot be formatted"),
    ],
)
def test_a_bad_number_pattern_is_refused(pattern: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        domain.check_number_pattern(pattern)
    with pytest.raises(ValidationError) as caught:
        Settings(**URLS, seller_name="Seller Ltd.", contract_number_pattern=pattern)
    [error] = caught.value.errors()
    assert error["loc"] == ("contract_number_pattern",)
    assert why in error["msg"]


def test_the_seller_name_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTRACTS_SELLER_NAME", raising=False)
    with pytest.raises(ValidationError) as caught:
        Settings(**URLS)
    assert [e["loc"] for e in caught.value.errors()] == [("seller_name",)]
    with pytest.raises(ValidationError) as blank:
        Settings(**URLS, seller_name="   ")
    assert [e["loc"] for e in blank.value.errors()] == [("seller_name",)]


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTRACTS_DATABASE_URL", URLS["database_url"])
    monkeypatch.setenv("CONTRACTS_AMQP_URL", URLS["amqp_url"])
    monkeypatch.setenv("CONTRACTS_SELLER_NAME", "苏州恒达机械制造有限公司")
    monkeypatch.setenv("CONTRACTS_SELLER_BANK_ACCOUNT", "1102 0203")
    monkeypatch.setenv("CONTRACTS_CONTRACT_NUMBER_PATTERN", "SC{year}{seq:04d}")
    monkeypatch.setenv("CONTRACTS_FONT_PATH", "/opt/fonts/noto:/opt/fonts/extra")
    monkeypatch.setenv("CONTRACTS_SIGNED_COPY_MAX_BYTES", "1048576")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.http_port == 8002
    assert [str(d) for d in settings.font_dirs] == ["/opt/fonts/noto", "/opt/fonts/extra"]
    assert settings.signed_copy_max_bytes == 1024 * 1024
    assert (settings.templates / "product.zh.typ").is_file()  # the packaged templates
    assert settings.seller.name == "苏州恒达机械制造有限公司"
    assert settings.seller.bank_account == "1102 0203"
    assert settings.seller.address is None
    assert domain.format_number(settings.contract_number_pattern, year=2026, seq=3) == (
        "SC20260003"
    )
    assert datetime(2026, 12, 31, 16, 30, tzinfo=UTC).astimezone(settings.timezone).year == 2027
    with pytest.raises(ValidationError, match="unknown time zone"):
        Settings(number_timezone="Mars/Olympus")  # type: ignore[call-arg]
    monkeypatch.setenv("CONTRACTS_TEMPLATE_DIR", "/nonexistent/templates")
    with pytest.raises(ValidationError, match="/nonexistent/templates is not a folder"):
        Settings()  # type: ignore[call-arg]


def test_attachments_and_the_technical_review_become_annexes(approve: Approve) -> None:
    drawing = attachment("法兰图纸 FL-50-16.pdf")
    spec = attachment("requirements.docx", AttachmentKind.REQUIREMENTS_SPEC)
    confirmation = attachment("confirmation.eml", AttachmentKind.CUSTOMER_CONFIRMATION)

    def custom(document: dict[str, Any]) -> None:
        document["order_type"] = "custom"

    event = approve(
        "product",
        change=custom,
        attachments=[drawing, confirmation, spec],
        feedback=[TECHNICAL_REVIEW],
    )
    content = domain.draft(event, number="HT-2026-000001", seller=SELLER, drafted_at=DRAFTED_AT)
    assert content.order_type == "custom"
    # the customer's confirmation is evidence kept with the order, not a term of the contract
    assert [(a.name, a.kind, a.sha256, a.size) for a in content.attachments] == [
        (drawing.name, "drawing", drawing.sha256, drawing.size),
        (spec.name, "requirements_spec", spec.sha256, spec.size),
    ]
    [review] = content.technical_reviews
    assert review.reviewer == "刘洋"
    assert review.comment == "密封面加工可行，按附图执行"
    assert [(n.field, n.severity) for n in review.notes] == [
        ("/technical_requirements", "info"),
        ("/lines/0/specification", "minor"),
    ]
    # stored and read back as it was
    assert domain.ContractContent.model_validate(domain.stored(content)) == content
    # a contract stored before attachments existed still reads
    old = domain.stored(content)
    del old["attachments"], old["technical_reviews"]
    assert domain.ContractContent.model_validate(old).attachments == []


@pytest.mark.parametrize(
    ("status", "action", "after"),
    [
        (ContractStatus.DRAFTED, Action.SEND, ContractStatus.SENT),
        (ContractStatus.SENT, Action.SIGN, ContractStatus.SIGNED),
        (ContractStatus.DRAFTED, Action.VOID, ContractStatus.VOIDED),
        (ContractStatus.SENT, Action.VOID, ContractStatus.VOIDED),
        (ContractStatus.DRAFTED, Action.SIGN, None),
        (ContractStatus.SENT, Action.SEND, None),
        (ContractStatus.SIGNED, Action.SEND, None),
        (ContractStatus.SIGNED, Action.SIGN, None),
        (ContractStatus.SIGNED, Action.VOID, None),
        (ContractStatus.VOIDED, Action.SEND, None),
        (ContractStatus.VOIDED, Action.SIGN, None),
        (ContractStatus.VOIDED, Action.VOID, None),
        (ContractStatus.SUPERSEDED, Action.SEND, None),
        (ContractStatus.SUPERSEDED, Action.SIGN, None),
        (ContractStatus.SUPERSEDED, Action.VOID, None),
    ],
)
def test_lifecycle(status: ContractStatus, action: Action, after: ContractStatus | None) -> None:
    if after is not None:
        assert domain.transition(status, action) == after
        return
    with pytest.raises(domain.InvalidTransition) as caught:
        domain.transition(status, action)
    assert caught.value.current == status
    assert f"the contract is {status.value}" in str(caught.value)


def test_a_document_is_served_only_when_its_bytes_match_the_recorded_hashes() -> None:
    data = b"%PDF-1.7 contract"
    digest = domain.sha256(data)
    assert domain.verified(data, expected=(digest, digest)) == data
    with pytest.raises(domain.DocumentCorrupt) as caught:
        domain.verified(data + b" ", expected=(digest,))
    assert caught.value.expected == digest
    assert caught.value.actual == domain.sha256(data + b" ")
    # a row whose hash was changed with its bytes still fails the contract's own hash
    forged = data.replace(b"contract", b"contrast")
    with pytest.raises(domain.DocumentCorrupt):
        domain.verified(forged, expected=(domain.sha256(forged), digest))
    assert domain.is_pdf(data)
    assert not domain.is_pdf(b"PK\x03\x04 a zip named .pdf")
