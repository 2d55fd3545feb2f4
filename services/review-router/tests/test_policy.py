"""The review policy on its own: every kind of rule, the shipped policy's plans, and policy
files that must be refused with their line and key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from orderflow import jsonpointer
from orderflow.messages import (
    Company,
    Customer,
    OrderDocument,
    OrderLine,
    Payment,
    Salesperson,
    Totals,
)
from review_router import policy
from review_router.policy import Completion, OrderFacts, When

DEFAULT = policy.load()


def order(
    *,
    order_type: str = "product",
    technical: str | None = None,
    unit_price: str = "100.00",
    quantity: str = "1",
    currency: str = "CNY",
    credit: str | None = None,
    settlement_days: int | None = 30,
    customer: str | None = "上海精密机械有限公司",
) -> OrderDocument:
    return OrderDocument(
        order_type=order_type,
        salesperson=Salesperson(id="zhang.wei"),
        customer=Customer(
            name=customer, company=Company(credit_standing=credit) if credit else None
        ),
        lines=[OrderLine(item="法兰", quantity=quantity, unit_price=unit_price)],
        currency=currency,
        technical_requirements=technical,
        payment=Payment(settlement_days=settlement_days),
    )


def facts(new_customer: bool = False, **kwargs: Any) -> OrderFacts:
    document = order(**kwargs)
    return OrderFacts(order=document, totals=Totals.of(document), new_customer=new_customer)


# --- every kind of rule ---------------------------------------------------------------

RULES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("no condition always holds", {}, {}, True),
    ("order type listed", {"order_type": ["service", "product"]}, {}, True),
    ("order type not listed", {"order_type": ["service"]}, {}, False),
    ("currency listed", {"currency": ["USD"]}, {"currency": "USD"}, True),
    ("currency not listed", {"currency": ["USD", "EUR"]}, {}, False),
    ("total above the amount", {"total_above": {"CNY": "99.99"}}, {}, True),
    ("total equal to the amount", {"total_above": {"CNY": "100.00"}}, {}, False),
    ("total below the amount", {"total_above": {"CNY": "100.01"}}, {}, False),
    (
        "total above, per currency",
        {"total_above": {"CNY": "1000", "USD": "50"}},
        {"currency": "USD"},
        True,
    ),
    (
        "a currency without an amount is reviewed",
        {"total_above": {"CNY": "1e9"}},
        {"currency": "JPY"},
        True,
    ),
    ("credit standing listed", {"credit_standing": ["poor", "fair"]}, {"credit": "poor"}, True),
    ("credit standing not listed", {"credit_standing": ["poor"]}, {"credit": "good"}, False),
    ("no credit standing is unknown", {"credit_standing": ["unknown"]}, {}, True),
    (
        "technical requirements present",
        {"technical_requirements": True},
        {"technical": "Ra1.6"},
        True,
    ),
    ("technical requirements absent", {"technical_requirements": True}, {}, False),
    (
        "blank technical requirements are absent",
        {"technical_requirements": False},
        {"technical": "  "},
        True,
    ),
    ("custom product", {"custom_product": True}, {"order_type": "custom"}, True),
    ("not a custom product", {"custom_product": True}, {}, False),
    ("not custom, asked so", {"custom_product": False}, {}, True),
    ("new customer", {"new_customer": True}, {"new_customer": True}, True),
    ("known customer", {"new_customer": True}, {"new_customer": False}, False),
    ("known customer, asked so", {"new_customer": False}, {"new_customer": False}, True),
    ("settlement days above the limit", {"settlement_days_above": 29}, {}, True),
    ("settlement days at the limit", {"settlement_days_above": 30}, {}, False),
    (
        "no settlement days is reviewed",
        {"settlement_days_above": 30},
        {"settlement_days": None},
        True,
    ),
    (
        "every condition must hold",
        {"order_type": ["product"], "total_above": {"CNY": "1000"}},
        {},
        False,
    ),
    (
        "any_of: one alternative holds",
        {"any_of": [{"total_above": {"CNY": "1000"}}, {"credit_standing": ["poor"]}]},
        {"credit": "poor"},
        True,
    ),
    (
        "any_of: no alternative holds",
        {"any_of": [{"total_above": {"CNY": "1000"}}, {"credit_standing": ["poor"]}]},
        {"credit": "good"},
        False,
    ),
]


@pytest.mark.parametrize(("name", "when", "order_facts", "holds"), RULES, ids=[r[0] for r in RULES])
def test_rule(name: str, when: dict[str, Any], order_facts: dict[str, Any], holds: bool) -> None:
    assert When.model_validate(when).holds(facts(**order_facts)) is holds


def test_every_kind_of_rule_is_covered() -> None:
    covered = {key for _, when, _, _ in RULES for key in when}
    assert covered == set(When.model_fields)


# --- the shipped policy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_facts", "stages"),
    [
        ({}, [["supervisor"], ["production", "finance"]]),
        ({"technical": "Ra1.6"}, [["supervisor"], ["production", "finance", "technical"]]),
        ({"order_type": "service"}, [["supervisor"], ["service_delivery", "finance"]]),
        ({"order_type": "custom"}, [["supervisor"], ["production", "finance"]]),
        # above the general manager's amount: a third stage
        (
            {"unit_price": "1000000.01"},
            [["supervisor"], ["production", "finance"], ["general_manager"]],
        ),
        ({"unit_price": "1000000.00"}, [["supervisor"], ["production", "finance"]]),
        (
            {"unit_price": "140000.00", "currency": "USD"},
            [["supervisor"], ["production", "finance"]],
        ),
        (
            {"unit_price": "140000.01", "currency": "USD"},
            [["supervisor"], ["production", "finance"], ["general_manager"]],
        ),
        # a currency the policy gives no amount for cannot be compared: reviewed
        (
            {"unit_price": "10", "currency": "JPY"},
            [["supervisor"], ["production", "finance"], ["general_manager"]],
        ),
    ],
)
def test_default_plan(order_facts: dict[str, Any], stages: list[list[str]]) -> None:
    planned = policy.plan(DEFAULT, facts(**order_facts))
    assert [list(s.departments) for s in planned] == stages
    assert [s.number for s in planned] == [1, 2, 3][: len(stages)]
    assert {s.completion for s in planned} == {Completion.COLLECT}


def test_default_policy_deadlines_and_ownership() -> None:
    [business, departments, management] = DEFAULT.stages
    assert DEFAULT.deadline("supervisor", business) == policy.Deadline(8, 24, "sales.director")
    assert DEFAULT.deadline("technical", departments) == policy.Deadline(48, 24, "technical.head")
    # no contact, no escalation
    assert DEFAULT.deadline("general_manager", management) == policy.Deadline(48, None, None)
    assert not any(DEFAULT.keeps_approval(d) for d in DEFAULT.reviewing_departments)
    assert "/payment" in DEFAULT.owned()["finance"]
    assert DEFAULT.version


def test_policy_from_a_file(tmp_path: Path) -> None:
    file = tmp_path / "policy.toml"
    file.write_text(
        'version = "test-1"\n'
        "[defaults]\n"
        'completion = "fail_fast"\n'
        "due_hours = 0.001\n"
        "[[stages]]\n"
        'name = "only"\n'
        "[[stages.reviews]]\n"
        'department = "legal"\n'
    )
    loaded = policy.load(file)
    assert loaded.version == "test-1"
    [stage] = policy.plan(loaded, facts())
    assert stage.departments == ("legal",)
    assert stage.completion == Completion.FAIL_FAST
    assert stage.deadlines["legal"].due_hours == pytest.approx(0.001)


# --- files that are refused ----------------------------------------------------------------

SHIPPED = (Path(policy.__file__).parent / policy.DEFAULT_POLICY).read_text()


def mutate(old: str, new: str) -> str:
    assert SHIPPED.count(old) == 1, old
    return SHIPPED.replace(old, new)


def line_of(text: str, fragment: str) -> int:
    [number] = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    return number


BAD: list[tuple[str, str, str, str, str]] = [
    # (case, policy text, a fragment of the bad line, key, a fragment of the message)
    (
        "not TOML",
        mutate('name = "business"', 'name = "business'),
        "",
        "",
        "not valid TOML",
    ),
    (
        "a misspelt condition",
        mutate(
            "when = { technical_requirements = true }", "when = { technical_requirement = true }"
        ),
        "technical_requirement = true",
        "stages[1].reviews[3].when.technical_requirement",
        "Extra inputs are not permitted",
    ),
    (
        "an unknown completion mode",
        mutate('completion = "collect"', 'completion = "majority"'),
        'completion = "majority"',
        "defaults.completion",
        "'all', 'collect' or 'fail_fast'",
    ),
    (
        "an amount that is no number",
        mutate('CNY = "1000000.00"', 'CNY = "a million"'),
        'CNY = "a million"',
        "stages[2].reviews[0].when.total_above.CNY",
        "valid decimal",
    ),
    (
        "a negative deadline",
        mutate("due_hours = 48\nescalate_to", "due_hours = -1\nescalate_to"),
        "due_hours = -1",
        "departments.technical.due_hours",
        "greater than 0",
    ),
    (
        "an owned field that is no JSON pointer",
        mutate('owns = ["/lines", "/currency"', 'owns = ["lines", "/currency"'),
        'owns = ["lines", "/currency"',
        "departments.finance.owns[0]",
        "should match pattern",
    ),
    (
        "a department reviewing twice",
        mutate('department = "general_manager"\n', 'department = "finance"\n').replace(
            "[departments.general_manager]", "[departments.unused_gm]"
        ),
        'department = "finance"\n# amounts',
        "stages[2].reviews[0].department",
        "finance already reviews in stage 'departments'",
    ),
    (
        "configuration of a department no stage asks",
        mutate("[departments.general_manager]", "[departments.general_managr]"),
        "[departments.general_managr]",
        "departments.general_managr",
        "reviews in no stage",
    ),
    (
        "keeping approvals without owning a field",
        mutate(
            '[departments.general_manager]\nowns = ["/customer", "/lines", "/currency", '
            '"/tax_rate", "/payment", "/delivery"]',
            "[departments.general_manager]\nkeep_approval_when_untouched = true  # gm",
        ),
        "keep_approval_when_untouched = true  # gm",
        "departments.general_manager.keep_approval_when_untouched",
        "owns no field",
    ),
    (
        "no department reviews every order",
        mutate(
            '[[stages.reviews]]\ndepartment = "supervisor"\n',
            '[[stages.reviews]]\ndepartment = "supervisor"\nwhen = { new_customer = true }\n',
        ).replace('department = "finance"\n', 'department = "finance"\nwhen.currency = ["CNY"]\n'),
        '[[stages]]\nname = "business"',
        "stages",
        "approved unreviewed",
    ),
    (
        "no version",
        mutate('version = "2026.1"\n', ""),
        "",
        "version",
        "Field required",
    ),
]


@pytest.mark.parametrize(("case", "text", "at", "key", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_policy_is_refused_with_line_and_key(
    case: str, text: str, at: str, key: str, message: str
) -> None:
    with pytest.raises(policy.PolicyError) as err:
        policy.parse(text, source="policy.toml")
    assert str(err.value).startswith("invalid review policy policy.toml:")
    matching = [p for p in err.value.problems if message in p.message]
    assert matching, str(err.value)
    problem = matching[0]
    assert problem.key == key
    if at:
        assert text.count(at) == 1, at
        first = text[: text.index(at)].count("\n") + 1
        assert problem.line == first, str(err.value)
        assert f"line {first}, {key}: " in str(err.value)
    if case == "not TOML":
        # tomllib names the line itself
        line = text[: text.index('name = "business')].count("\n") + 1
        assert f"at line {line}," in problem.message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(policy.PolicyError) as err:
        policy.load(tmp_path / "nowhere.toml")
    assert "nowhere.toml" in str(err.value) and "cannot read" in str(err.value)


def test_key_lines_follow_arrays_of_tables() -> None:
    text = (
        'version = "1"\n'  # 1
        "[[stages]]\n"  # 2
        'name = "a"\n'  # 3
        "[[stages.reviews]]\n"  # 4
        'department = "x1"\n'  # 5
        "[[stages]]\n"  # 6
        'name = """multi\n'  # 7
        'department = "not a key"\n'  # 8
        '"""\n'  # 9
        "[[stages.reviews]]\n"  # 10
        "when.currency = []\n"  # 11
    )
    lines = policy.key_lines(text)
    assert lines[("version",)] == 1
    assert lines[("stages", 0, "reviews", 0, "department")] == 5
    assert lines[("stages", 1, "name")] == 7
    assert ("stages", 1, "department") not in lines
    assert lines[("stages", 1, "reviews", 0, "when", "currency")] == 11


