"""What a contract says: built from an approved order, pure rules, no I/O.

The content is stored as it is built, so the document renderer (and anyone reading the
record later) sees exactly the terms that were drafted, whatever happens to the order.
"""

from __future__ import annotations

import datetime as dt
import string
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from orderflow.messages import (
    DecimalStr,
    Language,
    OrderApproved,
    OrderLine,
    OrderType,
    Problem,
    Salesperson,
)

DEFAULT_NUMBER_PATTERN = "HT-{year}-{seq:06d}"
_PATTERN_FIELDS = frozenset({"year", "seq"})

#: A pattern without `{year}` numbers contracts with one counter that never restarts; it
#: is kept under this key of the per-year sequence.
NO_YEAR = 0


class ContractStatus(StrEnum):
    DRAFTED = "drafted"
    SENT = "sent"
    SIGNED = "signed"
    VOIDED = "voided"
    SUPERSEDED = "superseded"


#: Only a draft is replaced by a later revision's contract: once a contract has gone to the
#: customer, replacing it is a decision for a person, not for an event.
SUPERSEDABLE = (ContractStatus.DRAFTED,)


class IncompleteOrder(Exception):
    """The approved order lacks what a contract cannot do without."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.pointer}: {p.detail}" for p in problems))
        self.problems = problems


# --- contract numbers -------------------------------------------------------------------


def _fields(pattern: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as exc:
        raise ValueError(f"contract number pattern {pattern!r} is malformed: {exc}") from exc


def check_number_pattern(pattern: str) -> str:
    """The pattern itself when it can number contracts; ValueError saying why otherwise."""
    names = _fields(pattern)
    unknown = sorted({n or "{}" for n in names} - _PATTERN_FIELDS)
    if unknown:
        raise ValueError(
            f"contract number pattern {pattern!r} uses {', '.join(unknown)}; "
            "only {year} and {seq} are known"
        )
    if "seq" not in names:
        raise ValueError(
            f"contract number pattern {pattern!r} has no {{seq}}: every number would be the same"
        )
    try:
        first, second = (format_number(pattern, year=2026, seq=s) for s in (1, 2))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"contract number pattern {pattern!r} cannot be formatted: {exc}") from exc
    if first == second:
        raise ValueError(f"contract number pattern {pattern!r} gives every contract one number")
    if not first.strip() or len(first) > 100:
        raise ValueError(f"contract number pattern {pattern!r} gives an empty or overlong number")
    return pattern


def numbered_by_year(pattern: str) -> bool:
    """Whether numbers restart each year (the pattern shows the year)."""
    return "year" in _fields(pattern)


def sequence_key(pattern: str, *, year: int) -> int:
    """Which counter a new number comes from."""
    return year if numbered_by_year(pattern) else NO_YEAR


def format_number(pattern: str, *, year: int, seq: int) -> str:
    return pattern.format(year=year, seq=seq)


# --- contract content -------------------------------------------------------------------


class Model(BaseModel):
    """Content models: frozen, and refusing unknown fields, so a stored contract is read
    back exactly as it was written."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Party(Model):
    name: str
    address: str | None = None
    contact: str | None = None
    phone: str | None = None
    email: str | None = None
    bank_name: str | None = None
    bank_account_name: str | None = None
    bank_account: str | None = None
    tax_id: str | None = None


class ContractLine(Model):
    no: Annotated[int, Field(ge=1, description="Line number on the contract, from 1")]
    item: str
    specification: str | None = None
    model: str | None = None
    quantity: DecimalStr
    unit: str | None = None
    unit_price: DecimalStr
    amount: DecimalStr
    attributes: dict[str, str] = Field(default_factory=dict)


class ServiceClause(Model):
    """What a service line promises: content, standard, period."""

    line_no: int
    item: str
    content: str | None = None
    standard: str | None = None
    period_start: dt.date | None = None
    period_end: dt.date | None = None


class DeliveryTerms(Model):
    date: dt.date | None = None
    place: str | None = None
    method: str | None = None


class PaymentTerms(Model):
    method: str | None = None
    terms: str | None = None
    settlement_days: int | None = None


class ContractContent(Model):
    """Everything the contract document says; what a renderer renders."""

    version: ClassVar[int] = 1

    number: str
    order_id: UUID
    revision: int
    order_type: OrderType
    buyer_reference: str | None = Field(
        default=None, description="The customer's own reference, e.g. a PO number"
    )
    language: Language
    drafted_at: dt.datetime
    seller: Party
    buyer: Party
    salesperson: Salesperson
    lines: list[ContractLine]
    currency: str
    subtotal: DecimalStr
    tax_rate: DecimalStr
    tax: DecimalStr
    total: DecimalStr
    delivery: DeliveryTerms
    quality_requirements: str | None = None
    payment: PaymentTerms
    service_terms: list[ServiceClause] = Field(default_factory=list)
    technical_requirements: str | None = None


