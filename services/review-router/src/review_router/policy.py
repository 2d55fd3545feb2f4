"""The review policy: which departments review an order, in which stage, how each stage is
completed, when a review falls due and whom to tell when it is late, and which fields each
department owns (for keeping approvals across revisions).

Data, not code: a versioned TOML file, validated at start. Everything here is pure, apart
from `load()`, which reads the file. A problem in the file is reported with its line and
key, so the router stops at start with a message that names it.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orderflow.messages import CreditStanding, Department, OrderDocument, OrderType, Totals

DEFAULT_POLICY = "default_policy.toml"

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
# a JSON pointer into the order document; "" is the whole document
Pointer = Annotated[str, Field(pattern=r"^(/[^/]*)*$", max_length=300)]
Hours = Annotated[float, Field(gt=0, le=24 * 365)]


class Completion(StrEnum):
    """When a stage is complete.

    - `collect`: wait for every department of the stage; then, if any asked for changes,
      one change request with every department's feedback. The default.
    - `fail_fast`: the first `request_changes` decides the round at once; the stage's other
      pending reviews are cancelled (`review.cancelled`).
    - `all`: every department must approve. The first `request_changes` decides the round
      at once, so the salesperson hears without waiting; the stage's other reviews are not
      cancelled: those departments finish reviewing this revision, their verdicts are
      recorded (outcome `after_decision`) and published, and an approval given so is kept
      on resubmission like any other (see `keep_approval_when_untouched`).
    """

    ALL = "all"
    COLLECT = "collect"
    FAIL_FAST = "fail_fast"


class _Model(BaseModel):
    # a typo in a key must not silently switch a rule off
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class OrderFacts:
    """What the rules look at: the order as submitted, its totals, and what the router knows
    about its customer."""

    order: OrderDocument
    totals: Totals
    new_customer: bool

    @property
    def credit_standing(self) -> CreditStanding:
        company = self.order.customer.company
        if company is None or company.credit_standing is None:
            return CreditStanding.UNKNOWN
        return company.credit_standing


class When(_Model):
    """Conditions of a review; every condition given must hold (an empty `when` always
    holds). `any_of` holds when one of its alternatives does."""

    order_type: list[OrderType] | None = Field(
        default=None, min_length=1, description="The order is of one of these types"
    )
    currency: list[Currency] | None = Field(
        default=None, min_length=1, description="The order is priced in one of these currencies"
    )
    total_above: dict[Currency, Decimal] | None = Field(
        default=None,
        min_length=1,
        description=(
            "The order's total (totals.total) is above the amount given for its currency "
            "(totals.currency). An order in a currency not listed holds too: it cannot be "
            "compared, so it is reviewed."
        ),
    )
    credit_standing: list[CreditStanding] | None = Field(
        default=None,
        min_length=1,
        description="The customer company's credit standing is one of these (none given: unknown)",
    )
    technical_requirements: bool | None = Field(
        default=None, description="The order has (true) or has no (false) technical requirements"
    )
    custom_product: bool | None = Field(
        default=None, description="The order is (true) or is not (false) a custom product order"
    )
    new_customer: bool | None = Field(
        default=None,
        description="No order of this customer was approved before (true), or one was (false)",
    )
    settlement_days_above: int | None = Field(
        default=None,
        ge=0,
        description=(
            "The payment's settlement period is longer than this many days; an order that "
            "names no settlement period holds too (its terms are unknown, so it is reviewed)"
        ),
    )
    any_of: list[When] | None = Field(default=None, min_length=1)

    @property
    def always(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)

    def holds(self, facts: OrderFacts) -> bool:
        return all(check for _, check in self._checks(facts))

    def _checks(self, facts: OrderFacts) -> Iterator[tuple[str, bool]]:
        order, totals = facts.order, facts.totals
        if self.order_type is not None:
            yield "order_type", order.order_type in self.order_type
        if self.currency is not None:
            yield "currency", totals.currency in self.currency
        if self.total_above is not None:
            limit = self.total_above.get(totals.currency)
            yield "total_above", limit is None or totals.total > limit
        if self.credit_standing is not None:
            yield "credit_standing", facts.credit_standing in self.credit_standing
        if self.technical_requirements is not None:
            yield (
                "technical_requirements",
                order.has_technical_requirements == self.technical_requirements,
            )
        if self.custom_product is not None:
            yield "custom_product", (order.order_type == OrderType.CUSTOM) == self.custom_product
        if self.new_customer is not None:
            yield "new_customer", facts.new_customer == self.new_customer
        if self.settlement_days_above is not None:
            days = order.payment.settlement_days
            yield "settlement_days_above", days is None or days > self.settlement_days_above
        if self.any_of is not None:
            yield "any_of", any(alternative.holds(facts) for alternative in self.any_of)


class Review(_Model):
    """A department that reviews in a stage, when its conditions hold."""

    department: Department
    when: When = Field(default_factory=When)


class StagePolicy(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")]
    completion: Completion | None = None
    due_hours: Hours | None = None
    reviews: list[Review] = Field(min_length=1)


class DepartmentPolicy(_Model):
    owns: list[Pointer] = Field(
        default_factory=list,
        description="The fields the department is responsible for, as JSON pointer prefixes",
    )
    keep_approval_when_untouched: bool | None = Field(
        default=None,
        description=(
            "On resubmission, an approval of the previous revision stands when no change "
            "touches a field the department owns (or a field nobody owns)"
        ),
    )
    due_hours: Hours | None = None
    escalate_after_hours: Hours | None = None
    escalate_to: Annotated[str, Field(min_length=1, max_length=300)] | None = Field(
        default=None, description="The department's supervisor contact, told when a review is late"
    )


class Defaults(_Model):
    completion: Completion = Completion.COLLECT
    due_hours: Hours = 24.0
    escalate_after_hours: Hours | None = 24.0
    keep_approval_when_untouched: bool = False


class Policy(_Model):
    version: Annotated[str, Field(min_length=1, max_length=100)]
    description: str | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    departments: dict[Department, DepartmentPolicy] = Field(default_factory=dict)
    stages: list[StagePolicy] = Field(min_length=1)

    @property
    def reviewing_departments(self) -> list[str]:
        """Every department some stage may ask, in the policy's order."""
        return [r.department for s in self.stages for r in s.reviews]

    def department(self, name: str) -> DepartmentPolicy:
        return self.departments.get(name) or DepartmentPolicy()

    def completion(self, stage: StagePolicy) -> Completion:
        return stage.completion or self.defaults.completion

    def deadline(self, department: str, stage: StagePolicy) -> Deadline:
        d = self.department(department)
        escalate_after = d.escalate_after_hours or self.defaults.escalate_after_hours
        return Deadline(
            due_hours=d.due_hours or stage.due_hours or self.defaults.due_hours,
            escalate_after_hours=escalate_after if d.escalate_to else None,
            escalate_to=d.escalate_to,
        )

    def keeps_approval(self, department: str) -> bool:
        d = self.department(department)
        if d.keep_approval_when_untouched is not None:
            return d.keep_approval_when_untouched
        return self.defaults.keep_approval_when_untouched

    def owned(self) -> dict[str, list[str]]:
        return {name: list(d.owns) for name, d in self.departments.items() if d.owns}


