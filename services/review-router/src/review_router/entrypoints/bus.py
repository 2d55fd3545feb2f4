"""Bus subscribers: parse, then call a handler inside the inbox transaction."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from orderflow import busaccess, topology
from orderflow.consumer import Delivery
from orderflow.db import Connection
from orderflow.messages import (
    OrderSubmitted,
    OrderWithdrawalRequested,
    ReassignReview,
    ReviewAnnotated,
    VerdictGiven,
)
from orderflow.service import ServiceRuntime

from .. import domain, handlers

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


def _sender(delivery: Delivery) -> handlers.Sender:
    # a replay comes from the router's own user: the producer it records is the sender
    return handlers.Sender(
        message_id=delivery.message_id, user_id=delivery.producer, routing_key=delivery.routing_key
    )


def register(runtime: ServiceRuntime, rules: handlers.Rules) -> None:
    names = departments(rules.policy.reviewing_departments)

    def now() -> datetime:
        return datetime.now(UTC)

    async def order_submitted(conn: Connection, event: OrderSubmitted, _: Delivery) -> None:
        """Open a review round for the submitted revision and ask its first stage."""
        await handlers.on_order_submitted(conn, event, now=now(), rules=rules)

    async def withdrawal_requested(
        conn: Connection, event: OrderWithdrawalRequested, _: Delivery
    ) -> None:
        """Decide a withdrawal against the round's decision: `order.withdrawn` (the
        withdrawal wins, pending reviews are cancelled) or `order.withdrawal_refused` (the
        round was approved first)."""
        await handlers.on_withdrawal_requested(conn, event, now=now())

    async def verdict_given(conn: Connection, verdict: VerdictGiven, delivery: Delivery) -> None:
        """Record a department's verdict; open the next stage or decide the round."""
        sender = _sender(delivery)
        await handlers.on_verdict(conn, verdict, sender=sender, now=now(), rules=rules)

    async def review_annotated(
        conn: Connection, command: ReviewAnnotated, delivery: Delivery
    ) -> None:
        """Record a department's remarks on fields, made while it reviews."""
        sender = _sender(delivery)
        await handlers.on_annotations(conn, command, sender=sender, now=now(), rules=rules)

    async def reassign_review(
        conn: Connection, command: ReassignReview, delivery: Delivery
    ) -> None:
        """Hand a pending review to another reviewer of the department."""
        sender = _sender(delivery)
        await handlers.on_reassign(conn, command, sender=sender, now=now(), rules=rules)

    runtime.consume(topology.ROUTER_SUBMITTED, order_submitted)
    runtime.consume(topology.ROUTER_WITHDRAWAL_REQUESTS, withdrawal_requested)
    # every department's messages arrive on one queue (bound once per department at start),
    # told apart by their AMQP type; any other type is refused with the types it may have
    runtime.consume_each(
        topology.verdict_queue(names),
        {
            VerdictGiven: verdict_given,
            ReviewAnnotated: review_annotated,
            ReassignReview: reassign_review,
        },
    )
