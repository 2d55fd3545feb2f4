"""Bus subscribers: parse, then call a handler inside the inbox transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from faststream.message import StreamMessage
from faststream.rabbit.annotations import RabbitMessage

from orderflow import busaccess, refusals, topology
from orderflow.consumer import PermanentError, apply_once
from orderflow.db import Connection
from orderflow.messages import (
    OrderApproved,
    OrderChangesRequested,
    OrderSubmitted,
    OrderWithdrawalRefused,
    OrderWithdrawalRequested,
    OrderWithdrawn,
    Problem,
    ReassignReview,
    ReviewAnnotated,
    ReviewAnnotationRecorded,
    ReviewCancelled,
    ReviewEscalated,
    ReviewOverdue,
    ReviewReassigned,
    ReviewRequested,
    ReviewRoundOpened,
    ReviewSent,
    VerdictGiven,
    VerdictRecorded,
)
from orderflow.service import ServiceRuntime

from .. import domain, handlers

EVENTS = topology.exchange(topology.EVENTS)
REVIEWS = topology.exchange(topology.REVIEWS)
VERDICTS = topology.exchange(topology.VERDICTS)
VERDICTS_CONSUMER = "review-router.verdicts"
DEPARTMENT_MESSAGES = (VerdictGiven, ReviewAnnotated, ReassignReview)


def departments(policy_departments: Iterable[str]) -> list[str]:
    """The process's departments and any the policy adds, each once."""
    return list(dict.fromkeys((*topology.DEFAULT_DEPARTMENTS, *policy_departments)))


def queues(all_departments: Iterable[str]) -> tuple[topology.QueueSpec, ...]:
    """What the router declares at start. It owns the department queues (a policy's own
    departments included), so a review request is routable, and waits for its department,
    even before that department's first reviewer connects."""
    names = list(all_departments)
    return (
        topology.ROUTER_SUBMITTED,
        topology.ROUTER_WITHDRAWAL_REQUESTS,
        topology.verdict_queue(names),
        *(topology.department_queue(d) for d in names),
    )


def department_producers(access: domain.VerdictAccess) -> dict[str, frozenset[str]]:
    """The users whose department messages the runtime lets through to the handlers, which
    then check the department each user speaks for (`domain.authorize`)."""
    if not access.required:
        return {}
    users = frozenset(access.users) | access.acting
    return {kind: users for kind in busaccess.DEPARTMENT_TYPES}


def _of_type(model: type[Any]) -> Callable[[StreamMessage[Any]], bool]:
    def matches(message: StreamMessage[Any]) -> bool:
        return bool(message.raw_message.type == model.message_type)

    return matches


def _sender(runtime: ServiceRuntime, msg: RabbitMessage) -> handlers.Sender:
    raw = msg.raw_message
    # a replay comes from the router's own user: the producer it records is the sender
    user = runtime.trust.producer_of(raw.user_id, raw.headers or {})
    return handlers.Sender(
        message_id=str(raw.message_id), user_id=user, routing_key=raw.routing_key
    )


