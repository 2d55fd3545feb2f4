"""What a contract says: built from an approved order, pure rules, no I/O.

The content is stored as it is built, so the document renderer (and anyone reading the
record later) sees exactly the terms that were drafted, whatever happens to the order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import string
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from orderflow.messages import (
    AttachmentKind,
    DecimalStr,
    Language,
    OrderApproved,
    OrderLine,
    OrderType,
    Problem,
    Salesperson,
    Timestamp,
    Totals,
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


@dataclass(frozen=True)
class PendingRender:
    """A numbered contract waiting for its document: the counter and sequence number its
    number came from, and the approval's delivery, so the approval can be dead-lettered
    and the number handed back should the document never typeset."""

    contract_id: UUID
    content: ContractContent
    attempts: int
    number_key: int
    number_seq: int
    delivery: dict[str, Any] | None


#: Only a draft is replaced by a later revision's contract: once a contract has gone to the
#: customer, replacing it is a decision for a person, not for an event.
SUPERSEDABLE = (ContractStatus.DRAFTED,)


class Action(StrEnum):
    """What a person does to a contract."""

    SEND = "send"
    SIGN = "sign"
    VOID = "void"


#: Which statuses each action starts from, and where it leads. A signed contract is not
#: voided here: undoing a signed agreement is a legal act of its own, not a status change.
_TRANSITIONS: dict[Action, tuple[frozenset[ContractStatus], ContractStatus]] = {
    Action.SEND: (frozenset({ContractStatus.DRAFTED}), ContractStatus.SENT),
    Action.SIGN: (frozenset({ContractStatus.SENT}), ContractStatus.SIGNED),
    Action.VOID: (frozenset({ContractStatus.DRAFTED, ContractStatus.SENT}), ContractStatus.VOIDED),
}


class InvalidTransition(Exception):
    """The action is not possible in the contract's current status."""

    def __init__(self, action: Action, current: ContractStatus) -> None:
        allowed, _ = _TRANSITIONS[action]
        self.action = action
        self.current = current
        self.allowed = sorted(s.value for s in allowed)
        super().__init__(
            f"the contract is {current.value}; only a contract that is "
            f"{' or '.join(self.allowed)} can be {past_tense(action)}"
        )


def past_tense(action: Action) -> str:
    return {Action.SEND: "sent", Action.SIGN: "signed", Action.VOID: "voided"}[action]


def transition(current: ContractStatus, action: Action) -> ContractStatus:
    """The status after `action`; InvalidTransition when the current status forbids it."""
    allowed, target = _TRANSITIONS[action]
    if current not in allowed:
        raise InvalidTransition(action, current)
    return target


# --- stored documents -------------------------------------------------------------------

PDF_MEDIA_TYPE = "application/pdf"


class DocumentKind(StrEnum):
    DRAFTED = "drafted"
    SIGNED_COPY = "signed_copy"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_pdf(data: bytes) -> bool:
    """Judged from the bytes, never from a declared content type or file name."""
    return data.startswith(b"%PDF-")


class DocumentCorrupt(Exception):
    """A stored document's bytes no longer match the hash recorded when it was stored."""

    def __init__(self, *, expected: str, actual: str) -> None:
        super().__init__(f"stored SHA-256 {expected}, the bytes hash to {actual}")
        self.expected = expected
        self.actual = actual


def verified(data: bytes, *, expected: tuple[str, ...]) -> bytes:
    """The bytes, when they hash to every recorded hash; DocumentCorrupt otherwise."""
    actual = sha256(data)
    for recorded in expected:
        if actual != recorded:
            raise DocumentCorrupt(expected=recorded, actual=actual)
    return data


# --- amounts in capital Chinese numerals (大写金额) ------------------------------------

_DIGITS = "零壹贰叁肆伍陆柒捌玖"
_PLACES = ("", "拾", "佰", "仟")
_GROUPS = ("", "万", "亿", "万亿")
_CENT = Decimal("0.01")
#: 万亿 is the largest group named: an amount must stay below 10^16.
MAX_CAPITAL = Decimal(10) ** 16

