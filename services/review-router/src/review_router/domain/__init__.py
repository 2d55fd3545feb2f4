"""Review rounds: who reviews an order, in which order, and when a round is decided.

Pure rules, no I/O. A round belongs to one revision of one order; its plan (from the review
policy) is a list of stages, each a list of departments that review in parallel and a
completion mode. A stage's review requests go out only when every department of the stage
before it approved.

One module per part: `rounds` (plans, rounds, requests, opening and closing), `messages`
(verdicts, annotations, reassignments), `revisions` (resubmission), `withdrawals`, and
`access` (who may speak for a department); everything is reachable from here.
"""

from __future__ import annotations

from .access import (
    Unauthorized,
    VerdictAccess,
    authorize,
    department_users,
)
from .messages import (
    Noted,
    ReviewMessage,
    Step,
    VerdictMismatch,
    apply_annotations,
    apply_verdict,
    check,
    feedback_of,
    reassignment,
)
from .revisions import (
    Submission,
    changes_between,
    kept_approvals,
    submission,
)
from .rounds import (
    Kept,
    PlannedRound,
    Request,
    RequestStatus,
    ReviewPlan,
    Round,
    RoundStatus,
    Stage,
    VerdictOutcome,
    advance,
    cancel_pending,
    close,
    lingering,
    next_stage,
    open_round,
    review_plan,
)
from .withdrawals import (
    APPROVED_FIRST,
    WithdrawalDecision,
    WithdrawalOutcome,
    decide_withdrawal,
    withdrawn_before,
)

__all__ = [
    "APPROVED_FIRST",
    "Kept",
    "Noted",
    "PlannedRound",
    "Request",
    "RequestStatus",
    "ReviewMessage",
    "ReviewPlan",
    "Round",
    "RoundStatus",
    "Stage",
    "Step",
    "Submission",
    "Unauthorized",
    "VerdictAccess",
    "VerdictMismatch",
    "VerdictOutcome",
    "WithdrawalDecision",
    "WithdrawalOutcome",
    "advance",
    "apply_annotations",
    "apply_verdict",
    "authorize",
    "cancel_pending",
    "changes_between",
    "check",
    "close",
    "decide_withdrawal",
    "department_users",
    "feedback_of",
    "kept_approvals",
    "lingering",
    "next_stage",
    "open_round",
    "reassignment",
    "review_plan",
    "submission",
    "withdrawn_before",
]