@dataclass(frozen=True)
class Deadline:
    """When a review falls due after it was sent, and whom to tell how long after that."""

    due_hours: float
    escalate_after_hours: float | None = None
    escalate_to: str | None = None


@dataclass(frozen=True)
class PlannedStage:
    number: int
    name: str
    completion: Completion
    departments: tuple[str, ...]
    deadlines: Mapping[str, Deadline]


def plan(policy: Policy, facts: OrderFacts) -> list[PlannedStage]:
    """The stages that review this order: each policy stage with the departments whose
    conditions hold; a stage none of whose departments applies is left out. Stages keep
    their number in the policy, so `stage` means the same on every order."""
    stages = []
    for number, stage in enumerate(policy.stages, start=1):
        departments = tuple(r.department for r in stage.reviews if r.when.holds(facts))
        if departments:
            stages.append(
                PlannedStage(
                    number=number,
                    name=stage.name,
                    completion=policy.completion(stage),
                    departments=departments,
                    deadlines={d: policy.deadline(d, stage) for d in departments},
                )
            )
    return stages


# --- loading, with problems named by line and key ----------------------------------------


@dataclass(frozen=True)
class PolicyProblem:
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        at = f"line {self.line}, " if self.line is not None else ""
        return f"{at}{self.key or '(top level)'}: {self.message}"


