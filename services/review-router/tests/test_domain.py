"""The review rules on their own: the plan, and what each verdict does to its round."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from uuid import UUID

import pytest

from orderflow.messages import (
    Annotation,
    Decision,
    OrderDocument,
    Reviewer,
    Salesperson,
    VerdictGiven,
)
from review_router import domain
from review_router.domain import RequestStatus, RoundStatus, VerdictOutcome


def order(order_type: str, technical: str | None = None) -> OrderDocument:
    return OrderDocument(
        order_type=order_type,
        salesperson=Salesperson(id="zhang.wei"),
        technical_requirements=technical,
    )


@pytest.mark.parametrize(
    ("order_type", "technical", "second_stage"),
    [
        ("product", None, ("production", "finance")),
        ("product", "密封面粗糙度 Ra1.6", ("production", "finance", "technical")),
        ("product", "   ", ("production", "finance")),
        ("custom", "按客户图纸设计", ("production", "finance", "technical")),
        ("custom", None, ("production", "finance")),
        ("service", None, ("service_delivery", "finance")),
        ("service", "24h remote monitoring", ("service_delivery", "finance", "technical")),
    ],
)
def test_plan(order_type: str, technical: str | None, second_stage: tuple[str, ...]) -> None:
    stages = domain.plan(order(order_type, technical))
    assert stages == [domain.Stage(1, ("supervisor",)), domain.Stage(2, second_stage)]


def test_open_round_asks_only_the_first_stage() -> None:
    ids = iter(uuid.UUID(int=i) for i in itertools.count(1))
    plan = domain.review_plan(order("product", "yes"))
    r = domain.open_round(
        round_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        revision=1,
        review_plan=plan,
        new_review_id=lambda: next(ids),
    )
    assert [(q.department, q.stage, q.status) for q in r.requests] == [
        ("supervisor", 1, RequestStatus.PENDING),
        ("production", 2, RequestStatus.NOT_SENT),
        ("finance", 2, RequestStatus.NOT_SENT),
        ("technical", 2, RequestStatus.NOT_SENT),
    ]
    assert r.status == RoundStatus.OPEN and r.current_stage == 1
    assert len({q.review_id for q in r.requests}) == 4


# --- round logic, table-driven --------------------------------------------------------

A = Decision.APPROVE
C = Decision.REQUEST_CHANGES


@dataclass
class Case:
    name: str
    technical: bool
    # (department, decision, expected outcome, round status after, stage after, opened)
    steps: list[tuple[str, Decision, VerdictOutcome, RoundStatus, int, tuple[str, ...]]]
    annotations: int | None = None  # every annotation, when the round ends in changes
    feedback: tuple[str, ...] = field(default_factory=tuple)


ACC = VerdictOutcome.ACCEPTED
OPEN = RoundStatus.OPEN
CASES = [
    Case(
        "all approve",
        True,
        [
            ("supervisor", A, ACC, OPEN, 2, ("production", "finance", "technical")),
            ("finance", A, ACC, OPEN, 2, ()),
            ("technical", A, ACC, OPEN, 2, ()),
            ("production", A, ACC, RoundStatus.APPROVED, 2, ()),
        ],
        feedback=("supervisor", "production", "finance", "technical"),
    ),
    Case(
        "supervisor asks for changes: later stages never asked",
        True,
        [
            ("supervisor", C, ACC, RoundStatus.CHANGES_REQUESTED, 1, ()),
            ("finance", A, VerdictOutcome.ROUND_CLOSED, RoundStatus.CHANGES_REQUESTED, 1, ()),
        ],
        annotations=1,
        feedback=("supervisor",),
    ),
    Case(
        "changes wait for the rest of the stage",
        True,
        [
            ("supervisor", A, ACC, OPEN, 2, ("production", "finance", "technical")),
            ("finance", C, ACC, OPEN, 2, ()),
            ("production", A, ACC, OPEN, 2, ()),
            ("technical", C, ACC, RoundStatus.CHANGES_REQUESTED, 2, ()),
        ],
        annotations=4,  # supervisor 1 (info), finance 1, production 1 (info), technical 1
        feedback=("supervisor", "production", "finance", "technical"),
    ),
    Case(
        "a second verdict for an answered review is a duplicate",
        False,
        [
            ("supervisor", A, ACC, OPEN, 2, ("production", "finance")),
            ("supervisor", C, VerdictOutcome.DUPLICATE, OPEN, 2, ()),
            ("finance", A, ACC, OPEN, 2, ()),
            ("finance", A, VerdictOutcome.DUPLICATE, OPEN, 2, ()),
            ("production", A, ACC, RoundStatus.APPROVED, 2, ()),
            ("production", C, VerdictOutcome.ROUND_CLOSED, RoundStatus.APPROVED, 2, ()),
        ],
        feedback=("supervisor", "production", "finance"),
    ),
    Case(
        "a later stage answering before it was asked is not requested",
        False,
        [
            ("finance", A, VerdictOutcome.NOT_REQUESTED, OPEN, 1, ()),
            ("supervisor", A, ACC, OPEN, 2, ("production", "finance")),
            ("finance", A, ACC, OPEN, 2, ()),
        ],
    ),
    Case(
        "a decided round takes no more verdicts",
        False,
        [
            ("supervisor", A, ACC, OPEN, 2, ("production", "finance")),
            ("finance", C, ACC, OPEN, 2, ()),
            ("production", C, ACC, RoundStatus.CHANGES_REQUESTED, 2, ()),
            ("supervisor", C, VerdictOutcome.ROUND_CLOSED, RoundStatus.CHANGES_REQUESTED, 2, ()),
        ],
        annotations=3,
        feedback=("supervisor", "production", "finance"),
    ),
]


def verdict(r: domain.Round, department: str, decision: Decision) -> VerdictGiven:
    request = next(q for q in r.requests if q.department == department)
    annotations = [
        Annotation(
            field=f"/{department}",
            message=f"{department} remark",
            severity="info" if decision == A else "blocker",
        )
    ]
    return VerdictGiven(
        review_id=request.review_id,
        order_id=r.order_id,
        revision=r.revision,
        department=department,
        decision=decision,
        reviewer=Reviewer(id=f"{department}.lead"),
        annotations=annotations if (decision == C or department != "finance") else [],
    )


def new_round(technical: bool) -> domain.Round:
    return domain.open_round(
        round_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        revision=1,
        review_plan=domain.review_plan(order("product", "yes" if technical else None)),
        new_review_id=uuid.uuid4,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_round_logic(case: Case) -> None:
    r = new_round(case.technical)
    last: domain.Step | None = None
    for department, decision, outcome, status, stage, opened in case.steps:
        step = domain.apply_verdict(r, verdict(r, department, decision))
        assert step.outcome == outcome, (department, decision)
        assert step.round.status == status
        assert step.round.current_stage == stage
        assert tuple(q.department for q in step.opened) == opened
        assert all(q.status == RequestStatus.PENDING for q in step.opened)
        if outcome != ACC:
            assert step.round == r and step.answered is None and step.decision is None
        r = step.round
        if step.decision is not None:
            assert last is None or last.decision is None, "a round is decided once"
            last = step
    if case.feedback:
        assert last is not None and last.decision == r.status
        assert tuple(f.department for f in last.feedback) == case.feedback
    if case.annotations is not None:
        assert last is not None and last.decision == RoundStatus.CHANGES_REQUESTED
        assert len(last.annotations) == case.annotations
    if r.status == RoundStatus.CHANGES_REQUESTED and r.current_stage == 1:
        assert {q.status for q in r.requests if q.stage == 2} == {RequestStatus.NOT_SENT}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (RoundStatus.SUPERSEDED, VerdictOutcome.STALE),
        (RoundStatus.WITHDRAWN, VerdictOutcome.ROUND_CLOSED),
    ],
)
def test_closed_round_takes_no_verdict(status: RoundStatus, expected: VerdictOutcome) -> None:
    r = new_round(False)
    closed, cancelled = domain.close(r, status)
    assert [q.department for q in cancelled] == ["supervisor"]
    assert closed.requests[0].status == RequestStatus.CANCELLED
    step = domain.apply_verdict(closed, verdict(closed, "supervisor", A))
    assert step.outcome == expected
    assert step.round == closed and not step.opened and step.decision is None


@pytest.mark.parametrize(
    ("change", "pointers"),
    [
        ({"order_id": uuid.UUID(int=7)}, ["/order_id"]),
        ({"revision": 2}, ["/revision"]),
        ({"department": "finance"}, ["/department"]),
        ({"revision": 3, "department": "technical"}, ["/revision", "/department"]),
        ({"review_id": uuid.UUID(int=9)}, ["/review_id"]),
    ],
)
def test_mismatched_verdict_is_refused(change: dict[str, object], pointers: list[str]) -> None:
    r = new_round(False)
    given = verdict(r, "supervisor", A).model_copy(update=change)
    with pytest.raises(domain.VerdictMismatch) as err:
        domain.apply_verdict(r, given)
    assert [p.pointer for p in err.value.problems] == pointers


def _round(revision: int, status: RoundStatus) -> domain.Round:
    return domain.Round(
        id=uuid.uuid4(),
        order_id=UUID(int=1),
        revision=revision,
        status=status,
        current_stage=1,
        requests=(),
    )


@pytest.mark.parametrize(
    ("existing", "revision", "opens", "superseded"),
    [
        ([], 1, True, []),
        ([(1, RoundStatus.OPEN)], 2, True, [1]),
        ([(1, RoundStatus.CHANGES_REQUESTED)], 2, True, []),
        ([(1, RoundStatus.CHANGES_REQUESTED), (2, RoundStatus.OPEN)], 3, True, [2]),
        ([(1, RoundStatus.OPEN)], 1, False, []),  # the same revision again
        ([(2, RoundStatus.OPEN)], 1, False, []),  # an older revision arriving late
    ],
)
def test_submission(
    existing: list[tuple[int, RoundStatus]], revision: int, opens: bool, superseded: list[int]
) -> None:
    result = domain.submission([_round(n, s) for n, s in existing], revision)
    assert result.opens is opens
    assert [r.revision for r in result.supersede] == superseded
    assert (result.ignored_because is None) is opens


def test_withdrawal_closes_only_the_open_round() -> None:
    rounds = [_round(1, RoundStatus.CHANGES_REQUESTED), _round(2, RoundStatus.OPEN)]
    assert [r.revision for r in domain.withdrawal(rounds, 2)] == [2]
    assert domain.withdrawal([_round(1, RoundStatus.APPROVED)], 1) == []
