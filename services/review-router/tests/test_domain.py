"""The review rules on their own: the plan, what each verdict does to its round under each
completion mode, approvals kept across revisions, annotations, and who may speak for a
department."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from uuid import UUID

import pytest

from orderflow.messages import (
    Annotation,
    Decision,
    DepartmentFeedback,
    FieldChange,
    OrderDocument,
    Payment,
    Problem,
    ReviewAnnotated,
    Reviewer,
    Salesperson,
    Totals,
    VerdictGiven,
)
from review_router import domain, policy
from review_router.domain import RequestStatus, RoundStatus, VerdictOutcome
from review_router.policy import Completion

DEFAULT = policy.load()


def order(order_type: str, technical: str | None = None) -> OrderDocument:
    return OrderDocument(
        order_type=order_type,
        salesperson=Salesperson(id="zhang.wei"),
        technical_requirements=technical,
    )


def planned(document: OrderDocument, the_policy: policy.Policy = DEFAULT) -> domain.PlannedRound:
    facts = policy.OrderFacts(order=document, totals=Totals.of(document), new_customer=False)
    return domain.review_plan(the_policy, facts)


def with_completion(mode: Completion, the_policy: policy.Policy = DEFAULT) -> policy.Policy:
    """The policy with its second stage completed as `mode`."""
    stages = list(the_policy.stages)
    stages[1] = stages[1].model_copy(update={"completion": mode})
    return the_policy.model_copy(update={"stages": stages})


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
    result = planned(order(order_type, technical))
    assert result.plan.stages == (
        domain.Stage(1, ("supervisor",), Completion.COLLECT, "business"),
        domain.Stage(2, second_stage, Completion.COLLECT, "departments"),
    )
    assert result.policy_version == DEFAULT.version
    assert set(result.deadlines) == {"supervisor", *second_stage}
    assert result.deadlines["supervisor"].due_hours == 8
    assert result.deadlines["finance"].due_hours == 24
    assert result.deadlines["finance"].escalate_to == "finance.head"


def test_open_round_asks_only_the_first_stage() -> None:
    ids = iter(uuid.UUID(int=i) for i in itertools.count(1))
    plan = planned(order("product", "yes")).plan
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
    mode: Completion = Completion.COLLECT  # of the second stage
    cancelled: tuple[str, ...] = ()  # by the verdict that decided the round


ACC = VerdictOutcome.ACCEPTED
AFTER = VerdictOutcome.AFTER_DECISION
OPEN = RoundStatus.OPEN
CHANGES = RoundStatus.CHANGES_REQUESTED
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
    # --- completion modes of the second stage -------------------------------------------
    Case(
        "collect: one change request after the whole stage answered",
        True,
        [
            ("supervisor", A, ACC, OPEN, 2, ("production", "finance", "technical")),
            ("finance", C, ACC, OPEN, 2, ()),
            ("technical", A, ACC, OPEN, 2, ()),
            ("production", C, ACC, CHANGES, 2, ()),
        ],
        annotations=4,
        feedback=("supervisor", "production", "finance", "technical"),
        mode=Completion.COLLECT,
    ),
    Case(
        "fail_fast: the first request for changes decides and cancels the rest",
        True,
        [
            ("supervisor", A, ACC, OPEN, 2, ("production", "finance", "technical")),
            ("technical", A, ACC, OPEN, 2, ()),
            ("finance", C, ACC, CHANGES, 2, ()),
            ("production", A, VerdictOutcome.ROUND_CLOSED, CHANGES, 2, ()),
        ],
        annotations=3,  # supervisor, technical (info) and finance
        feedback=("supervisor", "finance", "technical"),
        mode=Completion.FAIL_FAST,
        cancelled=("production",),
    ),
    Case(
        "fail_fast: all approving is approval",
        False,
        [
            ("supervisor", A, ACC, OPEN, 2, ("production", "finance")),
            ("finance", A, ACC, OPEN, 2, ()),
            ("production", A, ACC, RoundStatus.APPROVED, 2, ()),
        ],
        feedback=("supervisor", "production", "finance"),
        mode=Completion.FAIL_FAST,
    ),
    Case(
        "all: the first request for changes decides; the others finish, after the decision",
        True,
        [
            ("supervisor", A, ACC, OPEN, 2, ("production", "finance", "technical")),
            ("finance", C, ACC, CHANGES, 2, ()),
            ("production", A, AFTER, CHANGES, 2, ()),
            ("production", A, VerdictOutcome.ROUND_CLOSED, CHANGES, 2, ()),
            ("technical", C, AFTER, CHANGES, 2, ()),
        ],
        annotations=2,  # supervisor and finance: what was known when it was decided
        feedback=("supervisor", "finance"),
        mode=Completion.ALL,
    ),
    Case(
        "all: every department approving is approval",
        False,
        [
            ("supervisor", A, ACC, OPEN, 2, ("production", "finance")),
            ("production", A, ACC, OPEN, 2, ()),
            ("finance", A, ACC, RoundStatus.APPROVED, 2, ()),
            ("finance", C, VerdictOutcome.ROUND_CLOSED, RoundStatus.APPROVED, 2, ()),
        ],
        feedback=("supervisor", "production", "finance"),
        mode=Completion.ALL,
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


def new_round(
    technical: bool, mode: Completion = Completion.COLLECT, *, revision: int = 1
) -> domain.Round:
    return domain.open_round(
        round_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        revision=revision,
        review_plan=planned(
            order("product", "yes" if technical else None), with_completion(mode)
        ).plan,
        new_review_id=uuid.uuid4,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_round_logic(case: Case) -> None:
    r = new_round(case.technical, case.mode)
    last: domain.Step | None = None
    for department, decision, outcome, status, stage, opened in case.steps:
        step = domain.apply_verdict(r, verdict(r, department, decision))
        assert step.outcome == outcome, (department, decision)
        assert step.round.status == status
        assert step.round.current_stage == stage
        assert tuple(q.department for q in step.opened) == opened
        assert all(q.status == RequestStatus.PENDING for q in step.opened)
        if step.decision is not None:
            assert tuple(q.department for q in step.cancelled) == case.cancelled
            assert all(
                step.round.request(q.review_id).status == RequestStatus.CANCELLED  # type: ignore[union-attr]
                for q in step.cancelled
            )
        else:
            assert step.cancelled == ()
        if outcome not in (ACC, AFTER):
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


W = domain.WithdrawalOutcome


@pytest.mark.parametrize(
    ("existing", "outcome", "closed"),
    [
        # not yet reviewed: the submission may still be on its way; the withdrawal wins
        ([], W.WITHDRAWN, []),
        ([(1, RoundStatus.OPEN)], W.WITHDRAWN, [1]),
        # sent back for changes: the order is with the salesperson, who may withdraw it
        ([(1, RoundStatus.CHANGES_REQUESTED)], W.WITHDRAWN, []),
        ([(1, RoundStatus.CHANGES_REQUESTED), (2, RoundStatus.OPEN)], W.WITHDRAWN, [2]),
        # asked again after it won: the same answer
        ([(1, RoundStatus.WITHDRAWN)], W.WITHDRAWN, []),
        # the approval came first and stands
        ([(1, RoundStatus.APPROVED)], W.REFUSED, []),
        ([(1, RoundStatus.CHANGES_REQUESTED), (2, RoundStatus.APPROVED)], W.REFUSED, []),
    ],
)
def test_withdrawal_wins_unless_the_latest_round_is_approved(
    existing: list[tuple[int, RoundStatus]], outcome: domain.WithdrawalOutcome, closed: list[int]
) -> None:
    decided = domain.decide_withdrawal([_round(n, s) for n, s in existing])
    assert decided.outcome is outcome
    assert [r.revision for r in decided.close] == closed
    if outcome is W.REFUSED:
        assert decided.reason == "the order was approved before the withdrawal arrived"
        assert decided.decided is not None and decided.decided.status == RoundStatus.APPROVED
    else:
        assert decided.reason is None


@pytest.mark.parametrize(
    ("revision", "withdrawn_at", "late"),
    [(1, None, False), (1, 1, True), (2, 1, False), (1, 2, True), (2, 2, True)],
)
def test_a_submission_of_a_withdrawn_revision_comes_too_late(
    revision: int, withdrawn_at: int | None, late: bool
) -> None:
    assert domain.withdrawn_before(revision, withdrawn_at) is late


def test_all_mode_leaves_the_stage_reviewing_and_a_new_revision_stops_it() -> None:
    r = new_round(True, Completion.ALL)
    r = domain.apply_verdict(r, verdict(r, "supervisor", A)).round
    step = domain.apply_verdict(r, verdict(r, "finance", C))
    assert step.decision == CHANGES and step.cancelled == ()
    still = [q.department for q in step.round.pending()]
    assert still == ["production", "technical"]
    assert [x.revision for x in domain.lingering([step.round])] == [1]
    stopped, cancelled = domain.cancel_pending(step.round)
    assert [q.department for q in cancelled] == still
    assert stopped.pending() == [] and stopped.status == CHANGES


# --- approvals kept across revisions ----------------------------------------------------


def keeping(*departments: str) -> policy.Policy:
    """The default policy, with `departments` keeping their approvals when untouched."""
    updated = {
        name: (
            d.model_copy(update={"keep_approval_when_untouched": True})
            if name in departments
            else d
        )
        for name, d in DEFAULT.departments.items()
    }
    return DEFAULT.model_copy(update={"departments": updated})


def decided(technical: bool, answers: dict[str, Decision]) -> domain.Round:
    """A revision-1 round answered as `answers` says (in the plan's order)."""
    r = new_round(technical)
    for department, decision in answers.items():
        r = domain.apply_verdict(r, verdict(r, department, decision)).round
    return r


ALL_APPROVE = {"supervisor": A, "production": A, "finance": A, "technical": A}
FINANCE_OBJECTS = {"supervisor": A, "production": A, "finance": C, "technical": A}


@pytest.mark.parametrize(
    ("keepers", "answers", "changed", "kept"),
    [
        # by default every department reviews again
        ((), ALL_APPROVE, ["/payment/terms"], set()),
        # finance's field changed: finance reviews again; the others keep their approval
        (
            ("supervisor", "production", "finance", "technical"),
            FINANCE_OBJECTS,
            ["/payment/terms"],
            {"supervisor", "production", "technical"},
        ),
        # a line changed: everybody who owns /lines reviews again, the supervisor keeps
        (
            ("supervisor", "production", "finance", "technical"),
            ALL_APPROVE,
            ["/lines/0/unit_price"],
            {"supervisor"},
        ),
        # the whole list of lines replaced touches every owner of a line's field
        (("supervisor", "production"), ALL_APPROVE, ["/lines"], {"supervisor"}),
        # a field nobody owns could be anybody's concern: everybody reviews again
        (("supervisor", "production", "finance", "technical"), ALL_APPROVE, ["/unowned"], set()),
        # only departments the policy lets keep do
        (("production",), ALL_APPROVE, ["/customer/name"], {"production"}),
        # a department that asked for changes never keeps anything
        (("finance",), FINANCE_OBJECTS, ["/customer/name"], set()),
        # nothing changed at all: every keeper keeps
        (("supervisor", "finance"), ALL_APPROVE, [], {"supervisor", "finance"}),
    ],
)
def test_kept_approvals(
    keepers: tuple[str, ...],
    answers: dict[str, Decision],
    changed: list[str],
    kept: set[str],
) -> None:
    previous = decided(True, answers)
    plan = planned(order("product", "yes")).plan
    found = domain.kept_approvals(
        previous=previous, plan=plan, policy=keeping(*keepers), changed=changed
    )
    assert set(found) == kept
    for department, k in found.items():
        before = previous.of(department)
        assert before is not None and k.review_id == before.review_id
        assert k.feedback.decision == Decision.APPROVE


def test_a_department_new_to_the_plan_keeps_nothing() -> None:
    previous = decided(False, {"supervisor": A, "production": A, "finance": A})
    plan = planned(order("product", "now with requirements")).plan
    found = domain.kept_approvals(
        previous=previous,
        plan=plan,
        policy=keeping("supervisor", "technical"),
        changed=["/technical_requirements"],
    )
    assert set(found) == {"supervisor"}


def test_kept_approvals_skip_their_stage_and_may_approve_at_once() -> None:
    previous = decided(True, ALL_APPROVE)
    plan = planned(order("product", "yes")).plan
    ids = iter(uuid.UUID(int=i) for i in itertools.count(100))

    def reopen(kept: dict[str, domain.Kept]) -> domain.Round:
        return domain.open_round(
            round_id=uuid.uuid4(),
            order_id=previous.order_id,
            revision=2,
            review_plan=plan,
            new_review_id=lambda: next(ids),
            kept=kept,
        )

    supervisor_kept = reopen(
        domain.kept_approvals(
            previous=previous, plan=plan, policy=keeping("supervisor"), changed=["/lines"]
        )
    )
    # stage 1 passed on the kept approval: stage 2 is asked straight away
    assert supervisor_kept.current_stage == 2 and supervisor_kept.status == RoundStatus.OPEN
    assert [q.department for q in supervisor_kept.pending()] == [
        "production",
        "finance",
        "technical",
    ]
    kept_request = supervisor_kept.of("supervisor")
    assert kept_request is not None and kept_request.status == RequestStatus.APPROVED
    assert kept_request.carried_from == previous.requests[0].review_id

    everyone = reopen(
        domain.kept_approvals(
            previous=previous,
            plan=plan,
            policy=keeping("supervisor", "production", "finance", "technical"),
            changed=[],
        )
    )
    assert everyone.status == RoundStatus.APPROVED and everyone.pending() == []
    assert [f.department for f in everyone.feedback()] == [
        "supervisor",
        "production",
        "finance",
        "technical",
    ]


def test_changes_between_revisions() -> None:
    before = order("product", "Ra1.6")
    after = before.model_copy(
        update={"technical_requirements": "Ra0.8", "payment": Payment(settlement_days=60)}
    )
    changes = domain.changes_between(before, after)
    assert changes == [
        FieldChange(pointer="/payment/settlement_days", old=None, new=60),
        FieldChange(pointer="/technical_requirements", old="Ra1.6", new="Ra0.8"),
    ]
    assert domain.changes_between(before, before) == []


# --- annotations -----------------------------------------------------------------------


def annotated(r: domain.Round, department: str, message: str) -> ReviewAnnotated:
    request = r.of(department)
    assert request is not None
    return ReviewAnnotated(
        review_id=request.review_id,
        order_id=r.order_id,
        revision=r.revision,
        department=department,
        reviewer=Reviewer(id=f"{department}.clerk"),
        annotations=[Annotation(field="/payment/terms", message=message, severity="minor")],
    )


def test_annotations_count_while_the_review_is_pending() -> None:
    r = new_round(False)
    # a later stage cannot annotate before it was asked
    early = domain.apply_annotations(r, annotated(r, "finance", "x"), [])
    assert early.outcome == VerdictOutcome.NOT_REQUESTED and early.round == r
    r = domain.apply_verdict(r, verdict(r, "supervisor", A)).round
    note = annotated(r, "finance", "预付比例至少 50%")
    noted = domain.apply_annotations(r, note, note.annotations)
    assert noted.outcome == ACC
    r = noted.round
    # the verdict repeats the annotation: the salesperson reads it once
    decision = verdict(r, "finance", C).model_copy(
        update={"annotations": [*note.annotations, Annotation(field="/tax_rate", message="9%")]}
    )
    r = domain.apply_verdict(r, decision).round
    step = domain.apply_verdict(r, verdict(r, "production", A))
    assert step.decision == CHANGES
    [finance] = [f for f in step.feedback if f.department == "finance"]
    assert [a.field for a in finance.annotations] == ["/payment/terms", "/tax_rate"]
    assert [a.field for a in step.annotations] == [
        "/supervisor",
        "/production",
        "/payment/terms",
        "/tax_rate",
    ]
    late = domain.apply_annotations(step.round, note, note.annotations)
    assert late.outcome == VerdictOutcome.ROUND_CLOSED


def test_annotations_for_another_department_do_not_match() -> None:
    r = new_round(False)
    wrong = annotated(r, "supervisor", "x").model_copy(update={"department": "finance"})
    with pytest.raises(domain.VerdictMismatch) as err:
        domain.apply_annotations(r, wrong, wrong.annotations)
    assert [p.pointer for p in err.value.problems] == ["/department"]


def test_remarks_merge_annotations_once() -> None:
    a1 = Annotation(field="/a", message="one")
    a2 = Annotation(field="/b", message="two")
    request = domain.Request(
        review_id=UUID(int=1),
        department="finance",
        stage=2,
        status=RequestStatus.CHANGES_REQUESTED,
        feedback=DepartmentFeedback(
            department="finance",
            decision=C,
            reviewer=Reviewer(id="f"),
            annotations=[a2, a1],
        ),
        notes=(a1,),
    )
    remarks = request.remarks()
    assert remarks is not None and remarks.annotations == [a1, a2]


# --- who may speak for a department -----------------------------------------------------

ACCESS = domain.VerdictAccess(
    required=True,
    users=domain.department_users(
        ["supervisor", "finance"], pattern="dept-{department}", explicit={"erp": "finance"}
    ),
    acting=frozenset({"console"}),
)


@pytest.mark.parametrize(
    ("access", "user_id", "department", "routing_key", "refused"),
    [
        (ACCESS, "dept-finance", "finance", "finance", None),
        (ACCESS, "erp", "finance", "finance", None),
        (ACCESS, "console", "supervisor", "supervisor", None),
        (ACCESS, None, "finance", "finance", "without user_id"),
        (ACCESS, "", "finance", "finance", "without user_id"),
        (ACCESS, "dept-finance", "supervisor", "supervisor", "speaks for finance, not supervisor"),
        (ACCESS, "guest", "finance", "finance", "speaks for no department"),
        (ACCESS, "dept-finance", "finance", "supervisor", "routing key"),
        # enforcement off: the sender is not checked, the routing key still is
        (domain.VerdictAccess(required=False, users={}), None, "finance", "finance", None),
        (
            domain.VerdictAccess(required=False, users={}),
            None,
            "finance",
            "technical",
            "routing key",
        ),
    ],
)
def test_authorize(
    access: domain.VerdictAccess,
    user_id: str | None,
    department: str,
    routing_key: str,
    refused: str | None,
) -> None:
    if refused is None:
        domain.authorize(access, user_id=user_id, department=department, routing_key=routing_key)
        return
    with pytest.raises(domain.Unauthorized) as err:
        domain.authorize(access, user_id=user_id, department=department, routing_key=routing_key)
    assert refused in str(err.value)
    assert all(isinstance(p, Problem) for p in err.value.problems)