def register(runtime: ServiceRuntime, rules: handlers.Rules) -> None:
    names = departments(rules.policy.reviewing_departments)

    def now() -> datetime:
        return datetime.now(UTC)

    @runtime.subscriber(topology.ROUTER_SUBMITTED)
    async def order_submitted(event: OrderSubmitted, msg: RabbitMessage) -> None:
        """Open a review round for the submitted revision and ask its first stage."""

        async def effect(conn: Connection) -> None:
            await handlers.on_order_submitted(conn, event, now=now(), rules=rules)

        await apply_once(runtime.pool, msg, consumer="review-router.order-submitted", effect=effect)

    @runtime.subscriber(topology.ROUTER_WITHDRAWAL_REQUESTS)
    async def withdrawal_requested(event: OrderWithdrawalRequested, msg: RabbitMessage) -> None:
        """Decide a withdrawal against the round's decision: `order.withdrawn` (the
        withdrawal wins, pending reviews are cancelled) or `order.withdrawal_refused` (the
        round was approved first)."""

        async def effect(conn: Connection) -> None:
            await handlers.on_withdrawal_requested(conn, event, now=now())

        await apply_once(
            runtime.pool, msg, consumer="review-router.withdrawal-requests", effect=effect
        )

    # every department's messages arrive on one queue (bound once per department at start),
    # told apart by their AMQP type
    department_messages = runtime.subscriber(
        topology.verdict_queue(names),
        title="review-router.verdicts",
        description=(
            "What departments send, on orderflow.verdicts with the department as routing key "
            "and, told apart by the AMQP type: review.verdict (VerdictGiven), "
            "review.annotation (ReviewAnnotated) and review.reassign (ReassignReview). Each "
            "must carry the AMQP user_id of a RabbitMQ user that speaks for the department "
            "(RabbitMQ checks it against the connection's user); anything else is "
            "dead-lettered to review-router.verdicts.dlq with the reason."
        ),
    )

    async def once(msg: RabbitMessage, apply: Callable[[Connection], Awaitable[Any]]) -> None:
        async def effect(conn: Connection) -> None:
            await apply(conn)

        await apply_once(runtime.pool, msg, consumer=VERDICTS_CONSUMER, effect=effect)

    @department_messages(filter=_of_type(VerdictGiven))
    async def verdict_given(verdict: VerdictGiven, msg: RabbitMessage) -> None:
        """Record a department's verdict; open the next stage or decide the round."""
        sender = _sender(runtime, msg)
        await once(
            msg,
            lambda conn: handlers.on_verdict(conn, verdict, sender=sender, now=now(), rules=rules),
        )

    @department_messages(filter=_of_type(ReviewAnnotated))
    async def review_annotated(command: ReviewAnnotated, msg: RabbitMessage) -> None:
        """Record a department's remarks on fields, made while it reviews."""
        sender = _sender(runtime, msg)
        await once(
            msg,
            lambda conn: handlers.on_annotations(
                conn, command, sender=sender, now=now(), rules=rules
            ),
        )

    @department_messages(filter=_of_type(ReassignReview))
    async def reassign_review(command: ReassignReview, msg: RabbitMessage) -> None:
        """Hand a pending review to another reviewer of the department."""
        sender = _sender(runtime, msg)
        await once(
            msg,
            lambda conn: handlers.on_reassign(conn, command, sender=sender, now=now(), rules=rules),
        )

    @department_messages
    async def other_type(msg: RabbitMessage) -> None:
        """Anything else on the verdicts exchange is refused, with the types it may have."""
        known = ", ".join(m.message_type for m in DEPARTMENT_MESSAGES)
        kind = msg.raw_message.type
        raise PermanentError(
            f"unknown message type {kind!r} on {topology.VERDICTS}: expected one of {known}",
            [Problem(pointer="", detail=f"the AMQP type must be one of {known}")],
            code=refusals.UNEXPECTED_TYPE,
        )

    _document_publishers(runtime, names)


def _document_publishers(runtime: ServiceRuntime, names: Iterable[str]) -> None:
    """What the outbox publishes, for AsyncAPI; publishing itself goes through the outbox."""
    broker = runtime.broker
    for department in names:
        broker.publisher(
            "",
            REVIEWS,
            routing_key=department,
            schema=ReviewRequested,
            title=f"review.requested:{department}",
            description=(
                f"Asks {department} to review a revision of an order; arrives on the queue "
                f"review.{department}. Answer with `review.verdict` on orderflow.verdicts "
                "(routing key = the department, AMQP user_id = your RabbitMQ user)."
            ),
            include_in_schema=True,
        )
        broker.publisher(
            "",
            REVIEWS,
            routing_key=department,
            schema=ReviewCancelled,
            title=f"review.cancelled:{department}",
            description=(
                f"Tells {department} a pending review is no longer needed (a newer revision "
                "was submitted, the order was withdrawn, or the round was decided by another "
                "department's request for changes under `fail_fast`)."
            ),
            include_in_schema=True,
        )
    events = (
        (
            ReviewRoundOpened,
            "A review round was opened for a submitted revision; `departments` is the "
            "policy's plan, not who was asked (see review.sent).",
        ),
        (
            ReviewSent,
            "A review request was sent to a department's queue: when the round opens (its "
            "first stage) and when a later stage opens. A planned department that is never "
            "asked has none.",
        ),
        (VerdictRecorded, "A department's verdict was recorded against its round."),
        (
            ReviewAnnotationRecorded,
            "A department posted remarks on fields while reviewing; they go to the "
            "salesperson with the round's change request.",
        ),
        (ReviewReassigned, "A department handed a pending review to another reviewer."),
        (ReviewOverdue, "A review is still unanswered at its due time (a reminder)."),
        (
            ReviewEscalated,
            "A review is still unanswered long after its due time: the department's "
            "supervisor contact is told.",
        ),
        (OrderApproved, "Every department of every stage approved the revision."),
        (
            OrderWithdrawn,
            "The withdrawal won: the round was not yet decided (or was sent back for "
            "changes); it is closed, pending reviews are cancelled, no approval follows.",
        ),
        (
            OrderWithdrawalRefused,
            "The round was approved before the withdrawal arrived: the approval stands.",
        ),
        (
            OrderChangesRequested,
            "A department asked for changes: every department's feedback and every "
            "annotation of the round, for the salesperson.",
        ),
    )
    for model, description in events:
        broker.publisher(
            "",
            EVENTS,
            routing_key=model.message_type,
            schema=model,
            title=model.message_type,
            description=description,
            include_in_schema=True,
        )