# --- ownership and diffs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "owned", "touches"),
    [
        ("/payment/terms", "/payment", True),
        ("/payment", "/payment", True),
        ("/lines", "/lines/0/unit_price", True),  # the whole list replaced
        ("/paymentx", "/payment", False),
        ("/lines/1/quantity", "/lines/0", False),
        ("/anything", "", True),
        ("", "/payment", True),
    ],
)
def test_touches(change: str, owned: str, touches: bool) -> None:
    assert policy.touches(change, owned) is touches


OWNED = {"finance": ["/payment", "/lines"], "technical": ["/technical_requirements"]}


@pytest.mark.parametrize(
    ("department", "changed", "untouched"),
    [
        ("finance", ["/technical_requirements"], True),
        ("finance", ["/payment/terms"], False),
        ("technical", ["/lines/0/unit_price"], True),
        ("technical", ["/notes"], False),  # nobody owns /notes: everybody looks again
        ("finance", [], True),
        ("nobody", ["/payment/terms"], True),
    ],
)
def test_untouched(department: str, changed: list[str], untouched: bool) -> None:
    assert policy.untouched(department, changed, OWNED) is untouched


def test_diff() -> None:
    old = {"a": 1, "lines": [{"q": "1"}, {"q": "2"}], "x/y": "s", "same": [1, 2]}
    new = {"a": 2, "lines": [{"q": "1"}], "x/y": "t", "same": [1, 2], "added": True}
    assert list(jsonpointer.diff(old, new)) == [
        ("/a", 1, 2),
        ("/added", None, True),
        ("/lines/1", {"q": "2"}, None),
        ("/x~1y", "s", "t"),
    ]
    assert list(jsonpointer.diff({"n": 1}, {"n": 1.0})) == [("/n", 1, 1.0)]


def test_customer_key_normalises_the_name() -> None:
    a = order(customer="上海精密机械有限公司")
    b = order(customer="  上海精密机械有限公司 ")
    c = order(customer="ACME  Trading")
    d = order(customer="acme trading")
    assert policy.customer_key(a) == policy.customer_key(b)
    assert policy.customer_key(c) == policy.customer_key(d)
    assert policy.customer_key(order(customer=None)) is None


def test_amounts_are_exact() -> None:
    when = When.model_validate({"total_above": {"CNY": "0.1"}})
    assert when.total_above == {"CNY": Decimal("0.1")}
