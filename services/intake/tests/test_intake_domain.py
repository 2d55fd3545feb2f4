"""Intake's rules, without I/O: the self-check, editing and submitting, the projection."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest

from intake import domain
from intake import settings as intake_settings
from intake.domain import Status
from intake.settings import Settings
from orderflow.messages import AttachmentRef, OrderDocument

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"
TODAY = date(2026, 12, 1)

Mutation = Callable[[dict[str, Any]], None]


def load(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8")))


ORDER_ID = "0193b2f4-5a10-7d22-8e0b-6b2c1e4a7f01"


def file(kind: str, number: int = 1, name: str = "file.pdf") -> AttachmentRef:
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


def pointers(document: dict[str, Any], attachments: list[AttachmentRef] | None = None) -> list[str]:
    """The self-check's problems, by pointer; by default with the files a complete order of
    the examples' kind has (its requirement specification)."""
    files = [SPEC, CONFIRMATION] if attachments is None else attachments
    problems = domain.self_check(
        OrderDocument.model_validate(document), today=TODAY, attachments=files
    )
    assert all(p.detail for p in problems), problems
    return [p.pointer for p in problems]


def setter(path: str, value: Any) -> Mutation:
    """Set (or with `...`, remove) the field at a JSON pointer."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.strip("/").split("/")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is ...:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        for m in mutations:
            m(doc)

    return mutate


#: The customer's written confirmation, uploaded and named, as important orders need it.
CONFIRMED_IN_WRITING = setter("/customer_confirmation/attachment_id", str(CONFIRMATION.id))
CUSTOM = both(setter("/order_type", "custom"), CONFIRMED_IN_WRITING)


@pytest.mark.parametrize("name", ["order-product", "order-service"])
def test_examples_pass_the_self_check(name: str) -> None:
    assert pointers(load(name)) == []


# (example, mutation, the problems expected, by pointer)
CASES: list[tuple[str, str, Mutation, list[str]]] = [
    # customer (process 2.1)
    ("no customer name", "order-product", setter("/customer/name", ...), ["/customer/name"]),
    ("blank customer name", "order-product", setter("/customer/name", "   "), ["/customer/name"]),
    (
        "no contact person",
        "order-product",
        setter("/customer/contact_name", ...),
        ["/customer/contact_name"],
    ),
    (
        "neither phone nor email",
        "order-product",
        both(setter("/customer/phone", ...), setter("/customer/email", ...)),
        ["/customer/phone"],
    ),
    ("email alone is enough", "order-product", setter("/customer/phone", ...), []),
    ("phone alone is enough", "order-product", setter("/customer/email", ...), []),
    (
        "not a phone number",
        "order-product",
        setter("/customer/phone", "ask Li"),
        ["/customer/phone"],
    ),
    ("too few digits", "order-product", setter("/customer/phone", "+86 12"), ["/customer/phone"]),
    ("phone with extension", "order-product", setter("/customer/phone", "021-5555 0101 转 8"), []),
    ("no address", "order-product", setter("/customer/address", ...), ["/customer/address"]),
    (
        "company without its kind",
        "order-product",
        setter("/customer/company/kind", ...),
        ["/customer/company/kind"],
    ),
    (
        "company without business scope",
        "order-product",
        setter("/customer/company/business_scope", ""),
        ["/customer/company/business_scope"],
    ),
    (
        "company without credit standing",
        "order-product",
        setter("/customer/company/credit_standing", ...),
        ["/customer/company/credit_standing"],
    ),
    ("a private customer has no company", "order-product", setter("/customer/company", ...), []),
    (
        "no customer confirmation",
        "order-product",
        setter("/customer_confirmation", ...),
        ["/customer_confirmation"],
    ),
    (
        "confirmed in the future",
        "order-product",
        setter("/customer_confirmation/confirmed_at", "2026-12-05T09:00:00+08:00"),
        ["/customer_confirmation/confirmed_at"],
    ),
    # lines
    ("no lines", "order-product", setter("/lines", []), ["/lines"]),
    ("line without item", "order-product", setter("/lines/1/item", ...), ["/lines/1/item"]),
    ("no quantity", "order-product", setter("/lines/0/quantity", ...), ["/lines/0/quantity"]),
    ("zero quantity", "order-product", setter("/lines/0/quantity", "0"), ["/lines/0/quantity"]),
    (
        "negative quantity",
        "order-product",
        setter("/lines/1/quantity", "-4"),
        ["/lines/1/quantity"],
    ),
    ("no unit", "order-product", setter("/lines/0/unit", " "), ["/lines/0/unit"]),
    ("no unit price", "order-product", setter("/lines/0/unit_price", ...), ["/lines/0/unit_price"]),
    (
        "negative unit price",
        "order-product",
        setter("/lines/0/unit_price", "-0.01"),
        ["/lines/0/unit_price"],
    ),
    ("free of charge", "order-product", setter("/lines/1/unit_price", "0"), []),
    (
        "amount differs from quantity x price",
        "order-product",
        setter("/lines/0/amount", "17100.01"),
        ["/lines/0/amount"],
    ),
    ("amount that adds up", "order-product", setter("/lines/0/amount", "17100.00"), []),
    ("amount without cents", "order-product", setter("/lines/1/amount", "1280"), []),
    (
        "product line without specification or model",
        "order-product",
        both(setter("/lines/0/specification", ...), setter("/lines/0/model", ...)),
        ["/lines/0/specification"],
    ),
    ("a model is enough", "order-product", setter("/lines/0/specification", ...), []),
    ("a specification is enough", "order-product", setter("/lines/0/model", ...), []),
    # custom orders
    (
        "custom order without technical requirements",
        "order-product",
        both(CUSTOM, setter("/technical_requirements", ...)),
        ["/technical_requirements"],
    ),
    (
        "custom order with blank technical requirements",
        "order-product",
        both(CUSTOM, setter("/technical_requirements", "  ")),
        ["/technical_requirements"],
    ),
    (
        "custom line without specification or model",
        "order-product",
        both(
            CUSTOM,
            setter("/lines/1/specification", ...),
            setter("/lines/1/model", ""),
        ),
        ["/lines/1/specification"],
    ),
    ("custom order complete", "order-product", CUSTOM, []),
    # service orders
    (
        "service line without terms",
        "order-service",
        setter("/lines/0/service", ...),
        ["/lines/0/service"],
    ),
    (
        "service without content",
        "order-service",
        setter("/lines/0/service/content", ...),
        ["/lines/0/service/content"],
    ),
    (
        "service without standard",
        "order-service",
        setter("/lines/0/service/standard", ""),
        ["/lines/0/service/standard"],
    ),
    (
        "service without start",
        "order-service",
        setter("/lines/0/service/period_start", ...),
        ["/lines/0/service/period_start"],
    ),
    (
        "service without end",
        "order-service",
        setter("/lines/0/service/period_end", ...),
        ["/lines/0/service/period_end"],
    ),
    (
        "service ends before it starts",
        "order-service",
        setter("/lines/0/service/period_end", "2026-12-31"),
        ["/lines/0/service/period_end"],
    ),
    (
        "service period over",
        "order-service",
        both(
            setter("/lines/0/service/period_start", "2026-01-01"),
            setter("/lines/0/service/period_end", "2026-11-30"),
        ),
        ["/lines/0/service/period_end"],
    ),
    # delivery, payment, money
    ("no delivery date", "order-product", setter("/delivery/date", ...), ["/delivery/date"]),
    (
        "delivery date in the past",
        "order-product",
        setter("/delivery/date", str(TODAY - timedelta(days=1))),
        ["/delivery/date"],
    ),
    ("delivery today", "order-product", setter("/delivery/date", str(TODAY)), []),
    ("no delivery method", "order-service", setter("/delivery/method", ...), ["/delivery/method"]),
    ("no payment method", "order-product", setter("/payment/method", ""), ["/payment/method"]),
    ("no payment terms", "order-product", setter("/payment/terms", ...), ["/payment/terms"]),
    ("no tax rate", "order-product", setter("/tax_rate", ...), ["/tax_rate"]),
    ("tax exempt", "order-product", setter("/tax_rate", "0"), []),
    ("unknown currency", "order-product", setter("/currency", "XYZ"), ["/currency"]),
    (
        "another currency, confirmed in writing",
        "order-service",
        both(setter("/currency", "USD"), CONFIRMED_IN_WRITING),
        [],
    ),
    (
        "another currency, over its threshold without the written confirmation",
        "order-service",
        setter("/currency", "USD"),
        ["/customer_confirmation/attachment_id"],
    ),
]


@pytest.mark.parametrize(
    ("example", "mutation", "expected"),
    [pytest.param(ex, m, exp, id=name) for name, ex, m, exp in CASES],
)
def test_self_check_rule(example: str, mutation: Mutation, expected: list[str]) -> None:
    document = load(example)
    mutation(document)
    assert pointers(document) == expected


def test_every_problem_is_reported_at_once() -> None:
    bare = {"order_type": "product", "salesperson": {"id": "zhang.wei"}}
    assert sorted(pointers(bare)) == sorted(
        [
            "/customer/name",
            "/customer/contact_name",
            "/customer/phone",
            "/customer/address",
            "/customer_confirmation",
            "/lines",
            "/tax_rate",
            "/delivery/date",
            "/delivery/method",
            "/payment/method",
            "/payment/terms",
        ]
    )


def test_problems_of_several_lines_name_their_line() -> None:
    document = load("order-product")
    document["lines"][0]["quantity"] = "0"
    document["lines"][1]["unit_price"] = "-1"
    document["lines"].append({"item": "螺栓"})
    document["delivery"]["date"] = "2020-01-01"
    assert pointers(document) == [
        "/lines/0/quantity",
        "/lines/1/unit_price",
        "/lines/2/quantity",
        "/lines/2/unit",
        "/lines/2/unit_price",
        "/lines/2/specification",
        "/delivery/date",
    ]


def test_problem_details_say_what_is_wrong() -> None:
    document = load("order-product")
    document["lines"][0]["amount"] = "100.00"
    document["delivery"]["date"] = "2026-11-01"
    [amount, delivery] = domain.self_check(
        OrderDocument.model_validate(document), today=TODAY, attachments=[SPEC]
    )
    assert "100.00" in amount.detail and "17100.00" in amount.detail
    assert "2026-11-01" in delivery.detail and "past" in delivery.detail


# ---------------------------------------------------------------------------------------
# editing and submitting


def test_a_draft_is_edited_in_place() -> None:
    target = domain.edit_target(status=Status.DRAFT, current_revision=1, submitted=False)
    assert target == domain.EditTarget(revision=1, replace=True)


def test_editing_after_changes_requested_makes_a_new_revision() -> None:
    target = domain.edit_target(status=Status.CHANGES_REQUESTED, current_revision=2, submitted=True)
    assert target == domain.EditTarget(revision=3, replace=False)
    # and editing that new revision again replaces it, until it is submitted
    again = domain.edit_target(status=Status.CHANGES_REQUESTED, current_revision=3, submitted=False)
    assert again == domain.EditTarget(revision=3, replace=True)


@pytest.mark.parametrize(
    "status", [s for s in Status if s not in (Status.DRAFT, Status.CHANGES_REQUESTED)]
)
def test_other_statuses_are_not_editable(status: Status) -> None:
    with pytest.raises(domain.NotEditable) as caught:
        domain.edit_target(status=status, current_revision=1, submitted=True)
    assert status.value in str(caught.value)
    with pytest.raises(domain.NotEditable):
        domain.check_submittable(status=status, current_revision=1, submitted=True)


def test_submitting_twice_without_changes_is_refused() -> None:
    domain.check_submittable(status=Status.DRAFT, current_revision=1, submitted=False)
    domain.check_submittable(status=Status.CHANGES_REQUESTED, current_revision=2, submitted=False)
    with pytest.raises(domain.AlreadySubmitted, match="revision 1"):
        domain.check_submittable(
            status=Status.CHANGES_REQUESTED, current_revision=1, submitted=True
        )


# ---------------------------------------------------------------------------------------
# the projection: (status, current revision, event, event revision) -> new status or None

S = Status
PROJECTIONS: list[tuple[Status, int, str, int | None, Status | None]] = [
    # the happy path, one step at a time
    (S.DRAFT, 1, "order.submitted", 1, S.SUBMITTED),
    (S.SUBMITTED, 1, "review.round_opened", 1, S.IN_REVIEW),
    (S.IN_REVIEW, 1, "order.changes_requested", 1, S.CHANGES_REQUESTED),
    (S.IN_REVIEW, 2, "order.approved", 2, S.APPROVED),
    (S.APPROVED, 2, "contract.drafted", 2, S.CONTRACT_DRAFTED),
    (S.CONTRACT_DRAFTED, 2, "contract.signed", 2, S.CONTRACT_SIGNED),
    # intake sets `submitted` itself, so its own event changes nothing
    (S.SUBMITTED, 1, "order.submitted", 1, None),
    # a step that arrived late or not at all is skipped, forwards only
    (S.SUBMITTED, 1, "order.approved", 1, S.APPROVED),
    (S.SUBMITTED, 1, "order.changes_requested", 1, S.CHANGES_REQUESTED),
    (S.IN_REVIEW, 1, "contract.drafted", 1, S.CONTRACT_DRAFTED),
    (S.APPROVED, 1, "contract.signed", 1, S.CONTRACT_SIGNED),
    # never backwards
    (S.APPROVED, 1, "review.round_opened", 1, None),
    (S.CHANGES_REQUESTED, 1, "review.round_opened", 1, None),
    (S.CHANGES_REQUESTED, 1, "order.submitted", 1, None),
    (S.CONTRACT_DRAFTED, 1, "order.approved", 1, None),
    (S.CONTRACT_SIGNED, 1, "contract.drafted", 1, None),
    (S.IN_REVIEW, 1, "review.round_opened", 1, None),
    # one round decides once
    (S.CHANGES_REQUESTED, 1, "order.approved", 1, None),
    (S.APPROVED, 1, "order.changes_requested", 1, None),
    # an older revision's events change nothing
    (S.SUBMITTED, 2, "review.round_opened", 1, None),
    (S.IN_REVIEW, 2, "order.changes_requested", 1, None),
    (S.IN_REVIEW, 2, "order.approved", 1, None),
    (S.CHANGES_REQUESTED, 3, "order.withdrawn", 2, None),
    # nor does a revision intake never made
    (S.SUBMITTED, 1, "order.approved", 2, None),
    # withdrawn before approval only, and for good
    (S.DRAFT, 1, "order.withdrawn", 1, S.WITHDRAWN),
    (S.IN_REVIEW, 1, "order.withdrawn", 1, S.WITHDRAWN),
    (S.CHANGES_REQUESTED, 1, "order.withdrawn", 1, S.WITHDRAWN),
    (S.APPROVED, 1, "order.withdrawn", 1, None),
    (S.CONTRACT_SIGNED, 1, "order.withdrawn", 1, None),
    (S.WITHDRAWN, 1, "review.round_opened", 1, None),
    (S.WITHDRAWN, 1, "order.approved", 1, None),
    # events that only go on the timeline
    (S.IN_REVIEW, 1, "review.verdict_recorded", 1, None),
    (S.IN_REVIEW, 1, "review.overdue", 1, None),
    (S.APPROVED, 1, "notification.delivered", None, None),
]


#: What each case of PROJECTIONS says it did (kept on the timeline): the move, or why not.
NO_WAY = "unchanged: {} does not go back or over to {}".format
OLDER = "ignored: revision {} is older than the current revision {}".format
OUTCOMES: dict[str, str] = {
    "draft@1+order.submitted@1": "draft -> submitted",
    "submitted@1+review.round_opened@1": "submitted -> in_review",
    "in_review@1+order.changes_requested@1": "in_review -> changes_requested",
    "in_review@2+order.approved@2": "in_review -> approved",
    "approved@2+contract.drafted@2": "approved -> contract_drafted",
    "contract_drafted@2+contract.signed@2": "contract_drafted -> contract_signed",
    "submitted@1+order.submitted@1": "unchanged: already submitted",
    "submitted@1+order.approved@1": "submitted -> approved",
    "submitted@1+order.changes_requested@1": "submitted -> changes_requested",
    "in_review@1+contract.drafted@1": "in_review -> contract_drafted",
    "approved@1+contract.signed@1": "approved -> contract_signed",
    "approved@1+review.round_opened@1": NO_WAY("approved", "in_review"),
    "changes_requested@1+review.round_opened@1": NO_WAY("changes_requested", "in_review"),
    "changes_requested@1+order.submitted@1": NO_WAY("changes_requested", "submitted"),
    "contract_drafted@1+order.approved@1": NO_WAY("contract_drafted", "approved"),
    "contract_signed@1+contract.drafted@1": NO_WAY("contract_signed", "contract_drafted"),
    "in_review@1+review.round_opened@1": "unchanged: already in_review",
    "changes_requested@1+order.approved@1": NO_WAY("changes_requested", "approved"),
    "approved@1+order.changes_requested@1": NO_WAY("approved", "changes_requested"),
    "submitted@2+review.round_opened@1": OLDER(1, 2),
    "in_review@2+order.changes_requested@1": OLDER(1, 2),
    "in_review@2+order.approved@1": OLDER(1, 2),
    "changes_requested@3+order.withdrawn@2": OLDER(2, 3),
    "submitted@1+order.approved@2": "ignored: revision 2 is unknown (current 1)",
    "draft@1+order.withdrawn@1": "draft -> withdrawn",
    "in_review@1+order.withdrawn@1": "in_review -> withdrawn",
    "changes_requested@1+order.withdrawn@1": "changes_requested -> withdrawn",
    "approved@1+order.withdrawn@1": NO_WAY("approved", "withdrawn"),
    "contract_signed@1+order.withdrawn@1": NO_WAY("contract_signed", "withdrawn"),
    "withdrawn@1+review.round_opened@1": NO_WAY("withdrawn", "in_review"),
    "withdrawn@1+order.approved@1": NO_WAY("withdrawn", "approved"),
    "in_review@1+review.verdict_recorded@1": "recorded",
    "in_review@1+review.overdue@1": "recorded",
    "approved@1+notification.delivered@None": "recorded",
}


@pytest.mark.parametrize(
    ("status", "current", "event_type", "revision", "expected"),
    [
        pytest.param(*case, id=f"{case[0].value}@{case[1]}+{case[2]}@{case[3]}")
        for case in PROJECTIONS
    ],
)
def test_projection(
    status: Status, current: int, event_type: str, revision: int | None, expected: Status | None
) -> None:
    projection = domain.project(
        status=status, current_revision=current, event_type=event_type, event_revision=revision
    )
    assert projection.status == expected
    assert projection.outcome == OUTCOMES[f"{status.value}@{current}+{event_type}@{revision}"]
    if revision is not None and revision < current:
        assert "older" in projection.outcome


WR = S.WITHDRAWAL_REQUESTED

#: While a withdrawal waits for the router's answer: (held status, event, new status, held)
PENDING_WITHDRAWAL = [
    # the answer moves the order
    (S.IN_REVIEW, "order.withdrawn", S.WITHDRAWN, None),
    (S.SUBMITTED, "order.withdrawn", S.WITHDRAWN, None),
    (S.CHANGES_REQUESTED, "order.withdrawn", S.WITHDRAWN, None),
    # refused: the round was approved; a contract known meanwhile is kept
    (S.IN_REVIEW, "order.withdrawal_refused", S.APPROVED, None),
    (S.APPROVED, "order.withdrawal_refused", S.APPROVED, None),
    (S.CONTRACT_DRAFTED, "order.withdrawal_refused", S.CONTRACT_DRAFTED, None),
    # the review's events are held, never shown before the answer
    (S.SUBMITTED, "review.round_opened", None, S.IN_REVIEW),
    (S.IN_REVIEW, "order.approved", None, S.APPROVED),
    (S.APPROVED, "contract.drafted", None, S.CONTRACT_DRAFTED),
    (S.IN_REVIEW, "order.changes_requested", None, S.CHANGES_REQUESTED),
    (S.APPROVED, "review.round_opened", None, None),
    (S.IN_REVIEW, "review.verdict_recorded", None, None),
    (S.IN_REVIEW, "order.withdrawal_requested", None, None),
]


@pytest.mark.parametrize(
    ("held", "event_type", "expected", "now_held"),
    [pytest.param(*case, id=f"{case[0].value}+{case[1]}") for case in PENDING_WITHDRAWAL],
)
def test_projection_while_a_withdrawal_waits(
    held: Status, event_type: str, expected: Status | None, now_held: Status | None
) -> None:
    projection = domain.project(
        status=WR, current_revision=1, event_type=event_type, event_revision=1, held=held
    )
    assert projection.status == expected
    assert projection.held == now_held


def test_a_refusal_without_a_pending_withdrawal_changes_nothing() -> None:
    for status in (S.APPROVED, S.CONTRACT_DRAFTED, S.WITHDRAWN):
        projection = domain.project(
            status=status,
            current_revision=1,
            event_type="order.withdrawal_refused",
            event_revision=1,
        )
        assert projection.status is None


def test_a_pending_withdrawal_is_asked_once() -> None:
    assert domain.withdrawal_pending(WR)
    assert not any(domain.withdrawal_pending(s) for s in S if s is not WR)
    with pytest.raises(domain.NotWithdrawable):
        domain.check_withdrawable(WR)


def test_every_projected_event_is_a_known_event() -> None:
    from orderflow.messages import EVENTS

    assert set(domain.EVENT_STATUS) <= set(EVENTS)


def test_business_day_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    urls = {"database_url": "postgresql://u@db/intake", "amqp_url": "amqp://u:p@mq:5672/"}
    assert isinstance(Settings(**urls).today(), date)
    # half past midnight UTC on 1 March: still 28 February in Los Angeles, morning in Shanghai
    instant = datetime(2026, 3, 1, 0, 30, tzinfo=UTC)

    class Clock(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Any:
            return instant.astimezone(tz)

    monkeypatch.setattr(intake_settings, "datetime", Clock)
    assert Settings(**urls).today() == date(2026, 3, 1)  # Asia/Shanghai, the default
    west = Settings(**urls, business_timezone="America/Los_Angeles")
    assert west.today() == date(2026, 2, 28)
    instant = datetime(2026, 2, 28, 23, 30, tzinfo=UTC)  # before midnight UTC, 1 March there
    assert Settings(**urls).today() == date(2026, 3, 1)
    assert west.today() == date(2026, 2, 28)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Settings(**urls, business_timezone="Mars/Olympus")


# ---------------------------------------------------------------------------------------
# check_document: the type errors and the rules over the rest, at once


def combined() -> dict[str, Any]:
    """The product example (no technical requirements) with a type error and three rule
    errors: a line's quantity that is no number, no contact person, a line whose amount does
    not add up, a delivery date in the past."""
    document = load("order-product")
    del document["technical_requirements"]
    document["lines"][0]["quantity"] = "two hundred"
    del document["customer"]["contact_name"]
    document["lines"][1]["amount"] = "1.00"
    document["delivery"]["date"] = "2026-11-01"
    return document


COMBINED = [
    "/lines/0/quantity",
    "/customer/contact_name",
    "/lines/1/amount",
    "/delivery/date",
]


def test_a_document_gets_its_type_errors_and_its_rule_errors_at_once() -> None:
    checked = domain.check_document(combined(), today=TODAY, attachments=[])
    assert checked.document is None
    assert [p.pointer for p in checked.problems] == COMBINED
    assert checked.invalid == 1
    details = {p.pointer: p.detail for p in checked.problems}
    assert "decimal" in details["/lines/0/quantity"]
    assert "contact person" in details["/customer/contact_name"]
    assert "1.00" in details["/lines/1/amount"] and "1280.00" in details["/lines/1/amount"]
    assert "past" in details["/delivery/date"]
    with pytest.raises(domain.SelfCheckFailed) as refused:
        checked.refuse()
    assert refused.value.invalid == 1 and refused.value.problems == checked.problems


def test_a_field_with_a_type_error_gets_no_rule_problem_as_well() -> None:
    document = load("order-service")
    document["lines"][0]["service"] = "every quarter"
    document["customer_confirmation"]["method"] = "carrier pigeon"
    document["lines"].append("another line")
    checked = domain.check_document(document, today=TODAY, attachments=[])
    # no "the service content is required", no "record how the customer confirmed", and
    # the line after the broken one keeps its number
    assert [p.pointer for p in checked.problems] == [
        "/lines/0/service",
        "/lines/1",
        "/customer_confirmation/method",
    ]


def test_rules_still_run_when_the_salesperson_or_unknown_fields_are_broken() -> None:
    document = combined()
    document["salesperson"] = {"id": "no spaces allowed"}
    document["colour"] = "blue"
    pointers_found = [
        p.pointer for p in domain.check_document(document, today=TODAY, attachments=[]).problems
    ]
    assert pointers_found == ["/salesperson/id", *COMBINED[:1], "/colour", *COMBINED[1:]]


def test_without_an_order_type_only_the_type_errors_can_be_told() -> None:
    document = combined()
    document["order_type"] = "gadget"
    checked = domain.check_document(document, today=TODAY, attachments=[])
    assert [p.pointer for p in checked.problems] == ["/order_type", "/lines/0/quantity"]


def test_a_draft_is_refused_for_its_type_errors_only() -> None:
    checked = domain.check_document(combined(), today=TODAY, attachments=None)
    assert [p.pointer for p in checked.problems] == ["/lines/0/quantity"]
    whole = domain.check_document(load("order-product"), today=TODAY, attachments=None)
    assert whole.document is not None and whole.problems == []


def test_a_well_typed_document_gets_the_self_check_with_its_files() -> None:
    document = load("order-product")  # technical requirements
    assert [
        p.pointer for p in domain.check_document(document, today=TODAY, attachments=[]).problems
    ] == ["/attachments"]
    assert domain.check_document(document, today=TODAY, attachments=[SPEC]).problems == []


def test_a_body_that_is_no_object_is_one_type_error() -> None:
    checked = domain.check_document(["an", "order"], today=TODAY, attachments=[])
    assert [p.pointer for p in checked.problems] == ["/"]
