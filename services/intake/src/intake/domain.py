"""Order rules: statuses, what may be edited, submitted and withdrawn, the self-check, files,
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

import copy
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from orderflow import limits
from orderflow.messages import (
    AttachmentKind,
    AttachmentRef,
    ConfirmationMethod,
    FieldChange,
    OrderDocument,
    OrderLine,
    OrderType,
    Problem,
)


class Status(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    IN_REVIEW = "in_review"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    CONTRACT_DRAFTED = "contract_drafted"
    CONTRACT_SIGNED = "contract_signed"
    # asked of the review-router, which decides it against the round's decision
    WITHDRAWAL_REQUESTED = "withdrawal_requested"
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
    """The document is refused: every problem, each with its field. `invalid` counts those
    that are type errors (a field that is not what it must be), listed first."""

    def __init__(self, problems: list[Problem], *, invalid: int = 0) -> None:
        self.problems = problems
        self.invalid = invalid
        typed = f" ({invalid} a field of the wrong type)" if invalid == 1 else ""
        typed = typed or (f" ({invalid} fields of the wrong type)" if invalid else "")
        super().__init__(f"self-check failed: {len(problems)} problem(s){typed}")


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
    if computed is not None and abs(computed) > limits.MAX_AMOUNT:
        yield _problem(
            f"{at}/amount",
            f"quantity x unit price is {computed}, more than a contract can state "
            f"({limits.MAX_AMOUNT:,})",
        )
    elif line.amount is not None and computed is not None and line.amount != computed:
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
        yield _problem(
            "/customer_confirmation",
            "record how the customer confirmed the order details (email, phone, in person, "
            "signed reply), when and by whom",
        )
        return
    at = "/customer_confirmation"
    if confirmation.confirmed_at is None:
        yield _problem(f"{at}/confirmed_at", "when the customer confirmed is required")
    elif confirmation.confirmed_at.date() > today:
        yield _problem(
            f"{at}/confirmed_at",
            f"the confirmation date {confirmation.confirmed_at.date()} is in the future",
        )
    if _blank(confirmation.confirmed_by):
        yield _problem(f"{at}/confirmed_by", "who confirmed for the customer is required")
    files = {a.id: a for a in attachments}
    if confirmation.attachment_id is not None:
        named = files.get(confirmation.attachment_id)
        if named is None:
            yield _problem(
                f"{at}/attachment_id",
                f"{confirmation.attachment_id} is not a file of this order's revision; "
                "upload the confirmation and name the id it was given",
            )
        elif named.kind is not AttachmentKind.CUSTOMER_CONFIRMATION:
            yield _problem(
                f"{at}/attachment_id",
                f"{named.name!r} is attached as {named.kind.value}, not as customer_confirmation",
            )
        return
    reason = important_because(order)
    if reason is None:
        return
    how = _METHOD_WORDS[confirmation.method]
    yield _problem(
        f"{at}/attachment_id",
        f"{reason} needs the customer's written confirmation on file (confirmed {how} is "
        "not enough): upload the signed reply or the customer's email as an attachment of "
        "kind customer_confirmation and name its id here",
    )


def _files(order: OrderDocument, attachments: Sequence[AttachmentRef]) -> Iterator[Problem]:
    kinds = {a.kind for a in attachments}
    spec = AttachmentKind.REQUIREMENTS_SPEC in kinds
    if order.order_type is OrderType.CUSTOM and not (spec or AttachmentKind.DRAWING in kinds):
        yield _problem(
            "/attachments",
            "a custom order needs the customer's drawing or requirement specification: "
            "upload it as kind drawing or requirements_spec",
        )
    if order.has_technical_requirements and not spec:
        yield _problem(
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
        problems.append(_problem("/lines", "at least one order line is required"))
    for index, line in enumerate(order.lines):
        problems.extend(_line(order, index, line, today))
    total = order.total()
    if abs(total) > limits.MAX_AMOUNT:
        problems.append(
            _problem(
                "/lines",
                f"the total with tax is {total}, more than a contract can state "
                f"({limits.MAX_AMOUNT:,}); split the order",
            )
        )
    problems.extend(_order_terms(order, today))
    problems.extend(_confirmation(order, attachments, today))
    problems.extend(_files(order, attachments))
    return problems


# ---------------------------------------------------------------------------------------
# The document as it arrived: its type errors and the rules over what did parse, together.


def pointer_of(loc: Sequence[int | str]) -> str:
    """The JSON pointer (RFC 6901) of a location in the document; `/` for the whole."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc]
    return "/" + "/".join(parts) if parts else "/"


