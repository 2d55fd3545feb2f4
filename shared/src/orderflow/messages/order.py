"""The order document: what a salesperson records (process sections 2.1 and 3.1).

The same model is the body of `POST /api/v1/orders` and of the `order.submit` command, so
a CRM and the console send exactly the same thing. Structure and types are checked here;
completeness and consistency are the self-check's job (intake's domain), so a draft may be
saved incomplete and every missing piece is reported together at submission.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, localcontext
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, EmailStr, Field

from .. import limits
from .base import Chars, Document, Money, Quantity, Rate, ShortText, Text, Timestamp, TotalStr

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _currency(value: str) -> str:
    if not _CURRENCY.match(value):
        raise ValueError("must be an ISO 4217 code of three capital letters, e.g. CNY")
    return value


Currency = Annotated[str, Field(min_length=3, max_length=3), AfterValidator(_currency)]
AttributeName = Annotated[str, Chars(limits.ATTRIBUTE_NAME, min_length=1)]
AttributeValue = Annotated[str, Chars(limits.ATTRIBUTE_VALUE)]


class OrderType(StrEnum):
    PRODUCT = "product"
    SERVICE = "service"
    CUSTOM = "custom"


class CreditStanding(StrEnum):
    GOOD = "good"
    FAIR = "fair"
    POOR = "poor"
    UNKNOWN = "unknown"


class Language(StrEnum):
    ZH = "zh"
    EN = "en"


class Salesperson(Document):
    id: Annotated[str, Field(min_length=1, max_length=limits.ID, pattern=r"^[A-Za-z0-9._@-]+$")]
    name: ShortText | None = None
    email: EmailStr | None = None


class Company(Document):
    """For a company customer: kind of enterprise, business scope, credit standing."""

    kind: ShortText | None = None
    business_scope: Text | None = None
    credit_standing: CreditStanding | None = None


class Customer(Document):
    name: ShortText | None = None
    contact_name: ShortText | None = None
    phone: Annotated[str, Chars(limits.PHONE)] | None = None
    email: EmailStr | None = None
    address: Text | None = None
    company: Company | None = None
    language: Language = Language.ZH


class ServiceTerms(Document):
    """A service line's content, standard and period (process section 2.1)."""

    content: Text | None = None
    standard: Text | None = None
    period_start: dt.date | None = None
    period_end: dt.date | None = None


class OrderLine(Document):
    item: ShortText | None = None
    specification: ShortText | None = None
    model: ShortText | None = None
    quantity: Quantity | None = None
    unit: Annotated[str, Chars(limits.UNIT)] | None = None
    unit_price: Money | None = None
    amount: Money | None = Field(
        default=None, description="Optional; when given it must equal quantity x unit_price."
    )
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict,
        max_length=limits.MAX_ATTRIBUTES,
        description="Product parameters: size, colour, material, ...",
    )
    service: ServiceTerms | None = None

    def computed_amount(self) -> Decimal | None:
        if self.quantity is None or self.unit_price is None:
            return None
        # exact whatever the bounded digits; the self-check then refuses what is too large
        with localcontext(prec=2 * limits.TOTAL_DIGITS):
            return (self.quantity * self.unit_price).quantize(Decimal("0.01"))


class Delivery(Document):
    date: dt.date | None = None
    method: ShortText | None = None
    address: Text | None = None


class Payment(Document):
    method: ShortText | None = None
    terms: Text | None = None
    settlement_days: Annotated[int, Field(ge=0, le=limits.MAX_SETTLEMENT_DAYS)] | None = None


class ConfirmationMethod(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    IN_PERSON = "in_person"
    SIGNED_REPLY = "signed_reply"


class CustomerConfirmation(Document):
    """How the customer confirmed the collected information (process section 2.1)."""

    method: ConfirmationMethod
    confirmed_at: Timestamp | None = None
    confirmed_by: ShortText | None = None
    attachment_id: UUID | None = Field(
        default=None, description="The uploaded confirmation (a signed reply, an email), if any"
    )


class AttachmentKind(StrEnum):
    REQUIREMENTS_SPEC = "requirements_spec"
    DRAWING = "drawing"
    CUSTOMER_CONFIRMATION = "customer_confirmation"
    CONTRACT = "contract"
    OTHER = "other"


class AttachmentRef(Document):
    """A file attached to an order, as events carry it: a reference, never the bytes."""

    id: UUID
    name: ShortText
    kind: AttachmentKind
    content_type: ShortText
    size: Annotated[int, Field(ge=0, le=2**63 - 1)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    download_path: ShortText = Field(description="Path on intake's HTTP API to download it")


class FieldChange(Document):
    """One field that differs between two revisions of an order."""

    pointer: Annotated[str, Field(max_length=limits.POINTER * 4)] = Field(
        description="JSON pointer into the order document"
    )
    old: Any = None
    new: Any = None


class OrderDocument(Document):
    """An order as a salesperson or another company system submits it."""

    order_type: OrderType
    external_ref: Annotated[str, Chars(limits.ID)] | None = Field(
        default=None, description="The customer's or source system's reference, e.g. a PO number."
    )
    salesperson: Salesperson
    customer: Customer = Field(default_factory=Customer)
    lines: list[OrderLine] = Field(default_factory=list, max_length=limits.MAX_LINES)
    currency: Currency = "CNY"
    tax_rate: Annotated[Rate, Field(ge=0, lt=1)] | None = None
    quality_requirements: Text | None = None
    usage_scenario: Text | None = None
    delivery: Delivery = Field(default_factory=Delivery)
    payment: Payment = Field(default_factory=Payment)
    technical_requirements: Text | None = None
    customer_confirmation: CustomerConfirmation | None = None
    notes: Text | None = None

    @property
    def has_technical_requirements(self) -> bool:
        return bool(self.technical_requirements and self.technical_requirements.strip())

    def subtotal(self) -> Decimal:
        with localcontext(prec=2 * limits.TOTAL_DIGITS):
            return sum(
                (a for line in self.lines if (a := line.computed_amount()) is not None),
                Decimal("0.00"),
            )

    def tax(self) -> Decimal:
        with localcontext(prec=2 * limits.TOTAL_DIGITS):
            return (self.subtotal() * (self.tax_rate or Decimal(0))).quantize(Decimal("0.01"))

    def total(self) -> Decimal:
        with localcontext(prec=2 * limits.TOTAL_DIGITS):
            return self.subtotal() + self.tax()


class Totals(Document):
    """Amounts as computed by intake at submission, carried on events so nobody recomputes."""

    currency: Currency
    subtotal: TotalStr
    tax: TotalStr
    total: TotalStr

    @classmethod
    def of(cls, order: OrderDocument) -> Totals:
        return cls(
            currency=order.currency,
            subtotal=order.subtotal(),
            tax=order.tax(),
            total=order.total(),
        )
