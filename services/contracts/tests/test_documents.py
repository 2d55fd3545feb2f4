"""The contract documents: typeset when drafted, downloaded over HTTP, read back with
poppler's pdftotext and pdffonts."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest

from contracts import domain
from contracts.adapters.documents import (
    PACKAGED_TEMPLATES,
    TEMPLATE_NAMES,
    RenderError,
    TypstRenderer,
    specimen,
)
from contracts.main import create_app
from contracts.settings import Settings
from orderflow import topology
from orderflow.messages import AttachmentKind, ContractDrafted, Language, OrderApproved, OrderType
from orderflow_testkit.testing import Infra, eventually, get_messages, queue_depth, running

from .conftest import TECHNICAL_REVIEW, attachment, in_language
from .test_contracts import PROBE, SELLER, contracts_of, probe, send, service, settings, year_now

Approve = Callable[..., OrderApproved]

pytestmark = pytest.mark.skipif(
    not (shutil.which("pdftotext") and shutil.which("pdffonts")),
    reason="poppler-utils (pdftotext, pdffonts) is not installed",
)

DRAWING = attachment("法兰图纸 FL-50-16 rev B.pdf")
SPEC = attachment("Sealing face requirements.pdf", AttachmentKind.REQUIREMENTS_SPEC)

TITLES = {
    ("product", "zh"): "产品购销合同",
    ("product", "en"): "SALES CONTRACT",
    ("service", "zh"): "服务合同",
    ("service", "en"): "SERVICE AGREEMENT",
    ("custom", "zh"): "定制产品购销合同",
    ("custom", "en"): "CUSTOM PRODUCT SUPPLY CONTRACT",
}


def pdftotext(pdf: bytes, *, page: int | None = None) -> str:
    pages = ["-f", str(page), "-l", str(page)] if page else []
    done = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", *pages, "-", "-"],
        input=pdf,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode("utf-8")


def fonts_of(pdf: bytes) -> list[dict[str, str]]:
    """pdffonts' table: each font's name and its emb, sub and uni columns."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "contract.pdf"
        path.write_bytes(pdf)
        done = subprocess.run(["pdffonts", str(path)], capture_output=True, check=True)
    _, _, *rows = done.stdout.decode().splitlines()
    # a long name runs into the next column, so read the row from both ends: the name
    # first, and last "emb sub uni object-number generation"
    fonts = []
    for row in rows:
        words = row.split()
        fonts.append({"name": words[0], "emb": words[-5], "sub": words[-4], "uni": words[-3]})
    return fonts


def page_count(pdf: bytes) -> int:
    return pdftotext(pdf).count("\f")  # pdftotext ends every page with a form feed


def flat(text: str, language: str) -> str:
    """Text with line breaks gone: Chinese without any spaces (pdftotext puts some between
    characters of different fonts), English with single spaces."""
    if language == "zh":
        return re.sub(r"\s+", "", text)
    return re.sub(r"\s+", " ", text)


def money(value: Decimal | str) -> str:
    return f"{Decimal(value):,.2f}"


def order_of(order_type: str, language: str, approve: Approve) -> OrderApproved:
    base = "service" if order_type == "service" else "product"
    extra: dict[str, Any] = {}
    if order_type == "custom":
        extra = {"attachments": [DRAWING, SPEC], "feedback": [TECHNICAL_REVIEW]}
    elif order_type == "product":
        extra = {"attachments": [DRAWING]}
    return approve(base, change=in_language(language, order_type), **extra)


def check_contract(pdf: bytes, event: OrderApproved, number: str, language: str) -> None:
    """Everything a reader must find in the PDF, as pdftotext reads it."""
    order, totals = event.order, event.totals
    text = pdftotext(pdf)
    body = flat(text, language)

    def has(value: str) -> None:
        assert flat(value, language) in body, f"{value!r} not in the {language} contract"

    has(TITLES[(order.order_type.value, language)])
    assert order.customer.name is not None
    has(order.customer.name)
    has(SELLER)
    has(number)
    for line in order.lines:
        for value in (line.item, line.specification, line.model, line.unit):
            if value:
                has(value)
        assert line.quantity is not None and line.unit_price is not None
        has(f"{line.quantity.normalize():,f}")
        has(money(line.unit_price))
        has(money(line.computed_amount() or 0))
    has(money(totals.subtotal))
    has(money(totals.tax))
    has(money(totals.total))
    if language == "zh":
        capital = domain.capital_amount(totals.total, currency=totals.currency)
        has(f"合同总金额（含税，大写）：{capital}")
    # the contract number on every page, and "page n of N"
    pages = page_count(pdf)
    assert pages >= 2
    for page in range(1, pages + 1):
        on_page = flat(pdftotext(pdf, page=page), language)
        assert flat(number, language) in on_page, f"no contract number on page {page}"
        footer = f"第{page}页共{pages}页" if language == "zh" else f"Page {page} of {pages}"
        assert footer in on_page, f"no page number on page {page}"