def _under(pointer: str, base: str) -> bool:
    return base == "/" or pointer == base or pointer.startswith(base + "/")


#: Stand-ins for required parts the rules never look at, so a broken salesperson does not
#: keep the rest of the document from being checked.
_STAND_INS: Mapping[str, Any] = {"salesperson": {"id": "unknown"}}


def _without(document: dict[str, Any], loc: Sequence[int | str]) -> str | None:
    """Take out the deepest part of `document` along `loc` that exists (an object's key
    goes, a list's item becomes an empty object, so the items after it keep their place);
    its pointer, or None when nothing below the top could go."""
    node: Any = document
    parent: Any = None
    path: list[int | str] = []
    for part in loc:
        here = isinstance(node, dict) and part in node
        here = here or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node))
        if not here:
            break
        path.append(part)
        parent, node = node, node[part]
    if not path:
        return None
    last = path[-1]
    if isinstance(parent, list):
        if parent[int(last)] == {}:
            return None
        parent[int(last)] = {}
    elif len(path) == 1 and isinstance(last, str) and last in _STAND_INS:
        if parent[last] == _STAND_INS[last]:
            return None
        parent[last] = copy.deepcopy(_STAND_INS[last])
    else:
        del parent[last]
    return pointer_of(path)


def _missing_at_top(document: dict[str, Any], loc: Sequence[int | str]) -> str | None:
    # a required part the rules do not need, missing altogether: put its stand-in
    if len(loc) == 1 and loc[0] in _STAND_INS and loc[0] not in document:
        document[str(loc[0])] = copy.deepcopy(_STAND_INS[str(loc[0])])
        return pointer_of(loc)
    return None


#: Each pass takes out at least one part, a parent when its child could not go alone; a
#: document is never nested deeper than this.
_PASSES = 8


def _what_parses(raw: dict[str, Any], errors: list[Any]) -> tuple[OrderDocument | None, set[str]]:
    """The document without its broken parts, and where they were; None when a part the
    rules cannot do without (the order type) is broken."""
    partial = copy.deepcopy(raw)
    removed: set[str] = set()
    for _ in range(_PASSES):
        taken = False
        for err in errors:
            loc = tuple(err["loc"])
            at = _without(partial, loc) or _missing_at_top(partial, loc)
            if at is not None:
                removed.add(at)
                taken = True
        try:
            return OrderDocument.model_validate(partial), removed
        except ValidationError as exc:
            errors = exc.errors()
        if not taken:
            break
    return None, removed


@dataclass(frozen=True)
class Checked:
    """A document as it arrived, checked: the order when every field has its type (None
    otherwise), and every problem, type errors first."""

    document: OrderDocument | None
    problems: list[Problem]
    invalid: int = 0

    def refuse(self) -> None:
        """Raise SelfCheckFailed when there is any problem."""
        if self.problems:
            raise SelfCheckFailed(self.problems, invalid=self.invalid)


def check_document(
    raw: Any, *, today: date, attachments: Sequence[AttachmentRef] | None
) -> Checked:
    """Every problem of a document as it arrived (parsed JSON), at once: each field that is
    not of its type, and then, unless `attachments` is None (a draft being saved, which
    need not be complete), the self-check's rules over the parts of the document that did
    parse, with the files of the revision being submitted (none for a one-step submission).
    Each problem has the JSON pointer of its field; a rule is not reported for a field that
    already has a type error."""
    try:
        document = OrderDocument.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
    else:
        rules = (
            []
            if attachments is None
            else self_check(document, today=today, attachments=attachments)
        )
        return Checked(document, rules)
    invalid = [_problem(pointer_of(err["loc"]), str(err["msg"])) for err in errors]
    if attachments is None or not isinstance(raw, dict):
        return Checked(None, invalid, len(invalid))
    partial, removed = _what_parses(raw, errors)
    if partial is None:
        return Checked(None, invalid, len(invalid))
    broken = removed | {p.pointer for p in invalid}
    rules = [
        p
        for p in self_check(partial, today=today, attachments=attachments)
        if not any(_under(p.pointer, at) for at in broken)
    ]
    return Checked(None, invalid + rules, len(invalid))


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
    # withdrawn from any state before approval (architecture, order states), when the
    # review-router decided the withdrawal came first
    Status.WITHDRAWN: _BEFORE_DECISION | {Status.CHANGES_REQUESTED, Status.WITHDRAWAL_REQUESTED},
}


