"""Order rules: statuses, what may be edited and submitted, the self-check and how events
move the read model. Pure functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from orderflow.messages import OrderDocument, OrderLine, OrderType, Problem


class Status(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    IN_REVIEW = "in_review"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    CONTRACT_DRAFTED = "contract_drafted"
    CONTRACT_SIGNED = "contract_signed"
    WITHDRAWN = "withdrawn"


#: The salesperson may change the order only before the first submission, or when the
#: departments sent it back; everything else belongs to the review or the contract.
EDITABLE: frozenset[Status] = frozenset({Status.DRAFT, Status.CHANGES_REQUESTED})


class RuleViolation(Exception):
    """An operation the order's state does not allow."""


class NotEditable(RuleViolation):
    def __init__(self, status: Status, action: str = "edited") -> None:
        self.status = status
        super().__init__(
            f"the order is {status.value}; it can be {action} only while it is "
            f"{' or '.join(s.value for s in sorted(EDITABLE))}"
        )


class AlreadySubmitted(RuleViolation):
    def __init__(self, revision: int) -> None:
        self.revision = revision
        super().__init__(
            f"revision {revision} is already submitted and has not changed since; "
            "edit the order to make a new revision before submitting again"
        )


class SelfCheckFailed(RuleViolation):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"self-check failed: {len(problems)} problem(s)")


def check_editable(status: Status) -> None:
    if status not in EDITABLE:
        raise NotEditable(status)


@dataclass(frozen=True)
class EditTarget:
    """Where an edit goes: the open revision is replaced, a submitted one is never touched."""

    revision: int
    replace: bool


def edit_target(*, status: Status, current_revision: int, submitted: bool) -> EditTarget:
    check_editable(status)
    if submitted:
        # the departments reviewed that revision; their verdicts must keep pointing at it
        return EditTarget(revision=current_revision + 1, replace=False)
    return EditTarget(revision=current_revision, replace=True)


def check_submittable(*, status: Status, current_revision: int, submitted: bool) -> None:
    if status not in EDITABLE:
        raise NotEditable(status, "submitted")
    if submitted:
        raise AlreadySubmitted(current_revision)


# ---------------------------------------------------------------------------------------
# The self-check (process sections 2.1 and 3.1): every problem at once, each with its field.

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


def _problem(pointer: str, detail: str) -> Problem:
    return Problem(pointer=pointer, detail=detail)


def _customer(order: OrderDocument) -> Iterator[Problem]:
    c = order.customer
    if _blank(c.name):
        yield _problem("/customer/name", "the customer's name is required")
    if _blank(c.contact_name):
        yield _problem("/customer/contact_name", "the customer's contact person is required")
    if _blank(c.phone) and c.email is None:
        yield _problem("/customer/phone", "a phone number or an email of the customer is required")
    if not _blank(c.phone):
        phone = str(c.phone)
        digits = sum(ch.isdigit() for ch in phone)
        if not _PHONE_CHARS.match(phone) or digits < _MIN_PHONE_DIGITS:
            yield _problem("/customer/phone", f"{phone!r} does not look like a phone number")
    if _blank(c.address):
        yield _problem("/customer/address", "the customer's full address is required")
    if c.company is not None:
        # process 2.1: for a company customer, its kind, business scope and credit standing
        if _blank(c.company.kind):
            yield _problem("/customer/company/kind", "the kind of enterprise is required")
        if _blank(c.company.business_scope):
            yield _problem(
                "/customer/company/business_scope", "the company's business scope is required"
            )
        if c.company.credit_standing is None:
            yield _problem(
                "/customer/company/credit_standing",
                "the company's credit standing is required (good, fair, poor or unknown)",
            )


def _line(order: OrderDocument, index: int, line: OrderLine, today: date) -> Iterator[Problem]:
    at = f"/lines/{index}"
    if _blank(line.item):
        yield _problem(f"{at}/item", "the product or service is required")
    if line.quantity is None:
        yield _problem(f"{at}/quantity", "the quantity is required")
    elif line.quantity <= 0:
        yield _problem(f"{at}/quantity", f"must be greater than 0, not {line.quantity}")
    if _blank(line.unit):
        yield _problem(f"{at}/unit", "the unit is required, e.g. 件, kg, year")
    if line.unit_price is None:
        yield _problem(f"{at}/unit_price", "the unit price is required")
    elif line.unit_price < 0:
        yield _problem(f"{at}/unit_price", f"must not be negative, not {line.unit_price}")
    computed = line.computed_amount()
    if line.amount is not None and computed is not None and line.amount != computed:
        yield _problem(
            f"{at}/amount",
            f"is {line.amount} but quantity x unit price is {computed}",
        )
    has_spec = not (_blank(line.specification) and _blank(line.model))
    if order.order_type in (OrderType.PRODUCT, OrderType.CUSTOM) and not has_spec:
        yield _problem(f"{at}/specification", "a product line needs its specification or model")
    if order.order_type is OrderType.SERVICE:
        yield from _service_terms(at, line, today)


