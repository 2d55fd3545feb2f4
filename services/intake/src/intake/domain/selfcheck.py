"""The self-check (process sections 2.1 and 3.1): every problem at once, each with its field.

revisions and their differences, duplicates, the ETag, and how events move the read model
and make the timeline. Pure functions, no I/O.

Files and the customer's confirmation in the self-check (process sections 2.1 and 3.1):

- A custom order needs a drawing or a requirement specification (`/attachments`).
- An order with technical requirements needs the customer's requirement specification
  (`/attachments`): the technical department reviews against it.
- Every order records how the customer confirmed (`method`), when (`confirmed_at`) and who
  confirmed (`confirmed_by`).
- The important items are confirmed in writing, and the written confirmation is kept with
  the order. An order is important when it is a custom order, or when its total reaches
  `WRITTEN_CONFIRMATION_FROM` for its currency (every amount, in a currency not listed
  there). An important order names the uploaded confirmation in
  `customer_confirmation.attachment_id` (a file of kind `customer_confirmation`: the signed
  reply, the customer's email); a phone call or a meeting alone is not enough.
- A confirmation file named by an order must be one of that revision's files and of kind
  `customer_confirmation`, whatever the order.
- One rule set for every submission: an order created and submitted in one step (another
  system's `order.submit`, `POST /api/v1/orders?submit=true`, a row of a bulk import) is
  checked exactly as a draft submitted with `POST /api/v1/orders/{id}/submit`; it has no
  files (but those an `order.submit` names by URL, fetched and stored first: decision
  0024), so an order that needs one is refused naming `/attachments` (or
  `/customer_confirmation/attachment_id`): save it as a draft, upload, submit.

`check_document` takes the document as it arrived (JSON) and reports every problem at once:
the type errors of its fields, and the self-check's rules over the parts that did parse.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from decimal import Decimal

from orderflow import limits
from orderflow.messages import (
    AttachmentKind,
    AttachmentRef,
    ConfirmationMethod,
    OrderDocument,
    OrderLine,
    OrderType,
    Problem,
)

# Active ISO 4217 currencies one can invoice in (no fund codes, metals or test codes),
# kept as text because a table of codes reads better that way.
ISO_4217 = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
    MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
    SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD
    TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL""".split()  # noqa: SIM905
)

_PHONE_CHARS = re.compile(r"^[0-9+()\-./ ]+(?:\s*(?:ext\.?|x|转|分机)\s*[0-9]+)?$", re.IGNORECASE)
_MIN_PHONE_DIGITS = 6


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def problem_at(pointer: str, detail: str) -> Problem:
    return Problem(pointer=pointer, detail=detail)


def _customer(order: OrderDocument) -> Iterator[Problem]:
    c = order.customer
    if _blank(c.name):
        yield problem_at("/customer/name", "the customer's name is required")
    if _blank(c.contact_name):
        yield problem_at("/customer/contact_name", "the customer's contact person is required")
    if _blank(c.phone) and c.email is None:
        yield problem_at(
            "/customer/phone", "a phone number or an email of the customer is required"
        )
    if not _blank(c.phone):
        phone = str(c.phone)
        digits = sum(ch.isdigit() for ch in phone)
        if not _PHONE_CHARS.match(phone) or digits < _MIN_PHONE_DIGITS:
            yield problem_at("/customer/phone", f"{phone!r} does not look like a phone number")
    if _blank(c.address):
        yield problem_at("/customer/address", "the customer's full address is required")
    if c.company is not None:
        # process 2.1: for a company customer, its kind, business scope and credit standing
        if _blank(c.company.kind):
            yield problem_at("/customer/company/kind", "the kind of enterprise is required")
        if _blank(c.company.business_scope):
            yield problem_at(
                "/customer/company/business_scope", "the company's business scope is required"
            )
        if c.company.credit_standing is None:
            yield problem_at(
                "/customer/company/credit_standing",
                "the company's credit standing is required (good, fair, poor or unknown)",
            )