@dataclass(frozen=True)
class Projection:
    """What an event does to the order: its new status (None: unchanged) and why; while a
    withdrawal waits for its answer, the status the review's events reach meanwhile
    (`held`), which the order takes if the withdrawal is refused."""

    status: Status | None
    outcome: str
    held: Status | None = None
    #: whether the event's details (approved_at, the contract) are kept though the status
    #: does not move: it is held, or the status is the event's already
    details: bool = False


#: The router's answers to a withdrawal.
WITHDRAWN_EVENT = "order.withdrawn"
REFUSED_EVENT = "order.withdrawal_refused"
_DECIDED = frozenset({Status.APPROVED, Status.CONTRACT_DRAFTED, Status.CONTRACT_SIGNED})


def _revision_problem(current_revision: int, event_revision: int) -> Projection | None:
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
    return None


def _move(status: Status, target: Status) -> Projection:
    if status == target:
        return Projection(None, f"unchanged: already {status.value}", details=True)
    if status not in _REACHABLE_FROM[target]:
        return Projection(
            None, f"unchanged: {status.value} does not go back or over to {target.value}"
        )
    return Projection(target, f"{status.value} -> {target.value}")


def _while_withdrawal_requested(event_type: str, held: Status | None) -> Projection:
    """The order told its caller `withdrawal_requested` and must not contradict that before
    the router's answer: the answer moves it; the review's other events (an approval that
    was decided before the withdrawal arrived, its contract) are recorded and held."""
    base = held or Status.SUBMITTED
    if event_type == WITHDRAWN_EVENT:
        return Projection(Status.WITHDRAWN, "withdrawal_requested -> withdrawn")
    if event_type == REFUSED_EVENT:
        # the refusal says the round was approved; a contract may be known already
        target = base if base in _DECIDED else Status.APPROVED
        return Projection(target, f"withdrawal refused: withdrawal_requested -> {target.value}")
    target = EVENT_STATUS[event_type]
    moved = _move(base, target)
    if moved.status is None:
        return Projection(None, f"{moved.outcome} (withdrawal requested)")
    return Projection(
        None,
        f"held while the withdrawal waits for its answer: {base.value} -> {target.value}",
        held=moved.status,
        details=True,
    )


def project(
    *,
    status: Status,
    current_revision: int,
    event_type: str,
    event_revision: int | None,
    held: Status | None = None,
) -> Projection:
    target = EVENT_STATUS.get(event_type)
    if event_type == REFUSED_EVENT:
        target = Status.APPROVED
    if target is None or event_revision is None:
        return Projection(None, "recorded")
    problem = _revision_problem(current_revision, event_revision)
    if problem is not None:
        return problem
    if status is Status.WITHDRAWAL_REQUESTED:
        return _while_withdrawal_requested(event_type, held)
    if event_type == REFUSED_EVENT:
        return Projection(None, f"unchanged: no withdrawal waits (the order is {status.value})")
    return _move(status, target)


# ---------------------------------------------------------------------------------------
# Withdrawal: by the salesperson, before the order is approved.

WITHDRAWABLE: frozenset[Status] = _BEFORE_DECISION | {Status.CHANGES_REQUESTED}


class NotWithdrawable(RuleViolation):
    def __init__(self, status: Status) -> None:
        self.status = status
        if status is Status.WITHDRAWN:
            message = "the order is withdrawn already"
        else:
            message = (
                f"the order is {status.value}; an order can be withdrawn only before it is approved"
            )
        super().__init__(message)


def check_withdrawable(status: Status) -> None:
    if status not in WITHDRAWABLE:
        raise NotWithdrawable(status)


def withdrawal_pending(status: Status) -> bool:
    """Asked already, the answer not yet in: asking again changes nothing (and answers the
    same 202), so a retried request is safe."""
    return status is Status.WITHDRAWAL_REQUESTED


