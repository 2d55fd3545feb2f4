"""One function per event: turn it into notifications, in the caller's transaction; and the
delivery of one notification on its channel, with its outcome recorded exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from prometheus_client import Counter

from orderflow import limits, outbox
from orderflow.db import Connection, Pool
from orderflow.logging import redact
from orderflow.messages import (
    ContractDrafted,
    NotificationDelivered,
    NotificationFailed,
    OrderApproved,
    OrderChangesRequested,
    OrderWithdrawalRefused,
    ReviewEscalated,
    ReviewOverdue,
    ReviewSent,
    Salesperson,
)

from . import domain
from .adapters import repository
from .adapters.outgoing import Channel, Outgoing, SendError
from .adapters.templates import Rendered, Templates
from .contacts import Directory
from .records import DELIVERED, Delivery
from .store import Store

log = structlog.get_logger(__name__)

DELIVERIES = Counter(
    "orderflow_notifier_deliveries_total",
    "Delivery attempts by channel and outcome (delivered, retried, failed, rate_limited)",
    ["channel", "outcome"],
)


#: the longest delivery error kept (a status and a reason, never a remote body)
ERROR_MAX = 300


@dataclass(frozen=True)
class Notifying:
    """What turning an event into notifications needs, built at the composition root."""

    directory: Directory
    templates: Templates
    console: str
    email_enabled: bool
    #: people already named in the "no email address configured" hint (once per process)
    hinted: set[str] = field(default_factory=set, compare=False)
    #: where notifications are kept: PostgreSQL, or memory in a unit test
    store: Store = field(default_factory=repository.PostgresStore, compare=False)

    @property
    def webhooks(self) -> list[str]:
        return list(self.directory.webhooks)


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int
    backoff_base: float
    backoff_max: float
    timeout: float

    @property
    def lease(self) -> float:
        # long enough for a send that takes the whole timeout, and the write after it
        return self.timeout * 2 + 10


# --- events in ---------------------------------------------------------------------------


async def _notify(
    conn: Connection,
    deps: Notifying,
    *,
    event_id: str,
    event_type: str,
    order_id: UUID,
    recipients: Sequence[domain.Recipient],
    context: Callable[[domain.Recipient], dict[str, Any]],
) -> None:
    routes = domain.route(
        recipients,
        now=datetime.now(UTC),
        email_enabled=deps.email_enabled,
        webhooks=deps.webhooks,
    )
    rendered: dict[str, tuple[dict[str, Any], Rendered]] = {}
    for r in routes:
        person = r.recipient.person
        if person.id not in rendered:
            ctx = context(r.recipient)
            ctx["recipient_name"] = person.name or person.id
            rendered[person.id] = (ctx, deps.templates.render(event_type, person.language, ctx))
        ctx, text = rendered[person.id]
        notice = domain.Notice(
            recipient=person.id,
            channel=r.channel,
            event_type=event_type,
            order_id=order_id,
            title=domain.TITLES[event_type],
            subject=text.subject,
            body=text.text,
            html=text.html if r.channel == domain.EMAIL else None,
            markdown=text.markdown if r.channel.startswith(domain.WEBHOOK_PREFIX) else None,
            link=ctx["link"],
            language=person.language,
            address=r.address,
            not_before=r.not_before,
            data=domain.event_data(ctx),
        )
        kept = await deps.store.add(
            conn, event_id=event_id, notice=notice, recipient_name=person.name
        )
        if kept is None:
            continue  # this event was already turned into this notification
        if kept.status == DELIVERED:
            # the in-app inbox is delivered the moment the row is committed
            await deps.store.publish(conn, delivered_event(kept), correlation_id=kept.order_id)


async def _notify_salesperson(
    conn: Connection,
    deps: Notifying,
    event: OrderChangesRequested | OrderApproved | ContractDrafted | OrderWithdrawalRefused,
    *,
    event_id: str,
    salesperson: Salesperson,
    context: Callable[..., Any],
) -> None:
    """The salesperson of the order hears of the event, in their own language. Email goes
    only to the address the contacts file gives, never to one the order carries."""
    person = deps.directory.person(salesperson.id, known_as=salesperson)
    _hint_missing_address(deps, person)
    await _notify(
        conn,
        deps,
        event_id=event_id,
        event_type=event.message_type,
        order_id=event.order_id,
        recipients=[domain.Recipient(person)],
        context=lambda r: context(event, language=r.person.language, console=deps.console),
    )


def _hint_missing_address(deps: Notifying, person: domain.Person) -> None:
    if not deps.email_enabled or domain.EMAIL not in person.channels or person.email:
        return
    if person.id in deps.hinted:
        return
    deps.hinted.add(person.id)
    log.info(
        "salesperson has no email address in the contacts file: in-app inbox only "
        "(the order's address is never used; add them to the contacts file)",
        person=person.id,
    )


async def on_changes_requested(
    conn: Connection, event: OrderChangesRequested, *, event_id: str, deps: Notifying
) -> None:
    await _notify_salesperson(
        conn,
        deps,
        event,
        event_id=event_id,
        salesperson=event.salesperson,
        context=domain.changes_requested_context,
    )


async def on_approved(
    conn: Connection, event: OrderApproved, *, event_id: str, deps: Notifying
) -> None:
    await _notify_salesperson(
        conn,
        deps,
        event,
        event_id=event_id,
        salesperson=event.order.salesperson,
        context=domain.approved_context,
    )


async def on_contract_drafted(
    conn: Connection, event: ContractDrafted, *, event_id: str, deps: Notifying
) -> None:
    await _notify_salesperson(
        conn,
        deps,
        event,
        event_id=event_id,
        salesperson=event.salesperson,
        context=domain.contract_drafted_context,
    )


async def on_withdrawal_refused(
    conn: Connection, event: OrderWithdrawalRefused, *, event_id: str, deps: Notifying
) -> None:
    """The salesperson asked to withdraw an order that was approved first: they hear that
    the approval stands (they were told of the approval too, which stays true)."""
    if event.salesperson is None:
        log.info("withdrawal refused, but no salesperson named", order_id=str(event.order_id))
        return
    await _notify_salesperson(
        conn,
        deps,
        event,
        event_id=event_id,
        salesperson=event.salesperson,
        context=domain.withdrawal_refused_context,
    )


async def _notify_people(
    conn: Connection,
    deps: Notifying,
    event: ReviewSent | ReviewOverdue | ReviewEscalated,
    *,
    event_id: str,
    people: Sequence[str],
    context: Callable[..., dict[str, Any]],
) -> None:
    """Each of `people` hears of the review event once, in their own language and time
    zone, on their own channels."""
    await _notify(
        conn,
        deps,
        event_id=event_id,
        event_type=event.message_type,
        order_id=event.order_id,
        recipients=[domain.Recipient(deps.directory.person(pid)) for pid in people],
        context=lambda r: context(
            event, language=r.person.language, tz=r.person.tz, console=deps.console
        ),
    )


async def on_review_sent(
    conn: Connection, event: ReviewSent, *, event_id: str, deps: Notifying
) -> None:
    """A review was sent to the department: its contacts learn it waits for them. Only a
    review actually sent is announced, never one the round planned and did not send."""
    contacts = deps.directory.contacts(event.department)
    if not contacts:
        log.info("no contacts configured for department", department=event.department)
    await _notify_people(
        conn,
        deps,
        event,
        event_id=event_id,
        people=contacts,
        context=domain.review_sent_context,
    )


async def on_review_overdue(
    conn: Connection, event: ReviewOverdue, *, event_id: str, deps: Notifying
) -> None:
    """A reminder to the department's contacts; its escalation contacts are told later, by
    `review.escalated`, if the review is still unanswered then."""
    contacts = deps.directory.contacts(event.department)
    if not contacts:
        log.warning("overdue review, but no one to remind", department=event.department)
    await _notify_people(
        conn,
        deps,
        event,
        event_id=event_id,
        people=contacts,
        context=domain.overdue_context,
    )


async def on_review_escalated(
    conn: Connection, event: ReviewEscalated, *, event_id: str, deps: Notifying
) -> None:
    """The department's escalation contacts, and the person the policy escalates to, learn
    the review is still unanswered. Once per escalation: a redelivered event (the same
    message id) adds nothing."""
    people = domain.escalation_recipients(
        deps.directory.escalation(event.department), event.escalate_to
    )
    if not people:
        log.warning(
            "escalated review, but no one to tell: give the department escalation contacts "
            "in the contacts file",
            department=event.department,
            escalate_to=event.escalate_to,
        )
    await _notify_people(
        conn,
        deps,
        event,
        event_id=event_id,
        people=people,
        context=domain.escalated_context,
    )


# --- deliveries out ----------------------------------------------------------------------


def delivered_event(delivery: Delivery) -> NotificationDelivered:
    return NotificationDelivered(
        notification_id=delivery.id,
        order_id=delivery.order_id,
        recipient=delivery.recipient,
        channel=delivery.channel,
        event_type=delivery.event_type,
        delivered_at=delivery.delivered_at or datetime.now(UTC),
    )


def _error_text(error: str | None) -> str:
    """An error as the event carries it: printable, within the text limit (a mail server's
    answer can be anything)."""
    text = "".join(c if c.isprintable() or c in "\n\t" else " " for c in error or "")
    return text[: limits.TEXT].strip() or "failed"


def failed_event(delivery: Delivery) -> NotificationFailed:
    return NotificationFailed(
        notification_id=delivery.id,
        order_id=delivery.order_id,
        recipient=delivery.recipient,
        channel=delivery.channel,
        event_type=delivery.event_type,
        error=_error_text(delivery.last_error),
        failed_at=delivery.failed_at or datetime.now(UTC),
    )


async def _publish(conn: Connection, event: NotificationDelivered | NotificationFailed) -> None:
    await outbox.publish_event(conn, event, correlation_id=event.order_id)


async def deliver_next(pool: Pool, channel: Channel, *, policy: DeliveryPolicy) -> bool:
    """Send the channel's next due delivery; False when nothing is due.

    The row is leased to this worker in one short transaction and the outcome written in
    another, so no database connection waits on a slow receiver. A worker that dies
    mid-send leaves the lease to run out and the delivery is sent again: at least once,
    with the same delivery id for the receiver to de-duplicate.
    """
    async with pool.acquire() as conn, conn.transaction():
        due = await repository.next_due(conn, channel=channel.name)
        if due is None:
            return False
        if channel.rate_limit is not None and channel.rate_key is not None:
            await repository.lock_target(conn, target=channel.rate_key)
            free_at = await repository.rate_free_at(
                conn,
                target=channel.rate_key,
                limit=channel.rate_limit.limit,
                window=channel.rate_limit.window,
                lease=policy.lease,
            )
            if free_at is not None:
                # over the robot's limit: the message waits its turn, it is never dropped
                await repository.postpone(conn, delivery_id=due.id, until=free_at)
                DELIVERIES.labels(channel.name, "rate_limited").inc()
                return True
            await repository.take_slot(conn, target=channel.rate_key, delivery_id=due.id)
        attempt = await repository.start_sending(conn, delivery_id=due.id, lease=policy.lease)

    error = await _send(channel, Outgoing.of(due), timeout=policy.timeout)
    async with pool.acquire() as conn, conn.transaction():
        outcome = await _settle(conn, channel, due.id, attempt=attempt, error=error, policy=policy)
    DELIVERIES.labels(channel.name, outcome).inc()
    return True


async def _send(channel: Channel, message: Outgoing, *, timeout: float) -> SendError | None:
    """The send's failure, if it failed, in words fit to store and log; None when sent."""
    try:
        async with asyncio.timeout(timeout):
            await channel.send(message)
        return None
    except SendError as exc:
        error = exc
    except TimeoutError:
        error = SendError(f"no answer within {timeout:g}s")
    except Exception as exc:  # a fault of ours while sending: retried like any other
        log.exception("sending failed unexpectedly", delivery_id=str(message.id))
        error = SendError(f"unexpected {type(exc).__name__}")
    # what is stored and logged: short, and without any secret the text may hold
    return SendError(
        redact(str(error))[:ERROR_MAX], permanent=error.permanent, retry_after=error.retry_after
    )