class PolicyError(Exception):
    """The policy file cannot be used; every problem found is listed."""

    def __init__(self, source: str, problems: Sequence[PolicyProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid review policy {source}:\n{lines}")


def _key(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_HEADER = re.compile(r"^\[\[\s*(?P<array>[^\[\]]+?)\s*\]\]|^\[\s*(?P<table>[^\[\]]+?)\s*\]")
_ASSIGNMENT = re.compile(r"^(?P<key>[A-Za-z0-9_\-\s.\"']+?)\s*=")


def _dotted(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in text.split(".")]


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Where each table and key of a TOML document starts, by its path (array-of-tables
    elements by index). Enough to point at the line of a problem; the parsing itself is
    tomllib's."""
    lines: dict[tuple[str | int, ...], int] = {}
    arrays: dict[tuple[str | int, ...], int] = {}
    current: tuple[str | int, ...] = ()
    in_string = False

    def resolve(keys: list[str]) -> tuple[str | int, ...]:
        path: tuple[str | int, ...] = ()
        for key in keys:
            if path in arrays:
                path = (*path, arrays[path])
            path = (*path, key)
        return path

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        quotes = line.count('"""') + line.count("'''")
        if in_string:
            in_string = quotes % 2 == 0
            continue
        if not line or line.startswith("#"):
            continue
        if (header := _HEADER.match(line)) is not None:
            if header["array"] is not None:
                base = resolve(_dotted(header["array"]))
                lines.setdefault(base, number)
                arrays[base] = arrays.get(base, -1) + 1
                current = (*base, arrays[base])
            else:
                current = resolve(_dotted(header["table"]))
            lines.setdefault(current, number)
        elif (assignment := _ASSIGNMENT.match(line)) is not None:
            lines.setdefault((*current, *_dotted(assignment["key"])), number)
        in_string = quotes % 2 == 1
    return lines


def _line_of(lines: Mapping[tuple[str | int, ...], int], loc: Sequence[str | int]) -> int | None:
    for end in range(len(loc), 0, -1):
        if (found := lines.get(tuple(loc[:end]))) is not None:
            return found
    return None


def _consistency(policy: Policy) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """What the schema alone cannot say."""
    seen: dict[str, str] = {}
    for s, stage in enumerate(policy.stages):
        for r, review in enumerate(stage.reviews):
            if review.department in seen:
                yield (
                    ("stages", s, "reviews", r, "department"),
                    f"{review.department} already reviews in stage {seen[review.department]!r}; "
                    "a department reviews once per round",
                )
            seen.setdefault(review.department, stage.name)
    names = [stage.name for stage in policy.stages]
    for s, name in enumerate(names):
        if names.index(name) != s:
            yield ("stages", s, "name"), f"stage name {name!r} is used twice"
    for name, department in policy.departments.items():
        if name not in seen:
            yield ("departments", name), f"{name} is configured but reviews in no stage"
        if policy.keeps_approval(name) and not department.owns:
            yield (
                ("departments", name, "keep_approval_when_untouched"),
                f"{name} keeps approvals when its fields are untouched, but owns no field "
                "(set `owns`)",
            )
    if not any(review.when.always for stage in policy.stages for review in stage.reviews):
        yield (
            ("stages",),
            "every review has conditions, so some orders would be approved unreviewed; "
            "give at least one department a review without `when`",
        )


def parse(text: str, *, source: str = "<policy>") -> Policy:
    """The policy in `text`, or PolicyError naming every problem with its line and key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, [PolicyProblem("", f"not valid TOML: {exc}")]) from exc
    lines = key_lines(text)
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        problems = [
            PolicyProblem(_key(err["loc"]), err["msg"], _line_of(lines, err["loc"]))
            for err in exc.errors()
        ]
        raise PolicyError(source, problems) from exc
    problems = [
        PolicyProblem(_key(loc), msg, _line_of(lines, loc)) for loc, msg in _consistency(policy)
    ]
    if problems:
        raise PolicyError(source, problems)
    return policy


def load(path: Path | None = None) -> Policy:
    """The policy file at `path`, or the default policy shipped with the router."""
    if path is None:
        text = resources.files("review_router").joinpath(DEFAULT_POLICY).read_text("utf-8")
        return parse(text, source=f"(default) {DEFAULT_POLICY}")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(path), [PolicyProblem("", f"cannot read the file: {exc}")]) from exc
    return parse(text, source=str(path))


# --- who owns what: keeping approvals across revisions -----------------------------------


def touches(change: str, owned: str) -> bool:
    """A change at pointer `change` touches the field `owned` (a pointer prefix) when one
    contains the other: `/lines` replaced touches `/lines/0/unit_price`, and the other way
    round; "" is the whole document."""
    return (
        change == owned
        or owned == ""
        or change == ""
        or change.startswith(owned + "/")
        or owned.startswith(change + "/")
    )


def untouched(department: str, changed: Sequence[str], owned: Mapping[str, Sequence[str]]) -> bool:
    """No change touches a field of `department`, and every change is owned by somebody: a
    change nobody owns could be anybody's concern, so it is reviewed by everybody."""
    mine = owned.get(department, ())
    for change in changed:
        if any(touches(change, prefix) for prefix in mine):
            return False
        if not any(touches(change, p) for prefixes in owned.values() for p in prefixes):
            return False
    return True


def customer_key(order: OrderDocument) -> str | None:
    """How the router recognises a customer it has seen approved: the customer's name,
    normalised (width, case, spacing), else its e-mail address."""
    name = order.customer.name
    if name and name.strip():
        normal = unicodedata.normalize("NFKC", name).casefold()
        return "name:" + " ".join(normal.split())
    if order.customer.email:
        return "email:" + str(order.customer.email).casefold()
    return None