# ---------------------------------------------------------------------------------------
# Optimistic concurrency: the ETag names the current revision and intake's edit counter.


def etag(*, revision: int, version: int) -> str:
    return f'"r{revision}.{version}"'


class StaleVersion(RuleViolation):
    """The request was based on an older state of the order than the current one."""

    def __init__(self, *, sent: str, current: str, revision: int) -> None:
        self.sent = sent
        self.current = current
        self.revision = revision
        super().__init__(
            f"the order changed since it was read: If-Match {sent} but it is now {current} "
            f"(revision {revision}); read it again, apply your changes to that, and retry"
        )


def if_match_names(header: str, current: str) -> bool:
    """Whether an If-Match list names the current ETag (strong comparison, RFC 9110: a
    weak tag never matches; `*` is not accepted here, so nobody overwrites unseen)."""
    tags = [t.strip() for t in header.split(",")]
    return any(t == current for t in tags if t and not t.startswith("W/"))


def check_version(if_match: str | None, *, revision: int, version: int) -> None:
    """A request with If-Match must name the current ETag; one without is not checked."""
    if if_match is None:
        return
    current = etag(revision=revision, version=version)
    if not if_match_names(if_match, current):
        raise StaleVersion(sent=if_match, current=current, revision=revision)


# ---------------------------------------------------------------------------------------
# Revisions under concurrency: a conflict is answered, and the sender may try again.

#: The departments are deciding: intake may not have heard their decision yet.
DECIDING: frozenset[Status] = frozenset({Status.SUBMITTED, Status.IN_REVIEW})


class Conflict(Exception):
    """The request met the order in a state that may pass: reading the order again and
    retrying can succeed (409 over HTTP, a retryable reply on the bus). Not a
    `RuleViolation`: nothing is wrong with the document."""

    retry_after: int | None = None

    def __init__(self, message: str, *, status: Status, revision: int) -> None:
        self.status = status
        self.revision = revision
        super().__init__(message)


class DecisionPending(Conflict):
    """A revision for an order under review: the departments may have sent it back already
    without intake having heard; the caller waits for the decision and tries again."""

    def __init__(self, *, status: Status, revision: int, waited: float | None = None) -> None:
        self.waited = waited
        message = (
            f"the order is {status.value} (revision {revision}) and the departments' decision "
            "has not reached intake"
        )
        if waited is not None:
            message += (
                f" within {waited:g} s; send the revision again when the order is "
                "changes_requested (order.changes_requested) — the document needs no change "
                "for this"
            )
            self.retry_after = max(1, round(waited / 4))
        super().__init__(message, status=status, revision=revision)


class StaleRevision(Conflict):
    """The sender based its revision on an older revision than the order's current one:
    another revision came first."""

    def __init__(self, *, revises: int, status: Status, revision: int) -> None:
        self.revises = revises
        super().__init__(
            f"the order changed: the revision sent revises revision {revises}, but the order "
            f"is now at revision {revision} ({status.value}); read it again, apply your "
            "changes to that, and send them with revises "
            f"{revision}",
            status=status,
            revision=revision,
        )


class UnknownRevision(RuleViolation):
    def __init__(self, *, revises: int, revision: int) -> None:
        self.revises = revises
        super().__init__(
            f"revises names revision {revises}, but the order has revisions up to {revision}"
        )


def check_revises(revises: int | None, *, status: Status, current_revision: int) -> None:
    """A revision based on `revises` (None: not said) may follow the current revision only
    if it was made from it."""
    if revises is None:
        return
    if revises > current_revision:
        raise UnknownRevision(revises=revises, revision=current_revision)
    if revises < current_revision:
        raise StaleRevision(revises=revises, status=status, revision=current_revision)


def check_decided(status: Status, *, current_revision: int) -> None:
    """Before a revision: under review, the decision is awaited (it may be on its way)."""
    if status in DECIDING:
        raise DecisionPending(status=status, revision=current_revision)


def decision_arrived(state: Mapping[str, Any] | None, *, status: Status, revision: int) -> bool:
    """Whether the order moved on from the state a revision found it in."""
    return state is None or state["status"] != status.value or state["current_revision"] != revision


# ---------------------------------------------------------------------------------------
# Likely duplicates across channels: the same purchase-order reference of the same customer.


