"""What to tell whom: pure rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from orderflow.messages import ContractDrafted, OrderApproved, OrderChangesRequested

INBOX = "inbox"


@dataclass(frozen=True)
class Notice:
    """One notification for one recipient on one channel."""

    recipient: str
    channel: str
    event_type: str
    order_id: UUID
    title: str
    body: str
    link: str
    data: dict[str, Any] = field(default_factory=dict)


def order_link(console_base_url: str, order_id: UUID) -> str:
    return f"{console_base_url.rstrip('/')}/orders/{order_id}"


def changes_requested(event: OrderChangesRequested, *, console: str) -> list[Notice]:
    checklist = [
        {"field": a.field, "message": a.message, "severity": a.severity.value}
        for a in event.annotations
    ]
    departments = sorted({f.department for f in event.feedback if f.decision == "request_changes"})
    lines = [f"- [ ] {a.field}: {a.message}" for a in event.annotations]
    body = (
        f"Revision {event.revision} needs changes ({', '.join(departments)}).\n" + "\n".join(lines)
    ).strip()
    return [
        Notice(
            recipient=event.salesperson.id,
            channel=INBOX,
            event_type=event.message_type,
            order_id=event.order_id,
            title="Changes requested",
            body=body,
            link=order_link(console, event.order_id),
            data={"revision": event.revision, "departments": departments, "checklist": checklist},
        )
    ]


def approved(event: OrderApproved, *, console: str) -> list[Notice]:
    return [
        Notice(
            recipient=event.order.salesperson.id,
            channel=INBOX,
            event_type=event.message_type,
            order_id=event.order_id,
            title="Order approved",
            body=f"Revision {event.revision} was approved by every department.",
            link=order_link(console, event.order_id),
            data={"revision": event.revision},
        )
    ]


def contract_drafted(event: ContractDrafted, *, console: str) -> list[Notice]:
    return [
        Notice(
            recipient=event.salesperson.id,
            channel=INBOX,
            event_type=event.message_type,
            order_id=event.order_id,
            title="Contract ready",
            body=(f"Contract {event.contract_number} is drafted ({event.total} {event.currency})."),
            link=order_link(console, event.order_id),
            data={"contract_id": str(event.contract_id), "contract_number": event.contract_number},
        )
    ]