async def _settle(
    conn: Connection,
    channel: Channel,
    delivery_id: UUID,
    *,
    attempt: int,
    error: SendError | None,
    policy: DeliveryPolicy,
) -> str:
    """Record how the attempt went: delivered, failed for good, or retried later; the
    outcome's name (for the metric)."""
    if channel.rate_key is not None:
        await repository.finish_slot(conn, delivery_id=delivery_id)
    if error is None:
        done = await repository.mark_delivered(conn, delivery_id=delivery_id, attempt=attempt)
        if done is not None:
            await _publish(conn, delivered_event(done))
        return "delivered"
    bound = log.bind(delivery_id=str(delivery_id), channel=channel.name, attempt=attempt)
    if error.permanent or attempt >= policy.max_attempts:
        failed = await repository.mark_failed(
            conn, delivery_id=delivery_id, attempt=attempt, error=str(error)
        )
        if failed is not None:
            await _publish(conn, failed_event(failed))
            bound.warning("delivery failed", error=str(error), permanent=error.permanent)
        return "failed"
    delay = (
        min(error.retry_after, policy.backoff_max)
        if error.retry_after is not None
        else domain.retry_delay(attempt, base=policy.backoff_base, cap=policy.backoff_max)
    )
    await repository.schedule_retry(
        conn, delivery_id=delivery_id, attempt=attempt, delay=delay, error=str(error)
    )
    bound.info("delivery will be retried", error=str(error), retry_in=round(delay, 3))
    return "retried"