def _fold(text: str | None) -> str:
    """Letters and digits only, case and width folded: `PO-SJPM 2026/0042` and
    `po sjpm-2026-0042` are the same reference, `Co., Ltd.` and `Co Ltd` the same name."""
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in "LN")


def duplicate_key(*, customer_name: str | None, external_ref: str | None) -> str | None:
    """The key two orders of the same customer purchase order share; None without a ref."""
    ref = _fold(external_ref)
    if not ref:
        return None
    return f"{_fold(customer_name)}\x1f{ref}"


# ---------------------------------------------------------------------------------------
# Files: what may be uploaded, and under which name.


@dataclass(frozen=True)
class FileType:
    content_type: str
    label: str
    extensions: tuple[str, ...]
    #: other content types a client may declare for the same bytes
    aliases: frozenset[str] = field(default_factory=frozenset)


_TEXT_ALIASES = frozenset(
    {
        "text/plain",
        "text/csv",
        "application/csv",
        "text/x-csv",
        "text/comma-separated-values",
        "text/tab-separated-values",
        "text/markdown",
        "text/x-markdown",
        "message/rfc822",
    }
)
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

ALLOWED_FILES: tuple[FileType, ...] = (
    FileType("application/pdf", "PDF", (".pdf",), frozenset({"application/x-pdf"})),
    FileType("image/png", "PNG", (".png",)),
    FileType("image/jpeg", "JPEG", (".jpg", ".jpeg"), frozenset({"image/jpg", "image/pjpeg"})),
    FileType("image/tiff", "TIFF", (".tif", ".tiff"), frozenset({"image/tif"})),
    FileType(DOCX, "Word document (DOCX)", (".docx",)),
    FileType(XLSX, "Excel workbook (XLSX)", (".xlsx",)),
    FileType(
        "image/vnd.dwg",
        "AutoCAD drawing (DWG)",
        (".dwg",),
        frozenset({"application/acad", "application/x-acad", "application/dwg", "image/x-dwg"}),
    ),
    FileType(
        "image/vnd.dxf",
        "drawing exchange file (DXF)",
        (".dxf",),
        frozenset({"application/dxf", "application/x-dxf", "image/x-dxf", "text/plain"}),
    ),
    FileType(
        "text/csv",
        "CSV text",
        (".csv", ".tsv"),
        _TEXT_ALIASES | {"application/vnd.ms-excel"},
    ),
    FileType(
        "text/plain", "plain text (UTF-8)", (".txt", ".text", ".log", ".md", ".eml"), _TEXT_ALIASES
    ),
)
_BY_TYPE = {t.content_type: t for t in ALLOWED_FILES}
_BY_EXTENSION = {ext: t for t in ALLOWED_FILES for ext in t.extensions}
ALLOWED_LABELS = ", ".join(t.label for t in ALLOWED_FILES)

#: Declared types that say nothing about the bytes: the bytes decide.
_UNDECLARED = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/unknown"}
)

#: Names a file must never be saved or opened under, whatever its bytes: a PDF called
#: `invoice.exe` is a trap for whoever downloads it.
_EXECUTABLE = frozenset(
    """.exe .dll .com .bat .cmd .scr .msi .msp .ps1 .psm1 .vbs .vbe .js .jse .mjs .wsf .wsh
    .hta .jar .sh .bash .app .apk .lnk .reg .cpl .html .htm .xhtml .svg .php .py""".split()  # noqa: SIM905
)

_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{d}{n}" for d in ("COM", "LPT") for n in range(1, 10)]
)
_NOT_IN_NAMES = re.compile(r'[<>:"|?*]')
MAX_NAME_CHARS = 200
MAX_NAME_BYTES = 255


