"""Contract documents as PDF, typeset by Typst from template files ops can edit.

A template is `<order type>.<language>.typ` in the template folder (the packaged
`contracts/templates/`, or `CONTRACTS_TEMPLATE_DIR`); it reads the contract as JSON from
`sys.inputs.data`. Every value reaches the template as a string or number, never as markup,
so nothing an order says can change the document's layout.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog
import typst
from prometheus_client import Histogram

from orderflow.messages import Language, OrderType, Salesperson

from .. import domain
from .rendering import RenderPool

log = structlog.get_logger(__name__)

PACKAGED_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

#: Debian's fonts-noto-cjk; the templates name Noto Serif CJK SC and Noto Sans CJK SC.
DEFAULT_FONT_DIRS = (Path("/usr/share/fonts/opentype/noto"),)

RENDER_SECONDS = Histogram(
    "orderflow_contract_render_seconds", "Time to typeset one contract document", ["template"]
)


def template_name(order_type: OrderType, language: Language) -> str:
    return f"{order_type.value}.{language.value}.typ"


#: Every template a deployment needs: each order type in each language.
TEMPLATE_NAMES = tuple(template_name(t, lang) for t in OrderType for lang in Language)


def missing_templates(folder: Path) -> list[str]:
    return [name for name in TEMPLATE_NAMES if not (folder / name).is_file()]


class RenderError(Exception):
    """A template could not be typeset (a mistake in an edited template, a missing font)."""


# --- what a template is given ------------------------------------------------------------


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def _quantity(value: Decimal) -> str:
    # 200, 1.5, 1,000: no trailing zeros and no exponent (Decimal("2E+2") is 200)
    normal = value.normalize()
    if normal == normal.to_integral_value():
        normal = normal.quantize(Decimal(1))
    return f"{normal:,f}"


def _percent(rate: Decimal) -> str:
    return f"{_quantity(rate * 100)}%"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def template_data(content: domain.ContractContent, *, timezone: dt.tzinfo) -> dict[str, Any]:
    """The contract as a template reads it: `contract` holds the terms exactly as stored,
    `text` the amounts and dates written out (grouped digits, capital numerals, the day of
    drafting in the seller's time zone)."""
    contract = domain.stored(content)
    for stored_file, file in zip(contract["attachments"], content.attachments, strict=True):
        stored_file["size_text"] = _size(file.size)
    return {
        "contract": contract,
        "text": {
            "currency": content.currency,
            "subtotal": _money(content.subtotal),
            "tax": _money(content.tax),
            "tax_rate": _percent(content.tax_rate),
            "total": _money(content.total),
            "total_capital": domain.capital_amount(content.total, currency=content.currency),
            "drafted_on": content.drafted_at.astimezone(timezone).date().isoformat(),
            "lines": [
                {
                    "quantity": _quantity(line.quantity),
                    "unit_price": _money(line.unit_price),
                    "amount": _money(line.amount),
                }
                for line in content.lines
            ],
        },
    }


# --- rendering ---------------------------------------------------------------------------


class TypstRenderer:
    """Typesets contracts; safe to share between threads (the fonts load once)."""

    def __init__(
        self,
        *,
        template_dir: Path = PACKAGED_TEMPLATES,
        font_dirs: Sequence[Path] = DEFAULT_FONT_DIRS,
        timezone: dt.tzinfo = dt.UTC,
    ) -> None:
        self.template_dir = template_dir
        self.font_dirs = tuple(font_dirs)
        self.timezone = timezone
        self._fonts: typst.Fonts | None = None
        self._lock = threading.Lock()
        self._pool: RenderPool | None = None

    def fonts(self) -> typst.Fonts:
        with self._lock:
            if self._fonts is None:
                # only the configured folders and Typst's own fonts: a document must look
                # the same on every machine, whatever else happens to be installed
                self._fonts = typst.Fonts(
                    include_system_fonts=False,
                    include_embedded_fonts=True,
                    font_paths=[str(d) for d in self.font_dirs],
                )
            return self._fonts

    def __getstate__(self) -> dict[str, Any]:
        # sent to a worker process without its fonts and lock: each process loads its own
        state = dict(self.__dict__)
        state.update(_fonts=None, _lock=None, _pool=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def _compile(self, content: domain.ContractContent) -> tuple[bytes, list[str]]:
        name = template_name(content.order_type, content.language)
        data = json.dumps(template_data(content, timezone=self.timezone), ensure_ascii=False)
        started = time.perf_counter()
        try:
            pdf, warnings = typst.compile_with_warnings(
                self.template_dir / name,
                root=self.template_dir,
                font_paths=self.fonts(),
                sys_inputs={"data": data},
                # the document carries its drafting time, so the same terms typeset the
                # same bytes (and the same hash) on any machine
                timestamp=int(content.drafted_at.timestamp()),
                pdf_standards="a-2b",
            )
        except typst.TypstError as exc:
            raise RenderError(f"template {name}: {exc.message}; {exc.diagnostic}") from exc
        RENDER_SECONDS.labels(name).observe(time.perf_counter() - started)
        return pdf, [f"{name}: {w.message}" for w in warnings]

    def render_sync(self, content: domain.ContractContent) -> bytes:
        pdf, warnings = self._compile(content)
        for warning in warnings:
            log.warning("contract template warning", warning=warning, number=content.number)
        return pdf

    async def render(self, content: domain.ContractContent) -> bytes:
        """The contract as PDF; typesetting is CPU work, so it runs off the event loop: on
        the worker processes once started, else on a thread."""
        if self._pool is not None:
            return await self._pool.render(content)
        return await asyncio.to_thread(self.render_sync, content)

    def start_workers(self, workers: int | None = None) -> None:
        """Typeset on `workers` processes (default: one per core) from now on."""
        if self._pool is None:
            twin = TypstRenderer(
                template_dir=self.template_dir, font_dirs=self.font_dirs, timezone=self.timezone
            )
            self._pool = RenderPool(twin, workers=workers)

    @property
    def workers(self) -> int:
        return self._pool.workers if self._pool is not None else 1

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def check(self) -> None:
        """Typeset every template once with a specimen contract; RenderError saying what is
        wrong (a missing template or font folder, a template error, a font a template names
        but cannot find) so that the service refuses to start rather than to draft."""
        missing = missing_templates(self.template_dir)
        if missing:
            raise RenderError(f"{self.template_dir} lacks the templates {', '.join(missing)}")
        absent = [str(d) for d in self.font_dirs if not d.is_dir()]
        if absent:
            raise RenderError(
                f"font folder(s) {', '.join(absent)} not found; Chinese contracts need the "
                "Noto CJK fonts (Debian: apt-get install fonts-noto-cjk)"
            )
        problems: list[str] = []
        for order_type in OrderType:
            for language in Language:
                _, warnings = self._compile(specimen(order_type, language))
                problems.extend(warnings)
        if problems:
            raise RenderError("; ".join(problems))


def specimen(order_type: OrderType, language: Language) -> domain.ContractContent:
    """A contract with every clause filled in (in both scripts), to try a template with.
    Longer than most functions: it is one literal, every clause of a contract."""
    drafted = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return domain.ContractContent(
        number="SPECIMEN-1",
        order_id=UUID(int=0),
        revision=1,
        order_type=order_type,
        language=language,
        drafted_at=drafted,
        seller=domain.Party(name="示例卖方 Specimen Seller", bank_account="0000"),
        buyer=domain.Party(name="示例买方 Specimen Buyer", address="地址 Address"),
        salesperson=Salesperson(id="specimen"),
        lines=[
            domain.ContractLine(
                no=1,
                item="示例 Item",
                quantity=Decimal(1),
                unit="件",
                unit_price=Decimal("1.00"),
                amount=Decimal("1.00"),
                attributes={"material": "钢 steel"},
            )
        ],
        currency="CNY",
        subtotal=Decimal("1.00"),
        tax_rate=Decimal("0.13"),
        tax=Decimal("0.13"),
        total=Decimal("1.13"),
        delivery=domain.DeliveryTerms(date=drafted.date(), place="地点 Place", method="送货"),
        payment=domain.PaymentTerms(method="bank_transfer", terms="条款 Terms", settlement_days=1),
        service_terms=[
            domain.ServiceClause(
                line_no=1,
                item="示例 Item",
                content="内容 Content",
                standard="标准 Standard",
                period_start=drafted.date(),
                period_end=drafted.date(),
            )
        ],
        technical_requirements="技术要求 Requirements",
        attachments=[
            domain.AnnexFile(
                name="图纸 drawing.pdf",
                kind="drawing",
                content_type="application/pdf",
                size=1,
                sha256="0" * 64,
            )
        ],
        technical_reviews=[
            domain.TechnicalReview(
                reviewer="技术部 Technical",
                comment="意见 Comment",
                notes=[
                    domain.TechnicalNote(field="/lines/0", message="备注 Note", severity="info")
                ],
            )
        ],
    )
