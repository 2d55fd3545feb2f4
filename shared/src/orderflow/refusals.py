"""Why a message was refused, as a stable code: the same code in the dead letter's
`x-orderflow-reason-code` header, in the refusal reply sent to `reply_to`, and in the guide
(docs/integration.md, "Refusals and their codes"). A code never changes its meaning; new
codes may be added, so a reader treats an unknown one as "refused, see the reason".

Each refusal also has a reason: one sentence for a person, which may change wording.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .messages import Message, MessageRefused, Problem

# --- before the handler: the envelope -------------------------------------------------------
TOO_LARGE = "too_large"
UNEXPECTED_TYPE = "unexpected_type"
MISSING_USER_ID = "missing_user_id"
WRONG_PRODUCER = "wrong_producer"
MISSING_MESSAGE_ID = "missing_message_id"
# --- the body -------------------------------------------------------------------------------
NOT_JSON = "not_json"
INVALID_MESSAGE = "invalid_message"
# --- order.submit (intake) ------------------------------------------------------------------
SELF_CHECK_FAILED = "self_check_failed"
UNKNOWN_ORDER = "unknown_order"
UNKNOWN_REVISION = "unknown_revision"
NOT_EDITABLE = "not_editable"
FILE_REFUSED = "file_refused"
STALE_REVISION = "stale_revision"
DECISION_PENDING = "decision_pending"
# --- department messages (review-router) ----------------------------------------------------
WRONG_ROUTING_KEY = "wrong_routing_key"
NOT_A_DEPARTMENT_USER = "not_a_department_user"
WRONG_DEPARTMENT = "wrong_department"
UNKNOWN_REVIEW = "unknown_review"
REVIEW_MISMATCH = "review_mismatch"
# --- approved orders (contracts) ------------------------------------------------------------
INCOMPLETE_ORDER = "incomplete_order"
# --- faults, not the sender's -------------------------------------------------------------
PROCESSING_FAILED = "processing_failed"
DELIVERY_LIMIT = "delivery_limit"
UNKNOWN = "unknown"

#: Every code, with what it means (the guide's table lists exactly these).
CODES: dict[str, str] = {
    TOO_LARGE: "the body is larger than the limit for its kind of message",
    UNEXPECTED_TYPE: "the AMQP `type` is not one this queue takes",
    MISSING_USER_ID: "the AMQP `user_id` property is not set",
    WRONG_PRODUCER: "the `user_id` is not a user that may send this type",
    MISSING_MESSAGE_ID: "the AMQP `message_id` property is not set",
    NOT_JSON: "the body is not UTF-8 JSON",
    INVALID_MESSAGE: "the body does not match the message's schema (`problems` name the fields)",
    SELF_CHECK_FAILED: "the order document breaks the self-check's rules (`problems`)",
    UNKNOWN_ORDER: "`order_id` names no order",
    UNKNOWN_REVISION: "`revises` names a revision the order does not have",
    NOT_EDITABLE: "the order's status allows no new revision (approved, withdrawn, ...)",
    FILE_REFUSED: "a file named by URL could not be fetched or is not accepted (`problems`)",
    STALE_REVISION: "retryable: another revision came first; read the order and resend",
    DECISION_PENDING: "retryable: the departments' decision has not reached intake yet",
    WRONG_ROUTING_KEY: "the routing key is not the department the message names",
    NOT_A_DEPARTMENT_USER: "the `user_id` speaks for no department",
    WRONG_DEPARTMENT: "the `user_id` speaks for another department than the message names",
    UNKNOWN_REVIEW: "`review_id` names no review request",
    REVIEW_MISMATCH: "`order_id`, `revision` or `department` do not match the review",
    INCOMPLETE_ORDER: "the approved order lacks what a contract needs",
    PROCESSING_FAILED: "the service failed to handle it, several times (not the sender's fault)",
    DELIVERY_LIMIT: "RabbitMQ dead-lettered it after too many redeliveries",
    UNKNOWN: "a dead letter without a code (from before codes, or dead-lettered otherwise)",
}

#: Answered as a retryable conflict, never dead-lettered.
RETRYABLE = frozenset({STALE_REVISION, DECISION_PENDING})


@dataclass(frozen=True)
class Refused:
    """A refusal: its code, one sentence for a person, and the fields at fault."""

    code: str
    reason: str
    problems: Sequence[Problem] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown refusal code {self.code!r}")


#: What a refused message's sender gets on `reply_to`. A service whose senders expect their
#: own reply passes its builder with the subscriber (intake: `order.submit.reply`, decision
#: 0027); every other queue gets `reply_for`'s `message.refused`.
ReplyBuilder = Callable[[Refused, "RefusedMessage"], Message]


@dataclass(frozen=True)
class RefusedMessage:
    message_id: str | None
    message_type: str | None


def reply_for(refused: Refused, message: RefusedMessage) -> Message:
    """The refusal reply of a queue whose subscriber was given none: a `message.refused`."""
    return MessageRefused(
        code=refused.code,
        reason=refused.reason,
        problems=list(refused.problems),
        refused_message_id=message.message_id,
        refused_type=message.message_type,
    )