def _line(index: int, line: OrderLine, problems: list[Problem]) -> ContractLine | None:
    at = f"/order/lines/{index}"
    present = {"item": line.item or None, "quantity": line.quantity, "unit_price": line.unit_price}
    missing = [name for name, value in present.items() if value is None]
    problems.extend(
        Problem(pointer=f"{at}/{name}", detail="a contract line needs it") for name in missing
    )
    if missing:
        return None
    amount = line.computed_amount()
    # present, as checked above; for the type checker
    assert amount is not None
    assert line.item is not None
    assert line.quantity is not None
    assert line.unit_price is not None
    if line.amount is not None and line.amount != amount:
        problems.append(
            Problem(
                pointer=f"{at}/amount",
                detail=f"{line.amount} is not quantity x unit price ({amount})",
            )
        )
    return ContractLine(
        no=index + 1,
        item=line.item,
        specification=line.specification,
        model=line.model,
        quantity=line.quantity,
        unit=line.unit,
        unit_price=line.unit_price,
        amount=amount,
        attributes=line.attributes,
    )


def draft(
    event: OrderApproved, *, number: str, seller: Party, drafted_at: dt.datetime
) -> ContractContent:
    """The contract of an approved revision. Raises IncompleteOrder listing every gap, since
    a contract with a missing price or party must never be drafted."""
    order, totals = event.order, event.totals
    problems: list[Problem] = []
    customer = order.customer
    if not (customer.name and customer.name.strip()):
        problems.append(Problem(pointer="/order/customer/name", detail="the buyer needs a name"))
    if not order.lines:
        problems.append(
            Problem(pointer="/order/lines", detail="a contract needs at least one line")
        )
    lines = [c for i, line in enumerate(order.lines) if (c := _line(i, line, problems))]
    if totals.currency != order.currency:
        problems.append(
            Problem(
                pointer="/totals/currency",
                detail=f"{totals.currency} differs from the order's {order.currency}",
            )
        )
    # the totals were computed at submission and approved as they are (the tax with the
    # rounding finance saw); they must still add up to the cent, or the contract would
    # contradict itself
    if not problems:
        subtotal = sum((c.amount for c in lines), Decimal("0.00"))
        if subtotal != totals.subtotal:
            problems.append(
                Problem(
                    pointer="/totals/subtotal",
                    detail=f"{totals.subtotal} is not the sum of the lines ({subtotal})",
                )
            )
        if totals.subtotal + totals.tax != totals.total:
            problems.append(
                Problem(
                    pointer="/totals/total",
                    detail=f"{totals.total} is not subtotal plus tax "
                    f"({totals.subtotal + totals.tax})",
                )
            )
    if problems:
        raise IncompleteOrder(problems)
    assert customer.name is not None

    return ContractContent(
        number=number,
        order_id=event.order_id,
        revision=event.revision,
        order_type=order.order_type,
        buyer_reference=order.external_ref,
        language=customer.language,
        drafted_at=drafted_at,
        seller=seller,
        buyer=Party(
            name=customer.name,
            address=customer.address,
            contact=customer.contact_name,
            phone=customer.phone,
            email=customer.email,
        ),
        salesperson=order.salesperson,
        lines=lines,
        currency=totals.currency,
        subtotal=totals.subtotal,
        tax_rate=order.tax_rate or Decimal(0),
        tax=totals.tax,
        total=totals.total,
        delivery=DeliveryTerms(
            date=order.delivery.date, place=order.delivery.address, method=order.delivery.method
        ),
        quality_requirements=order.quality_requirements,
        payment=PaymentTerms(
            method=order.payment.method,
            terms=order.payment.terms,
            settlement_days=order.payment.settlement_days,
        ),
        service_terms=[
            ServiceClause(
                line_no=i + 1,
                item=line.item or "",
                content=line.service.content,
                standard=line.service.standard,
                period_start=line.service.period_start,
                period_end=line.service.period_end,
            )
            for i, line in enumerate(order.lines)
            if line.service is not None
        ],
        technical_requirements=order.technical_requirements,
    )


def stored(content: ContractContent) -> dict[str, Any]:
    """The content as JSON for storage: decimals as strings, so not a cent is lost."""
    return content.model_dump(mode="json")
