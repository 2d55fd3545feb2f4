"""Bus subscribers: each queue's handler, run by the runtime inside the inbox transaction."""

from __future__ import annotations

from orderflow import topology
from orderflow.consumer import Delivery
from orderflow.db import Connection
from orderflow.messages import (
    ContractDrafted,
    OrderApproved,
    OrderChangesRequested,
    OrderWithdrawalRefused,
    ReviewEscalated,
    ReviewOverdue,
    ReviewSent,
)
from orderflow.service import ServiceRuntime

from .. import handlers

QUEUES = (
    topology.NOTIFIER_CHANGES_REQUESTED,
    topology.NOTIFIER_APPROVED,
    topology.NOTIFIER_CONTRACT_DRAFTED,
    topology.NOTIFIER_REVIEW_SENT,
    topology.NOTIFIER_REVIEW_OVERDUE,
    topology.NOTIFIER_REVIEW_ESCALATED,
    topology.NOTIFIER_WITHDRAWAL_REFUSED,
)


def register(runtime: ServiceRuntime, deps: handlers.Notifying) -> None:
    async def order_changes_requested(
        conn: Connection, event: OrderChangesRequested, delivery: Delivery
    ) -> None:
        """Tell the salesperson what every department asked to change."""
        await handlers.on_changes_requested(conn, event, event_id=delivery.message_id, deps=deps)

    async def order_approved(conn: Connection, event: OrderApproved, delivery: Delivery) -> None:
        """Tell the salesperson the order passed review."""
        await handlers.on_approved(conn, event, event_id=delivery.message_id, deps=deps)

    async def contract_drafted(
        conn: Connection, event: ContractDrafted, delivery: Delivery
    ) -> None:
        """Tell the salesperson the contract is ready."""
        await handlers.on_contract_drafted(conn, event, event_id=delivery.message_id, deps=deps)

    async def review_sent(conn: Connection, event: ReviewSent, delivery: Delivery) -> None:
        """Tell the department's contacts that a review was sent to them."""
        await handlers.on_review_sent(conn, event, event_id=delivery.message_id, deps=deps)

    async def review_overdue(conn: Connection, event: ReviewOverdue, delivery: Delivery) -> None:
        """Remind the department's contacts that a review is overdue."""
        await handlers.on_review_overdue(conn, event, event_id=delivery.message_id, deps=deps)

    async def review_escalated(
        conn: Connection, event: ReviewEscalated, delivery: Delivery
    ) -> None:
        """Tell the department's escalation contacts (and the policy's) a review is late."""
        await handlers.on_review_escalated(conn, event, event_id=delivery.message_id, deps=deps)

    async def order_withdrawal_refused(
        conn: Connection, event: OrderWithdrawalRefused, delivery: Delivery
    ) -> None:
        """Tell the salesperson their withdrawal was refused: the order was approved first."""
        await handlers.on_withdrawal_refused(conn, event, event_id=delivery.message_id, deps=deps)

    runtime.consume(topology.NOTIFIER_CHANGES_REQUESTED, order_changes_requested)
    runtime.consume(topology.NOTIFIER_APPROVED, order_approved)
    runtime.consume(topology.NOTIFIER_CONTRACT_DRAFTED, contract_drafted)
    runtime.consume(topology.NOTIFIER_REVIEW_SENT, review_sent)
    runtime.consume(topology.NOTIFIER_REVIEW_OVERDUE, review_overdue)
    runtime.consume(topology.NOTIFIER_REVIEW_ESCALATED, review_escalated)
    runtime.consume(topology.NOTIFIER_WITHDRAWAL_REFUSED, order_withdrawal_refused)