#: How the currency is named before a capital amount; another currency shows its code.
CURRENCY_NAMES_ZH = {
    "CNY": "人民币",
    "USD": "美元",
    "EUR": "欧元",
    "JPY": "日元",
    "GBP": "英镑",
    "HKD": "港币",
}


def _group(value: int) -> str:
    """0 < value < 10000 in numerals: a run of zeros inside becomes one 零, trailing zeros
    are silent, and 10 to 19 keep their 壹 (壹拾, as financial writing requires)."""
    digits = f"{value:04d}"
    out: list[str] = []
    pending_zero = False
    for index, char in enumerate(digits):
        digit = int(char)
        place = _PLACES[3 - index]
        if digit == 0:
            pending_zero = bool(out)
            continue
        if pending_zero:
            out.append("零")
            pending_zero = False
        out.append(_DIGITS[digit] + place)
    return "".join(out)


def _integer(value: int) -> str:
    """The yuan part, by groups of four digits (个, 万, 亿, 万亿)."""
    groups: list[int] = []
    while value:
        value, group = divmod(value, 10000)
        groups.append(group)
    out: list[str] = []
    zero_between = False
    for power in range(len(groups) - 1, -1, -1):
        group = groups[power]
        if group == 0:
            # a whole group of zeros between two non-zero groups: one 零 for the run
            zero_between = bool(out)
            continue
        # a group below 1000 after a higher group has leading zeros: 壹万零伍
        if out and (zero_between or group < 1000):
            out.append("零")
        zero_between = False
        out.append(_group(group) + _GROUPS[power])
    return "".join(out)


def capital_numerals(amount: Decimal) -> str:
    """An amount in capital Chinese numerals, by the People's Bank of China rules for
    writing amounts (《支付结算办法》附件一, 正确填写票据和结算凭证的基本规定):

    - a zero, or a run of zeros, inside the number is written as one 零 (壹万零伍元整);
    - zeros at the end of a 万 or 亿 group are silent (壹拾万柒仟元);
    - when the yuan digit is 0 and 角 follows, 零 is written after 元 (壹拾万元零伍角,
      the first of the two forms the rules allow), and 零 stands for a 角 of 0 before 分;
    - 整 follows an amount that ends at 元, never one that ends at 分, nor (as the rules
      permit) one that ends at 角;
    - below one yuan nothing is written for the yuan (柒分, 伍角).
    """
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{amount} cannot be written in capital numerals: not an amount >= 0")
    if amount.quantize(_CENT) != amount:
        raise ValueError(f"{amount} has fractions of a cent")
    if amount >= MAX_CAPITAL:
        raise ValueError(f"{amount} is too large to be written in capital numerals")
    cents = int(amount * 100)
    yuan, rest = divmod(cents, 100)
    jiao, fen = divmod(rest, 10)
    if cents == 0:
        return "零元整"
    out = _integer(yuan) + "元" if yuan else ""
    if jiao == 0 and fen == 0:
        return out + "整"
    if jiao:
        if yuan and yuan % 10 == 0:
            out += "零"
        out += _DIGITS[jiao] + "角"
    elif yuan:
        out += "零"
    if fen:
        out += _DIGITS[fen] + "分"
    return out


def capital_amount(amount: Decimal, *, currency: str) -> str:
    """The capital amount with its currency named in front: 人民币贰万零柒佰陆拾玖元肆角."""
    return CURRENCY_NAMES_ZH.get(currency, currency) + capital_numerals(amount)


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


class AnnexFile(Model):
    """A file of the order that is part of the contract, named with its SHA-256 so either
    party can show that the file at hand is the one agreed."""

    name: str
    kind: str
    content_type: str
    size: int
    sha256: str