async def test_each_order_type_in_each_language(infra: Infra, amqp: Any, approve: Approve) -> None:
    async with service(infra, seller_bank_account="1102 0203 0900 0012 345") as (client, _):
        await probe(amqp)
        events = {
            (t, lang): order_of(t, lang, approve)
            for t in ("product", "service", "custom")
            for lang in ("zh", "en")
        }
        for event in events.values():
            await send(amqp, event)
        for (order_type, language), event in events.items():
            [contract] = await contracts_of(client, event.order_id, 1)
            assert (contract["content"]["order_type"], contract["language"]) == (
                order_type,
                language,
            )
            response = await client.get(contract["document"]["href"])
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/pdf"
            number = contract["number"]
            assert response.headers["content-disposition"] == (
                f"attachment; filename=\"{number}.pdf\"; filename*=UTF-8''{number}.pdf"
            )
            pdf = response.content
            assert pdf.startswith(b"%PDF-")
            assert hashlib.sha256(pdf).hexdigest() == contract["document"]["sha256"]
            assert response.headers["etag"] == f'"{contract["document"]["sha256"]}"'
            check_contract(pdf, event, number, language)

            fonts = fonts_of(pdf)
            assert fonts, "no fonts in the PDF"
            assert all(f["emb"] == "yes" for f in fonts), fonts
            names = " ".join(f["name"] for f in fonts)
            assert "NotoSerifCJK" in names or "NotoSansCJK" in names, names

            body = flat(pdftotext(pdf), language)
            if order_type == "custom":
                # the technical annex: the specification, the review, the files with hashes
                assert flat("粗糙度 Ra1.6", language) in body
                assert "密封面加工可行，按附图执行" in body
                assert "法兰厚度按20mm加工" in body.replace(" ", "")
                for file in (DRAWING, SPEC):
                    assert file.sha256 in body
                    assert flat(file.name, language) in body
            elif order_type == "product":
                assert DRAWING.sha256 in body
            else:
                # no attachments: the annex list says so
                assert ("附件无。" if language == "zh" else "Annexes None.") in body
                clause = contract["content"]["service_terms"][0]
                assert flat(clause["content"], language) in body
                assert flat(clause["standard"], language) in body
                period = (
                    "2027年1月1日起至2027年12月31日止"
                    if language == "zh"
                    else ("from 1 January 2027 to 31 December 2027")
                )
                assert period in body


def test_the_same_terms_typeset_the_same_bytes(approve: Approve) -> None:
    renderer = TypstRenderer(timezone=ZoneInfo("Asia/Shanghai"))
    seller = domain.Party(name=SELLER)
    content = domain.draft(
        order_of("custom", "zh", approve),
        number="HT-2026-000123",
        seller=seller,
        drafted_at=datetime(2026, 12, 31, 17, 0, 0, 123456, tzinfo=UTC),
    )
    first = renderer.render_sync(content)
    started = time.perf_counter()
    again = renderer.render_sync(content)
    seconds = time.perf_counter() - started
    assert first == again
    # drafted on the seller's calendar day (1 January in Shanghai), not UTC's
    assert "起草日期：2027年1月1日" in flat(pdftotext(first), "zh")
    assert seconds < 1.0, f"typesetting one contract took {seconds:.2f}s"


