"""Withdrawal: by the salesperson, before the order is approved."""

from __future__ import annotations

from .statuses import BEFORE_DECISION, RuleViolation, Status

WITHDRAWABLE: frozenset[Status] = BEFORE_DECISION | {Status.CHANGES_REQUESTED}


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