def _line(order: OrderDocument, index: int, line: OrderLine, today: date) -> Iterator[Problem]:
    at = f"/lines/{index}"
    if _blank(line.item):
        yield problem_at(f"{at}/item", "the product or service is required")
    if line.quantity is None:
        yield problem_at(f"{at}/quantity", "the quantity is required")
    elif line.quantity <= 0:
        yield problem_at(f"{at}/quantity", f"must be greater than 0, not {line.quantity}")
    if _blank(line.unit):
        yield problem_at(f"{at}/unit", "the unit is required, e.g. 件, kg, year")
    if line.unit_price is None:
        yield problem_at(f"{at}/unit_price", "the unit price is required")
    elif line.unit_price < 0:
        yield problem_at(f"{at}/unit_price", f"must not be negative, not {line.unit_price}")
    computed = line.computed_amount()
    if computed is not None and abs(computed) > limits.MAX_AMOUNT:
        yield problem_at(
            f"{at}/amount",
            f"quantity x unit price is {computed}, more than a contract can state "
            f"({limits.MAX_AMOUNT:,})",
        )
    elif line.amount is not None and computed is not None and line.amount != computed:
        yield problem_at(
            f"{at}/amount",
            f"is {line.amount} but quantity x unit price is {computed}",
        )
    has_spec = not (_blank(line.specification) and _blank(line.model))
    if order.order_type in (OrderType.PRODUCT, OrderType.CUSTOM) and not has_spec:
        yield problem_at(f"{at}/specification", "a product line needs its specification or model")
    if order.order_type is OrderType.SERVICE:
        yield from _service_terms(at, line, today)


def _service_terms(at: str, line: OrderLine, today: date) -> Iterator[Problem]:
    terms = line.service
    if terms is None:
        yield problem_at(
            f"{at}/service", "a service line needs its content, standard and service period"
        )
        return
    if _blank(terms.content):
        yield problem_at(f"{at}/service/content", "the content of the service is required")
    if _blank(terms.standard):
        yield problem_at(f"{at}/service/standard", "the service standard is required")
    if terms.period_start is None:
        yield problem_at(
            f"{at}/service/period_start", "the start of the service period is required"
        )
    if terms.period_end is None:
        yield problem_at(f"{at}/service/period_end", "the end of the service period is required")
    if terms.period_start is not None and terms.period_end is not None:
        if terms.period_end < terms.period_start:
            yield problem_at(
                f"{at}/service/period_end",
                f"the service period ends ({terms.period_end}) before it starts "
                f"({terms.period_start})",
            )
        elif terms.period_end < today:
            yield problem_at(
                f"{at}/service/period_end",
                f"the service period ended on {terms.period_end}, before today ({today})",
            )


def _order_terms(order: OrderDocument, today: date) -> Iterator[Problem]:
    if order.currency not in ISO_4217:
        yield problem_at("/currency", f"{order.currency} is not an ISO 4217 currency")
    if order.tax_rate is None:
        yield problem_at("/tax_rate", "the tax rate is required, e.g. 0.13 (use 0 when exempt)")
    if order.delivery.date is None:
        yield problem_at("/delivery/date", "the delivery date is required")
    elif order.delivery.date < today:
        yield problem_at(
            "/delivery/date",
            f"the delivery date {order.delivery.date} is in the past (today is {today})",
        )
    if _blank(order.delivery.method):
        yield problem_at("/delivery/method", "the delivery method is required")
    if _blank(order.payment.method):
        yield problem_at("/payment/method", "the payment method is required")
    if _blank(order.payment.terms):
        yield problem_at("/payment/terms", "the payment terms (settlement) are required")
    if order.order_type is OrderType.CUSTOM and not order.has_technical_requirements:
        yield problem_at(
            "/technical_requirements",
            "a custom order needs its technical requirements for the technical review",
        )


#: From which total (tax included) an order is important enough that the customer's
#: written confirmation must be on file, by currency. A currency not listed here has no
#: agreed threshold, so every order in it counts as important.
WRITTEN_CONFIRMATION_FROM: Mapping[str, Decimal] = {
    "CNY": Decimal("100000"),
    "HKD": Decimal("110000"),
    "USD": Decimal("15000"),
    "EUR": Decimal("13000"),
    "GBP": Decimal("11000"),
    "JPY": Decimal("2000000"),
}

_WRITTEN = frozenset({ConfirmationMethod.EMAIL, ConfirmationMethod.SIGNED_REPLY})
_METHOD_WORDS = {
    ConfirmationMethod.EMAIL: "by email",
    ConfirmationMethod.PHONE: "by phone",
    ConfirmationMethod.IN_PERSON: "in person",
    ConfirmationMethod.SIGNED_REPLY: "by signed reply",
}