def test_template_data_is_text_not_markup(approve: Approve) -> None:
    """What an order says is printed as it is, never read as Typst markup."""
    renderer = TypstRenderer()

    def hostile(document: dict[str, Any]) -> None:
        document["customer"]["name"] = '#panic("x") = Heading *bold* $x$ <l> @ref \\ `raw`'
        document["lines"][0]["item"] = '#import "/etc/passwd"'

    content = domain.draft(
        approve("product", change=hostile),
        number="HT-2026-000001",
        seller=domain.Party(name=SELLER),
        drafted_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    text = flat(pdftotext(renderer.render_sync(content)), "en")
    assert '#panic("x") = Heading *bold* $x$ <l> @ref \\ `raw`' in text
    assert '#import "/etc/passwd"' in text


def test_a_broken_template_or_missing_fonts_stop_the_start(tmp_path: Path) -> None:
    for name in PACKAGED_TEMPLATES.iterdir():
        (tmp_path / name.name).write_bytes(name.read_bytes())
    TypstRenderer(template_dir=tmp_path).check()

    broken = tmp_path / "service.en.typ"
    broken.write_text(broken.read_text("utf-8") + "\n#let x = (\n", "utf-8")
    with pytest.raises(RenderError, match=r"template service\.en\.typ"):
        TypstRenderer(template_dir=tmp_path).check()
    broken.unlink()
    with pytest.raises(RenderError, match=r"lacks the templates service\.en\.typ"):
        TypstRenderer(template_dir=tmp_path).check()

    with pytest.raises(RenderError, match="fonts-noto-cjk"):
        TypstRenderer(font_dirs=[tmp_path / "no-fonts"]).check()
    # a font folder without the CJK fonts: Typst warns of the unknown family, which the
    # check takes as fatal
    with pytest.raises(RenderError, match=r"(?i)unknown font family"):
        TypstRenderer(font_dirs=[tmp_path]).check()


def test_every_template_typesets_the_specimen() -> None:
    renderer = TypstRenderer()
    assert len(TEMPLATE_NAMES) == 6
    for order_type in OrderType:
        for language in Language:
            text = pdftotext(renderer.render_sync(specimen(order_type, language)))
            assert "SPECIMEN-1" in text


def test_an_ops_copy_of_the_templates_is_used(tmp_path: Path, infra: Infra) -> None:
    for name in PACKAGED_TEMPLATES.iterdir():
        (tmp_path / name.name).write_bytes(name.read_bytes())
    settings = Settings(
        database_url=infra.database_url,
        amqp_url=infra.url_as("contracts"),
        seller_name=SELLER,
        template_dir=tmp_path,
        font_path=f"/usr/share/fonts/opentype/noto:{tmp_path}",
    )
    assert settings.templates == tmp_path
    assert settings.font_dirs == (Path("/usr/share/fonts/opentype/noto"), tmp_path)
    zh = tmp_path / "product.zh.typ"
    zh.write_text(zh.read_text("utf-8").replace("产品购销合同", "工业品买卖合同"), "utf-8")
    content = specimen(OrderType.PRODUCT, Language.ZH)
    renderer = TypstRenderer(template_dir=settings.templates, font_dirs=settings.font_dirs)
    assert "工业品买卖合同" in flat(pdftotext(renderer.render_sync(content)), "zh")

    (tmp_path / "custom.en.typ").unlink()
    with pytest.raises(ValueError, match=r"lacks the templates custom\.en\.typ"):
        Settings(
            database_url=infra.database_url,
            amqp_url=infra.url_as("contracts"),
            seller_name=SELLER,
            template_dir=tmp_path,
        )


def test_the_file_name_header_survives_any_contract_number() -> None:
    from contracts.entrypoints.http import content_disposition

    header = content_disposition("合同/2026-7.pdf")
    assert header.startswith("attachment; filename=\"__-2026-7.pdf\"; filename*=UTF-8''")
    assert unquote(header.split("''", 1)[1]) == "合同-2026-7.pdf"
    # quotes and separators cannot end the parameter early
    assert content_disposition('a"b;c\\d.pdf') == (
        "attachment; filename=\"a-b-c-d.pdf\"; filename*=UTF-8''a-b-c-d.pdf"
    )


class BrokenTemplate(TypstRenderer):
    """The packaged templates, except that one customer's contract fails to typeset, as
    after an edit with a mistake."""

    async def render(self, content: domain.ContractContent) -> bytes:
        if content.buyer.name == "Unlucky Ltd.":
            raise RenderError("template product.en.typ: unclosed delimiter")
        return await super().render(content)


async def test_no_contract_without_its_document(infra: Infra, amqp: Any, approve: Approve) -> None:
    def unlucky(document: dict[str, Any]) -> None:
        document["customer"]["name"] = "Unlucky Ltd."

    app = create_app(settings(infra), renderer=BrokenTemplate())
    async with running(app) as client:
        pool = app.state.runtime.pool
        await probe(amqp)
        failing = approve("product", change=unlucky)
        await send(amqp, failing)
        [dead] = await get_messages(amqp, topology.CONTRACTS_APPROVED.dlq, 1, timeout=30)
        # a fault of the service, the operators' to fix: its code, and no class name
        assert str(dead.headers["x-orderflow-reason"]) == (
            "the service failed to handle the message: template product.en.typ: unclosed delimiter"
        )
        assert dead.headers["x-orderflow-reason-code"] == "processing_failed"
        # the draft rolled back with its number: the next contract takes it
        good = approve("service")
        await send(amqp, good)
        [contract] = await contracts_of(client, good.order_id, 1)
        assert contract["number"] == f"HT-{year_now(infra)}-000001"
        assert contract["document"] is not None
        none = await client.get("/api/v1/contracts", params={"order_id": str(failing.order_id)})
        assert none.json() == {"items": []}
        assert await pool.fetchval("SELECT count(*) FROM contract_documents") == 1
        await eventually(
            lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE sent_at IS NULL")
        )
        [drafted] = await get_messages(amqp, PROBE, 1)
        assert ContractDrafted.model_validate_json(drafted.body).order_id == good.order_id
        assert await queue_depth(amqp, PROBE) == 0