def _service_terms(at: str, line: OrderLine, today: date) -> Iterator[Problem]:
    terms = line.service
    if terms is None:
        yield _problem(
            f"{at}/service", "a service line needs its content, standard and service period"
        )
        return
    if _blank(terms.content):
        yield _problem(f"{at}/service/content", "the content of the service is required")
    if _blank(terms.standard):
        yield _problem(f"{at}/service/standard", "the service standard is required")
    if terms.period_start is None:
        yield _problem(f"{at}/service/period_start", "the start of the service period is required")
    if terms.period_end is None:
        yield _problem(f"{at}/service/period_end", "the end of the service period is required")
    if terms.period_start is not None and terms.period_end is not None:
        if terms.period_end < terms.period_start:
            yield _problem(
                f"{at}/service/period_end",
                f"the service period ends ({terms.period_end}) before it starts "
                f"({terms.period_start})",
            )
        elif terms.period_end < today:
            yield _problem(
                f"{at}/service/period_end",
                f"the service period ended on {terms.period_end}, before today ({today})",
            )


def _order_terms(order: OrderDocument, today: date) -> Iterator[Problem]:
    if order.currency not in ISO_4217:
        yield _problem("/currency", f"{order.currency} is not an ISO 4217 currency")
    if order.tax_rate is None:
        yield _problem("/tax_rate", "the tax rate is required, e.g. 0.13 (use 0 when exempt)")
    if order.delivery.date is None:
        yield _problem("/delivery/date", "the delivery date is required")
    elif order.delivery.date < today:
        yield _problem(
            "/delivery/date",
            f"the delivery date {order.delivery.date} is in the past (today is {today})",
        )
    if _blank(order.delivery.method):
        yield _problem("/delivery/method", "the delivery method is required")
    if _blank(order.payment.method):
        yield _problem("/payment/method", "the payment method is required")
    if _blank(order.payment.terms):
        yield _problem("/payment/terms", "the payment terms (settlement) are required")
    if order.order_type is OrderType.CUSTOM and not order.has_technical_requirements:
        yield _problem(
            "/technical_requirements",
            "a custom order needs its technical requirements for the technical review",
        )
    # process 2.1: the customer confirms the collected information, in writing for the
    # important items, before the order is placed
    confirmation = order.customer_confirmation
    if confirmation is None:
        yield _problem(
            "/customer_confirmation",
            "record how the customer confirmed the order details (email, phone, in person, "
            "signed reply)",
        )
    elif confirmation.confirmed_at is not None and confirmation.confirmed_at.date() > today:
        yield _problem(
            "/customer_confirmation/confirmed_at",
            f"the confirmation date {confirmation.confirmed_at.date()} is in the future",
        )


def self_check(order: OrderDocument, *, today: date) -> list[Problem]:
    """Every problem that keeps the order from review, each with its JSON pointer."""
    # the salesperson is required by the document itself, so a parsed order always has one
    problems = list(_customer(order))
    if not order.lines:
        problems.append(_problem("/lines", "at least one order line is required"))
    for index, line in enumerate(order.lines):
        problems.extend(_line(order, index, line, today))
    problems.extend(_order_terms(order, today))
    return problems


# ---------------------------------------------------------------------------------------
# The read model: how an event moves the order's status.

#: The status each event announces, by AMQP type.
EVENT_STATUS: dict[str, Status] = {
    "order.submitted": Status.SUBMITTED,
    "review.round_opened": Status.IN_REVIEW,
    "order.changes_requested": Status.CHANGES_REQUESTED,
    "order.approved": Status.APPROVED,
    "contract.drafted": Status.CONTRACT_DRAFTED,
    "contract.signed": Status.CONTRACT_SIGNED,
    "order.withdrawn": Status.WITHDRAWN,
}

# From which statuses each status can be reached. Events of different services arrive in
# any order, so a step may be skipped (a contract drafted before the approval reached us),
# but a status never goes back: a late `review.round_opened` after the approval is history.
_BEFORE_DECISION = frozenset({Status.DRAFT, Status.SUBMITTED, Status.IN_REVIEW})
_REACHABLE_FROM: dict[Status, frozenset[Status]] = {
    Status.SUBMITTED: frozenset({Status.DRAFT}),
    Status.IN_REVIEW: frozenset({Status.DRAFT, Status.SUBMITTED}),
    # one round decides once: approval and a request for changes exclude each other
    Status.CHANGES_REQUESTED: _BEFORE_DECISION,
    Status.APPROVED: _BEFORE_DECISION,
    Status.CONTRACT_DRAFTED: _BEFORE_DECISION | {Status.APPROVED},
    Status.CONTRACT_SIGNED: _BEFORE_DECISION | {Status.APPROVED, Status.CONTRACT_DRAFTED},
    # withdrawn from any state before approval (architecture, order states)
    Status.WITHDRAWN: _BEFORE_DECISION | {Status.CHANGES_REQUESTED},
}


@dataclass(frozen=True)
class Projection:
    """What an event does to the order: its new status (None: unchanged) and why."""

    status: Status | None
    outcome: str


def project(
    *, status: Status, current_revision: int, event_type: str, event_revision: int | None
) -> Projection:
    target = EVENT_STATUS.get(event_type)
    if target is None or event_revision is None:
        return Projection(None, "recorded")
    if event_revision < current_revision:
        return Projection(
            None,
            f"ignored: revision {event_revision} is older than the current revision "
            f"{current_revision}",
        )
    if event_revision > current_revision:
        # only intake makes revisions; a later one cannot be ours
        return Projection(
            None, f"ignored: revision {event_revision} is unknown (current {current_revision})"
        )
    if status == target:
        return Projection(None, f"unchanged: already {status.value}")
    if status not in _REACHABLE_FROM[target]:
        return Projection(
            None, f"unchanged: {status.value} does not go back or over to {target.value}"
        )
    return Projection(target, f"{status.value} -> {target.value}")