def important_because(order: OrderDocument) -> str | None:
    """Why the order's important items need the customer's written confirmation on file,
    or None when they do not."""
    if order.order_type is OrderType.CUSTOM:
        return "a custom order"
    if order.currency not in ISO_4217:
        return None  # reported as a currency problem; no amount to judge by
    threshold = WRITTEN_CONFIRMATION_FROM.get(order.currency)
    total = order.total()
    if threshold is None:
        return f"an order in {order.currency}"
    if total >= threshold:
        return f"an order of {total} {order.currency} (from {threshold:.2f} {order.currency})"
    return None


def _confirmation(
    order: OrderDocument, attachments: Sequence[AttachmentRef], today: date
) -> Iterator[Problem]:
    # process 2.1: the customer confirms the collected information, in writing for the
    # important items, before the order is placed
    confirmation = order.customer_confirmation
    if confirmation is None:
        yield problem_at(
            "/customer_confirmation",
            "record how the customer confirmed the order details (email, phone, in person, "
            "signed reply), when and by whom",
        )
        return
    at = "/customer_confirmation"
    if confirmation.confirmed_at is None:
        yield problem_at(f"{at}/confirmed_at", "when the customer confirmed is required")
    elif confirmation.confirmed_at.date() > today:
        yield problem_at(
            f"{at}/confirmed_at",
            f"the confirmation date {confirmation.confirmed_at.date()} is in the future",
        )
    if _blank(confirmation.confirmed_by):
        yield problem_at(f"{at}/confirmed_by", "who confirmed for the customer is required")
    files = {a.id: a for a in attachments}
    if confirmation.attachment_id is not None:
        named = files.get(confirmation.attachment_id)
        if named is None:
            yield problem_at(
                f"{at}/attachment_id",
                f"{confirmation.attachment_id} is not a file of this order's revision; "
                "upload the confirmation and name the id it was given",
            )
        elif named.kind is not AttachmentKind.CUSTOMER_CONFIRMATION:
            yield problem_at(
                f"{at}/attachment_id",
                f"{named.name!r} is attached as {named.kind.value}, not as customer_confirmation",
            )
        return
    reason = important_because(order)
    if reason is None:
        return
    how = _METHOD_WORDS[confirmation.method]
    yield problem_at(
        f"{at}/attachment_id",
        f"{reason} needs the customer's written confirmation on file (confirmed {how} is "
        "not enough): upload the signed reply or the customer's email as an attachment of "
        "kind customer_confirmation and name its id here",
    )


def _files(order: OrderDocument, attachments: Sequence[AttachmentRef]) -> Iterator[Problem]:
    kinds = {a.kind for a in attachments}
    spec = AttachmentKind.REQUIREMENTS_SPEC in kinds
    if order.order_type is OrderType.CUSTOM and not (spec or AttachmentKind.DRAWING in kinds):
        yield problem_at(
            "/attachments",
            "a custom order needs the customer's drawing or requirement specification: "
            "upload it as kind drawing or requirements_spec",
        )
    if order.has_technical_requirements and not spec:
        yield problem_at(
            "/attachments",
            "the order has technical requirements: upload the customer's requirement "
            "specification (kind requirements_spec) for the technical review",
        )


def self_check(
    order: OrderDocument, *, today: date, attachments: Sequence[AttachmentRef]
) -> list[Problem]:
    """Every problem that keeps the order from review, each with its JSON pointer.

    `attachments` are the files of the revision being submitted (none for an order created
    and submitted in one step: the same rules apply to it)."""
    # the salesperson is required by the document itself, so a parsed order always has one
    problems = list(_customer(order))
    if not order.lines:
        problems.append(problem_at("/lines", "at least one order line is required"))
    for index, line in enumerate(order.lines):
        problems.extend(_line(order, index, line, today))
    total = order.total()
    if abs(total) > limits.MAX_AMOUNT:
        problems.append(
            problem_at(
                "/lines",
                f"the total with tax is {total}, more than a contract can state "
                f"({limits.MAX_AMOUNT:,}); split the order",
            )
        )
    problems.extend(_order_terms(order, today))
    problems.extend(_confirmation(order, attachments, today))
    problems.extend(_files(order, attachments))
    return problems