#: How long a delivery on a channel this replica does not have waits before it is failed:
#: during a rolling update, another replica may already have the robot it names.
UNROUTABLE_AFTER = 600.0


async def fail_unroutable(
    pool: Pool, *, channels: list[str], overdue_for: float = UNROUTABLE_AFTER
) -> int:
    """Mark failed the deliveries of channels this service does not have (a robot taken
    out of the contacts file): visible and re-triable, instead of pending for ever."""
    async with pool.acquire() as conn, conn.transaction():
        stranded = await repository.unroutable(conn, channels=channels, overdue_for=overdue_for)
        for delivery in stranded:
            failed = await repository.mark_failed(
                conn,
                delivery_id=delivery.id,
                attempt=None,
                error=f"channel {delivery.channel} is not configured on this service",
            )
            if failed is not None:
                await _publish(conn, failed_event(failed))
    return len(stranded)


class NotRetriable(Exception):
    """Only a failed delivery is retried; this one is `status`."""

    def __init__(self, delivery_id: UUID, status: str) -> None:
        super().__init__(f"{delivery_id} is {status}")
        self.delivery_id = delivery_id
        self.status = status


async def retry_delivery(pool: Pool, *, delivery_id: UUID) -> Delivery | None:
    """An operator's retry of a failed delivery; None when there is no such delivery."""
    async with pool.acquire() as conn, conn.transaction():
        retried = await repository.retry(conn, delivery_id=delivery_id)
        if retried is not None:
            return retried
        current = await repository.delivery(conn, delivery_id=delivery_id)
    if current is None:
        return None
    raise NotRetriable(delivery_id, current.status)
