"""One function per event or command: apply the review rules and write the messages they
cause, all in the caller's transaction (the inbox claim and the outbox commit with the
state).

One module per kind of message: `submissions` (a revision submitted), `verdicts`,
`annotations` (annotations and reassignments), `withdrawals`, `deadlines` (overdue reviews
and escalations); `rounds` holds what several of them do to a round, `common` what they
decide with. The bus, the timers and the tests reach every handler from here.
"""

from __future__ import annotations

from .annotations import on_annotations, on_reassign
from .common import Rules, Sender
from .deadlines import on_timer
from .submissions import on_order_submitted
from .verdicts import on_verdict
from .withdrawals import on_withdrawal_requested

__all__ = [
    "Rules",
    "Sender",
    "on_annotations",
    "on_order_submitted",
    "on_reassign",
    "on_timer",
    "on_verdict",
    "on_withdrawal_requested",
]