def _extension(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    return suffix if 1 < len(suffix) <= 16 else ""


def sanitise_filename(raw: str | None) -> str:
    """A file name safe to show and to offer as a download name: the last path segment
    only, without control or invisible formatting characters (a right-to-left override can
    disguise `exe` as `pdf`), characters Windows refuses, leading dots or `..`, or a
    Windows device name; at most 200 characters and 255 UTF-8 bytes, the extension kept.
    Any script stays as it is: `技术图纸 v2.pdf` is a fine name. May return ''."""
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co"})
    name = _NOT_IN_NAMES.sub("_", name)
    name = " ".join(name.split())
    name = re.sub(r"\.{2,}", ".", name).strip(" .")
    if not name:
        return ""
    ext = name[len(name) - len(_extension(name)) :] if _extension(name) else ""
    stem = name[: len(name) - len(ext)]
    if stem.split(".")[0].upper() in _WINDOWS_DEVICES:
        stem = f"_{stem}"
    room_chars = MAX_NAME_CHARS - len(ext)
    room_bytes = MAX_NAME_BYTES - len(ext.encode())
    stem = stem[:room_chars]
    while len(stem.encode()) > room_bytes:
        stem = stem[:-1]
    return (stem.rstrip(" .") or "attachment") + ext


class FileRefused(RuleViolation):
    """An upload that is not stored: `status` is 415 for a kind of file not accepted, 422
    for a file whose declared type or name disagrees with its bytes."""

    def __init__(self, status: int, problems: list[Problem]) -> None:
        self.status = status
        self.problems = problems
        super().__init__("; ".join(p.detail for p in problems))


def _base_type(declared: str | None) -> str:
    return (declared or "").split(";")[0].strip().lower()


def _describe(content_type: str | None) -> str:
    known = _BY_TYPE.get(content_type or "")
    if known is not None:
        return known.label
    return content_type or "not a recognised kind of file"


@dataclass(frozen=True)
class AcceptedFile:
    content_type: str
    name: str


def accept_file(
    *, detected: str | None, declared: str | None, filename: str | None
) -> AcceptedFile:
    """The content type a file is stored and served with, decided by its bytes (`detected`,
    `text/plain` for UTF-8 text), and its sanitised name. Raises FileRefused when the bytes
    are not an accepted kind of file, or when the declared type or the name's extension
    says something else than the bytes."""
    name = sanitise_filename(filename)
    ext = _extension(name)
    claimed = _base_type(declared)
    if detected == "text/plain" and (
        ext in (".csv", ".tsv") or claimed in ("text/csv", "application/csv", "text/x-csv")
    ):
        detected = "text/csv"
    kind = _BY_TYPE.get(detected or "")
    if kind is None:
        raise FileRefused(
            415,
            [
                _problem(
                    "/file",
                    f"the file's content is {_describe(detected)}, which is not accepted; "
                    f"accepted are {ALLOWED_LABELS}",
                )
            ],
        )
    problems = []
    if claimed not in _UNDECLARED and claimed != kind.content_type and claimed not in kind.aliases:
        problems.append(
            _problem(
                "/file",
                f"the file was sent as {claimed} but its content is {kind.label} "
                f"({kind.content_type}); send it with its real type",
            )
        )
    if ext in _EXECUTABLE:
        raise FileRefused(
            415, [_problem("/file", f"files named *{ext} are not accepted, whatever they hold")]
        )
    named = _BY_EXTENSION.get(ext)
    text_names = kind.content_type in ("text/plain", "text/csv") and named in (
        _BY_TYPE["text/plain"],
        _BY_TYPE["text/csv"],
    )
    if ext and named is not None and named is not kind and not text_names:
        problems.append(
            _problem(
                "/file",
                f"the file is named *{ext} ({named.label}) but its content is {kind.label}; "
                "rename it to what it is",
            )
        )
    if problems:
        raise FileRefused(422, problems)
    if not name:
        name = "attachment"
    if not ext:
        name += kind.extensions[0]
    return AcceptedFile(content_type=kind.content_type, name=name)


def download_path(order_id: UUID, attachment_id: UUID) -> str:
    """Where intake's HTTP API serves an attachment; events carry it, never the bytes."""
    return f"/api/v1/orders/{order_id}/attachments/{attachment_id}"


# ---------------------------------------------------------------------------------------
# Revisions: what changed between two of them, field by field.


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def diff(old: Any, new: Any, pointer: str = "") -> list[FieldChange]:
    """Every difference between two JSON values, as JSON pointers with the old and the new
    value. Objects are compared key by key in sorted order (so the answer does not depend
    on how the documents were stored: PostgreSQL's jsonb keeps no key order), lists item by
    item (an item added at the end is `old: null`, one removed `new: null`); a value that
    changes type is replaced whole. The same two values always give the same list."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[FieldChange] = []
        for key in sorted(old.keys() | new.keys(), key=str):
            at = f"{pointer}/{_escape(str(key))}"
            if key not in old:
                changes.append(FieldChange(pointer=at, old=None, new=new[key]))
            elif key not in new:
                changes.append(FieldChange(pointer=at, old=old[key], new=None))
            else:
                changes.extend(diff(old[key], new[key], at))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        changes = []
        for index in range(max(len(old), len(new))):
            at = f"{pointer}/{index}"
            if index >= len(old):
                changes.append(FieldChange(pointer=at, old=None, new=new[index]))
            elif index >= len(new):
                changes.append(FieldChange(pointer=at, old=old[index], new=None))
            else:
                changes.extend(diff(old[index], new[index], at))
        return changes
    # `1` and `1.0`, `true` and `1` compare equal in Python but not in JSON
    if type(old) is type(new) and old == new:
        return []
    return [FieldChange(pointer=pointer or "/", old=old, new=new)]


def _file_entry(ref: AttachmentRef) -> dict[str, Any]:
    return ref.model_dump(mode="json", exclude={"id"})


def revision_changes(
    *,
    old_document: Mapping[str, Any],
    old_attachments: Sequence[AttachmentRef],
    new_document: Mapping[str, Any],
    new_attachments: Sequence[AttachmentRef],
) -> list[FieldChange]:
    """What a reviewer needs to see between two revisions: the document's fields, then the
    files removed and added, each as `/attachments/<attachment id>`."""
    changes = diff(dict(old_document), dict(new_document))
    old_files = {a.id: a for a in old_attachments}
    new_files = {a.id: a for a in new_attachments}
    for ref in old_attachments:
        if ref.id not in new_files:
            changes.append(
                FieldChange(pointer=f"/attachments/{ref.id}", old=_file_entry(ref), new=None)
            )
    for ref in new_attachments:
        if ref.id not in old_files:
            changes.append(
                FieldChange(pointer=f"/attachments/{ref.id}", old=None, new=_file_entry(ref))
            )
    return changes


# ---------------------------------------------------------------------------------------
# The timeline: every event of an order, said in a line, with who did it.


@dataclass(frozen=True)
class Described:
    actor: dict[str, Any] | None
    summary: str
    details: dict[str, Any]


def _person(kind: str, who: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any] | None:
    if not who or not who.get("id"):
        return None
    return {"kind": kind, "id": who["id"], "name": who.get("name"), **extra}


def _system(service: str) -> dict[str, Any]:
    return {"kind": "system", "id": service, "name": None}


def _departments(feedback: Sequence[Mapping[str, Any]], decision: str) -> list[str]:
    return [f["department"] for f in feedback if f.get("decision") == decision]


def describe(
    event_type: str, payload: Mapping[str, Any], *, salesperson: Mapping[str, Any] | None
) -> Described:
    """One line of the timeline for an event or one of intake's own actions: who, what, and
    the details a reader of the order wants (departments, verdicts, files, contract)."""
    p = payload
    seller = _person("salesperson", salesperson)
    if event_type == "order.created":
        return Described(
            _person("salesperson", p.get("salesperson")) or seller,
            f"Order created ({p.get('channel')})",
            {"channel": p.get("channel"), "submitted_at_once": p.get("submit", False)},
        )
    if event_type == "order.revised":
        revision = p.get("revision")
        return Described(
            _person("salesperson", p.get("salesperson")) or seller,
            f"Revision {revision} edited ({p.get('channel')})",
            {"channel": p.get("channel"), "new_revision": p.get("new_revision", False)},
        )
    if event_type in ("attachment.added", "attachment.removed"):
        file = p.get("attachment", {})
        verb = "added" if event_type == "attachment.added" else "removed"
        return Described(
            seller,
            f"File {verb}: {file.get('name')} ({file.get('kind')})",
            {"attachment": file},
        )
    if event_type == "order.submitted":
        order = p.get("order", {})
        previous = p.get("previous_revision")
        what = f"Revision {p.get('revision')} submitted for review ({p.get('channel')})"
        if previous is not None:
            what += f", {len(p.get('changes', []))} change(s) since revision {previous}"
        return Described(
            _person("salesperson", order.get("salesperson")) or seller,
            what,
            {
                "channel": p.get("channel"),
                "totals": p.get("totals"),
                "attachments": p.get("attachments", []),
                "previous_revision": previous,
                "changes": p.get("changes", []),
            },
        )
    if event_type == "review.round_opened":
        departments = list(p.get("departments", []))
        return Described(
            _system("review-router"),
            f"Review opened: {', '.join(departments)}",
            {"round_id": p.get("round_id"), "departments": departments},
        )
    if event_type == "review.verdict_recorded":
        decision = p.get("decision")
        words = "approved" if decision == "approve" else "asked for changes"
        annotations = list(p.get("annotations", []))
        return Described(
            _person("reviewer", p.get("reviewer"), department=p.get("department")),
            f"{p.get('department')} {words}"
            + (f" ({len(annotations)} annotation(s))" if annotations else ""),
            {
                "department": p.get("department"),
                "decision": decision,
                "comment": p.get("comment"),
                "annotations": annotations,
                "review_id": p.get("review_id"),
            },
        )
    if event_type == "order.changes_requested":
        feedback = list(p.get("feedback", []))
        asking = _departments(feedback, "request_changes")
        return Described(
            _system("review-router"),
            f"Changes requested by {', '.join(asking) or 'the departments'}",
            {"feedback": feedback, "annotations": p.get("annotations", [])},
        )
    if event_type == "order.approved":
        approvals = list(p.get("approvals", []))
        who = ", ".join(_departments(approvals, "approve"))
        return Described(
            _system("review-router"),
            "Approved" + (f" by {who}" if who else ""),
            {"approvals": approvals, "totals": p.get("totals")},
        )
    if event_type == "contract.drafted":
        return Described(
            _system("contracts"),
            f"Contract {p.get('contract_number')} drafted",
            {
                "contract_id": p.get("contract_id"),
                "contract_number": p.get("contract_number"),
                "currency": p.get("currency"),
                "total": p.get("total"),
            },
        )
    if event_type == "contract.signed":
        return Described(
            _system("contracts"),
            f"Contract {p.get('contract_number')} signed",
            {"contract_id": p.get("contract_id"), "contract_number": p.get("contract_number")},
        )
    if event_type in ("notification.delivered", "notification.failed"):
        delivered = event_type == "notification.delivered"
        return Described(
            _system("notifier"),
            f"Notification {'delivered' if delivered else 'failed'}: {p.get('event_type')} to "
            f"{p.get('recipient')} ({p.get('channel')})",
            {
                "recipient": p.get("recipient"),
                "channel": p.get("channel"),
                "event_type": p.get("event_type"),
                **({} if delivered else {"error": p.get("error")}),
            },
        )
    if event_type == "review.overdue":
        return Described(
            _system("review-router"),
            f"Review by {p.get('department')} overdue (due {p.get('due_at')})",
            {"department": p.get("department"), "due_at": p.get("due_at")},
        )
    if event_type == "review.sent":
        due = p.get("due_at")
        return Described(
            _system("review-router"),
            f"Review sent to {p.get('department')}" + (f" (due {due})" if due else ""),
            {
                "department": p.get("department"),
                "review_id": p.get("review_id"),
                "stage": p.get("stage"),
                "due_at": due,
            },
        )
    if event_type == "review.escalated":
        return Described(
            _system("review-router"),
            f"Review by {p.get('department')} escalated to {p.get('escalate_to')} "
            f"(due {p.get('due_at')})",
            {
                "department": p.get("department"),
                "due_at": p.get("due_at"),
                "escalate_to": p.get("escalate_to"),
            },
        )
    if event_type == "order.withdrawal_requested":
        reason = p.get("reason")
        return Described(
            seller,
            "Withdrawal requested" + (f": {reason}" if reason else ""),
            {"reason": reason, "requested_by": p.get("requested_by")},
        )
    if event_type == "order.withdrawn":
        reason = p.get("reason")
        return Described(
            _system("review-router"),
            "Order withdrawn" + (f": {reason}" if reason else ""),
            {"reason": reason, "requested_by": p.get("requested_by")},
        )
    if event_type == "order.withdrawal_refused":
        return Described(
            _system("review-router"),
            f"Withdrawal refused: {p.get('reason')}",
            {
                "reason": p.get("reason"),
                "decision": p.get("decision"),
                "decided_revision": p.get("decided_revision"),
                "withdrawal_reason": p.get("withdrawal_reason"),
                "requested_by": p.get("requested_by"),
            },
        )
    return Described(None, event_type, dict(p))
