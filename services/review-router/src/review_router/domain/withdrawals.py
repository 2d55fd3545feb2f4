"""A withdrawal decided against the order's rounds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from .rounds import Round, RoundStatus


class WithdrawalOutcome(StrEnum):
    WITHDRAWN = "withdrawn"
    REFUSED = "refused"


#: What the salesperson is told when the approval came first.
APPROVED_FIRST = "the order was approved before the withdrawal arrived"


@dataclass(frozen=True)
class WithdrawalDecision:
    """What a withdrawal does, decided under the order's lock against its rounds: it wins
    unless the order's latest round is approved (then the approval stands)."""

    outcome: WithdrawalOutcome
    close: tuple[Round, ...] = ()
    decided: Round | None = None

    @property
    def reason(self) -> str | None:
        return APPROVED_FIRST if self.outcome is WithdrawalOutcome.REFUSED else None


def decide_withdrawal(existing: Sequence[Round]) -> WithdrawalDecision:
    """Withdrawal against the round's decision. Not yet reviewed (no round yet: the
    submission may still be on its way), under review (an open round) or sent back for
    changes: the withdrawal wins and every open round closes. Approved: the approval came
    first and the withdrawal is refused, so nothing said about the approval is taken back."""
    latest = max(existing, key=lambda r: r.revision, default=None)
    if latest is not None and latest.status == RoundStatus.APPROVED:
        return WithdrawalDecision(WithdrawalOutcome.REFUSED, decided=latest)
    return WithdrawalDecision(
        WithdrawalOutcome.WITHDRAWN,
        close=tuple(r for r in existing if r.status == RoundStatus.OPEN),
        decided=latest,
    )


def withdrawn_before(revision: int, withdrawn_revision: int | None) -> bool:
    """Whether a submitted revision arrives after its order was withdrawn (the submission
    and the withdrawal travel in separate queues): it must open no review."""
    return withdrawn_revision is not None and revision <= withdrawn_revision