class TechnicalNote(Model):
    field: str = Field(description="JSON pointer into the order the remark is about")
    message: str
    severity: str


class TechnicalReview(Model):
    """What the technical department said when it approved the revision."""

    reviewer: str
    comment: str | None = None
    notes: list[TechnicalNote] = Field(default_factory=list)


#: The department whose remarks a custom product's technical annex carries.
TECHNICAL = "technical"

#: Attachments that define what is sold become annexes of the contract. The customer's
#: confirmation (an email, a signed reply) is evidence kept with the order, not a term.
ANNEX_KINDS = frozenset(
    {AttachmentKind.DRAWING, AttachmentKind.REQUIREMENTS_SPEC, AttachmentKind.OTHER}
)


class ContractContent(Model):
    """Everything the contract document says; what a renderer renders."""

    #: 2: attachments and the technical department's review (version 1 had neither, and
    #: reads as version 2 with both empty)
    version: ClassVar[int] = 2

    number: str
    order_id: UUID
    revision: int
    order_type: OrderType
    buyer_reference: str | None = Field(
        default=None, description="The customer's own reference, e.g. a PO number"
    )
    language: Language
    drafted_at: Timestamp
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
    attachments: list[AnnexFile] = Field(default_factory=list)
    technical_reviews: list[TechnicalReview] = Field(default_factory=list)


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
    if not problems:
        problems.extend(_totals_problems(lines, totals))
    if problems:
        raise IncompleteOrder(problems)
    assert customer.name is not None
    return _content(event, lines, number=number, seller=seller, drafted_at=drafted_at)


def _totals_problems(lines: list[ContractLine], totals: Totals) -> list[Problem]:
    """The totals were computed at submission and approved as they are (the tax with the
    rounding finance saw); they must still add up to the cent, or the contract would
    contradict itself."""
    problems: list[Problem] = []
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
                detail=f"{totals.total} is not subtotal plus tax ({totals.subtotal + totals.tax})",
            )
        )
    if totals.total > MAX_CAPITAL - _CENT:
        problems.append(
            Problem(
                pointer="/totals/total",
                detail=f"{totals.total} is too large to be written in capital numerals",
            )
        )
    return problems


def _content(
    event: OrderApproved,
    lines: list[ContractLine],
    *,
    number: str,
    seller: Party,
    drafted_at: dt.datetime,
) -> ContractContent:
    """The terms of a checked order."""
    order, totals, customer = event.order, event.totals, event.order.customer
    assert customer.name is not None  # checked by `draft`
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
        service_terms=_service_terms(event),
        technical_requirements=order.technical_requirements,
        attachments=_annexes(event),
        technical_reviews=_technical_reviews(event),
    )


def _service_terms(event: OrderApproved) -> list[ServiceClause]:
    return [
        ServiceClause(
            line_no=i + 1,
            item=line.item or "",
            content=line.service.content,
            standard=line.service.standard,
            period_start=line.service.period_start,
            period_end=line.service.period_end,
        )
        for i, line in enumerate(event.order.lines)
        if line.service is not None
    ]


def _annexes(event: OrderApproved) -> list[AnnexFile]:
    return [
        AnnexFile(
            name=a.name,
            kind=a.kind.value,
            content_type=a.content_type,
            size=a.size,
            sha256=a.sha256,
        )
        for a in event.attachments
        if a.kind in ANNEX_KINDS
    ]


def _technical_reviews(event: OrderApproved) -> list[TechnicalReview]:
    return [
        TechnicalReview(
            reviewer=f.reviewer.name or f.reviewer.id,
            comment=f.comment,
            notes=[
                TechnicalNote(field=a.field, message=a.message, severity=a.severity.value)
                for a in f.annotations
            ],
        )
        for f in event.approvals
        if f.department == TECHNICAL
    ]


def stored(content: ContractContent) -> dict[str, Any]:
    """The content as JSON for storage: decimals as strings, so not a cent is lost."""
    return content.model_dump(mode="json")
