"""What to tell whom, when, and how long to wait after a failure: pure rules, no I/O."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any
from uuid import UUID

from orderflow import jsonpointer
from orderflow.messages import (
    ContractDrafted,
    OrderApproved,
    OrderChangesRequested,
    OrderWithdrawalRefused,
    ReviewEscalated,
    ReviewOverdue,
    ReviewSent,
)

INBOX = "inbox"
EMAIL = "email"
WEBHOOK_PREFIX = "webhook:"
LANGUAGES = ("zh", "en")

# A stable label per event: the in-app inbox's `title`, the same in every language, so a
# client can group and filter on it; the localised headline is the notification's subject.
TITLES = {
    OrderChangesRequested.message_type: "Changes requested",
    OrderApproved.message_type: "Order approved",
    ContractDrafted.message_type: "Contract ready",
    ReviewSent.message_type: "Review waiting",
    ReviewOverdue.message_type: "Review overdue",
    ReviewEscalated.message_type: "Review escalated",
    OrderWithdrawalRefused.message_type: "Withdrawal refused",
}

DEPARTMENT_NAMES = {
    "zh": {
        "supervisor": "主管",
        "production": "生产部",
        "service_delivery": "服务交付部",
        "finance": "财务部",
        "technical": "技术部",
    },
    "en": {
        "supervisor": "Supervisor",
        "production": "Production",
        "service_delivery": "Service delivery",
        "finance": "Finance",
        "technical": "Technical",
    },
}

# Names of the order document's fields, so a checklist reads "Payment › Terms" rather than
# only the JSON pointer (which is kept beside it for the console).
FIELD_NAMES = {
    "zh": {
        "order_type": "订单类型",
        "external_ref": "外部编号",
        "salesperson": "销售员",
        "customer": "客户",
        "name": "名称",
        "contact_name": "联系人",
        "phone": "电话",
        "email": "邮箱",
        "address": "地址",
        "company": "公司",
        "kind": "企业类型",
        "business_scope": "经营范围",
        "credit_standing": "资信状况",
        "language": "语言",
        "lines": "明细",
        "item": "品名",
        "specification": "规格",
        "model": "型号",
        "quantity": "数量",
        "unit": "单位",
        "unit_price": "单价",
        "amount": "金额",
        "attributes": "属性",
        "service": "服务",
        "content": "内容",
        "standard": "标准",
        "period_start": "开始日期",
        "period_end": "结束日期",
        "currency": "币种",
        "tax_rate": "税率",
        "quality_requirements": "质量要求",
        "usage_scenario": "使用场景",
        "delivery": "交付",
        "date": "日期",
        "method": "方式",
        "payment": "付款",
        "terms": "条款",
        "settlement_days": "结算天数",
        "technical_requirements": "技术要求",
        "customer_confirmation": "客户确认",
        "confirmed_at": "确认时间",
        "confirmed_by": "确认人",
        "notes": "备注",
    },
    "en": {
        "order_type": "Order type",
        "external_ref": "External reference",
        "salesperson": "Salesperson",
        "customer": "Customer",
        "name": "Name",
        "contact_name": "Contact",
        "phone": "Phone",
        "email": "Email",
        "address": "Address",
        "company": "Company",
        "kind": "Kind",
        "business_scope": "Business scope",
        "credit_standing": "Credit standing",
        "language": "Language",
        "lines": "Lines",
        "item": "Item",
        "specification": "Specification",
        "model": "Model",
        "quantity": "Quantity",
        "unit": "Unit",
        "unit_price": "Unit price",
        "amount": "Amount",
        "attributes": "Attributes",
        "service": "Service",
        "content": "Content",
        "standard": "Standard",
        "period_start": "Start date",
        "period_end": "End date",
        "currency": "Currency",
        "tax_rate": "Tax rate",
        "quality_requirements": "Quality requirements",
        "usage_scenario": "Usage scenario",
        "delivery": "Delivery",
        "date": "Date",
        "method": "Method",
        "payment": "Payment",
        "terms": "Terms",
        "settlement_days": "Settlement days",
        "technical_requirements": "Technical requirements",
        "customer_confirmation": "Customer confirmation",
        "confirmed_at": "Confirmed at",
        "confirmed_by": "Confirmed by",
        "notes": "Notes",
    },
}


@dataclass(frozen=True)
class QuietHours:
    """A daily span in the person's own time zone; it may cross midnight (22:00-07:00)."""

    start: time
    end: time


@dataclass(frozen=True)
class Person:
    id: str
    name: str | None
    email: str | None
    language: str
    channels: tuple[str, ...]
    tz: tzinfo
    quiet_hours: QuietHours | None = None


@dataclass(frozen=True)
class Recipient:
    """A person to tell about one event, with what is particular to them."""

    person: Person
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """One notification: this recipient on this channel, not before `not_before`."""

    recipient: Recipient
    channel: str
    address: str | None
    not_before: datetime | None


@dataclass(frozen=True)
class Notice:
    """One rendered notification, ready to store."""

    recipient: str
    channel: str
    event_type: str
    order_id: UUID
    title: str
    subject: str
    body: str
    html: str | None
    markdown: str | None
    link: str
    language: str
    address: str | None = None
    not_before: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)


def webhook_channel(name: str) -> str:
    return f"{WEBHOOK_PREFIX}{name}"


def webhook_name(channel: str) -> str | None:
    return channel[len(WEBHOOK_PREFIX) :] if channel.startswith(WEBHOOK_PREFIX) else None


def order_link(console_base_url: str, order_id: UUID) -> str:
    return f"{console_base_url.rstrip('/')}/orders/{order_id}"


def department_name(department: str, language: str) -> str:
    return DEPARTMENT_NAMES.get(language, {}).get(department, department)


def field_label(pointer: str, language: str) -> str:
    """`/lines/0/unit_price` as `Lines › 1 › Unit price` (`明细 › 第 1 行 › 单价`)."""
    names = FIELD_NAMES.get(language, FIELD_NAMES["en"])
    parts: list[str] = []
    # not jsonpointer.split: a malformed pointer from a department is shown as it came
    for raw in pointer.split("/")[1:]:
        token = jsonpointer.unescape(raw)
        if token.isdigit():
            parts.append(f"第 {int(token) + 1} 行" if language == "zh" else f"#{int(token) + 1}")
        else:
            parts.append(names.get(token, token))
    return " › ".join(parts) if parts else pointer


def quiet_until(now: datetime, person: Person) -> datetime | None:
    """When `now` falls in the person's quiet hours, the moment they end (UTC); else None."""
    quiet = person.quiet_hours
    if quiet is None or quiet.start == quiet.end:
        return None
    local = now.astimezone(person.tz)
    t = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside = quiet.start <= t < quiet.end
        end_day = local.date()
    else:  # crosses midnight
        inside = t >= quiet.start or t < quiet.end
        end_day = local.date() + timedelta(days=1) if t >= quiet.start else local.date()
    if not inside:
        return None
    end = datetime.combine(end_day, quiet.end, tzinfo=person.tz)
    return end.astimezone(UTC)


def retry_delay(
    attempts: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds before the next try after `attempts` failed ones: exponential, with jitter.

    Half the delay is fixed and half random ("equal jitter"), so retries keep growing while
    many deliveries that failed together (a robot that was down) do not return together.
    """
    ceiling: float = min(cap, base * 2.0 ** max(0, min(attempts - 1, 30)))
    jitter: float = (rng or random).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


def route(
    recipients: Sequence[Recipient],
    *,
    now: datetime,
    email_enabled: bool,
    webhooks: Iterable[str],
) -> list[Route]:
    """Each recipient on each channel they chose and that can reach them.

    A chat robot posts to a group, so one event reaches a robot once even when several
    recipients chose it; the in-app inbox is immediate, other channels wait for the end of
    the recipient's quiet hours.
    """
    known = set(webhooks)
    routes: list[Route] = []
    seen: set[tuple[str, str]] = set()
    robots_used: set[str] = set()
    for recipient in recipients:
        person = recipient.person
        later = quiet_until(now, person)
        for channel in person.channels:
            if channel == INBOX:
                key, address, not_before = INBOX, None, None
            elif channel == EMAIL:
                if not email_enabled or not person.email:
                    continue
                key, address, not_before = EMAIL, person.email, later
            elif channel in known:
                if channel in robots_used:
                    continue
                robots_used.add(channel)
                key, address, not_before = webhook_channel(channel), channel, later
            else:
                continue
            if (person.id, key) in seen:
                continue
            seen.add((person.id, key))
            routes.append(Route(recipient, key, address, not_before))
    return routes


#: what a person's id looks like (the contacts file's `PersonId`)
_PERSON_ID = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")


def escalation_recipients(escalation: Sequence[str], escalate_to: str) -> list[str]:
    """Who hears of an escalated review: the department's escalation contacts from the
    contacts file, and the contact the review policy names (`escalate_to`), each once. The
    policy's contact is told when it is a person's id; free text (a name, a mailbox) names
    nobody the notifier can reach and is left to the escalation contacts."""
    people = list(dict.fromkeys(escalation))
    named = escalate_to.strip()
    if _PERSON_ID.match(named) and named not in people:
        people.append(named)
    return people


# --- what each event says: the template context, the same for every channel -------------


def _common(event_type: str, order_id: UUID, revision: int, console: str) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "order_id": str(order_id),
        "order_ref": str(order_id)[:8],
        "revision": revision,
        "link": order_link(console, order_id),
    }


def checklist(event: OrderChangesRequested, language: str) -> list[dict[str, Any]]:
    """Every annotation once, with the department that made it."""
    items: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for feedback in event.feedback:
        for a in feedback.annotations:
            seen.add((a.field, a.message))
            items.append(
                {
                    "field": a.field,
                    "field_label": field_label(a.field, language),
                    "department": feedback.department,
                    "department_name": department_name(feedback.department, language),
                    "message": a.message,
                    "severity": a.severity.value,
                }
            )
    for a in event.annotations:  # any the feedback did not carry
        if (a.field, a.message) not in seen:
            items.append(
                {
                    "field": a.field,
                    "field_label": field_label(a.field, language),
                    "department": None,
                    "department_name": None,
                    "message": a.message,
                    "severity": a.severity.value,
                }
            )
    return items


def changes_requested_context(
    event: OrderChangesRequested, *, language: str, console: str
) -> dict[str, Any]:
    departments = sorted({f.department for f in event.feedback if f.decision == "request_changes"})
    return {
        **_common(event.message_type, event.order_id, event.revision, console),
        "departments": [department_name(d, language) for d in departments],
        "checklist": checklist(event, language),
        "comments": [
            {"department_name": department_name(f.department, language), "comment": f.comment}
            for f in event.feedback
            if f.comment
        ],
    }


def approved_context(event: OrderApproved, *, language: str, console: str) -> dict[str, Any]:
    return {
        **_common(event.message_type, event.order_id, event.revision, console),
        "customer_name": event.order.customer.name,
        "total": str(event.totals.total),
        "currency": event.totals.currency,
        "departments": [department_name(f.department, language) for f in event.approvals],
    }


#: Why a withdrawal was refused, as the salesperson reads it.
REFUSALS = {
    "zh": {"approved": "撤回请求到达之前，订单已通过全部部门评审"},
    "en": {"approved": "the order was approved by every department before the withdrawal arrived"},
}


def withdrawal_refused_context(
    event: OrderWithdrawalRefused, *, language: str, console: str
) -> dict[str, Any]:
    words = REFUSALS.get(language, REFUSALS["en"])
    return {
        **_common(event.message_type, event.order_id, event.decided_revision, console),
        "decision": event.decision,
        "refusal": words.get(event.decision, event.reason),
        "withdrawal_reason": event.withdrawal_reason,
    }


def contract_drafted_context(
    event: ContractDrafted, *, language: str, console: str
) -> dict[str, Any]:
    return {
        **_common(event.message_type, event.order_id, event.revision, console),
        "contract_number": event.contract_number,
        "customer_name": event.customer_name,
        "total": str(event.total),
        "currency": event.currency,
    }


def _local(moment: datetime, tz: tzinfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def review_sent_context(
    event: ReviewSent, *, language: str, tz: tzinfo, console: str
) -> dict[str, Any]:
    return {
        **_common(event.message_type, event.order_id, event.revision, console),
        "department": department_name(event.department, language),
        # the same list the round's notice once had, so a template may still join it
        "departments": [department_name(event.department, language)],
        "review_id": str(event.review_id),
        "stage": event.stage,
        "due_at": _local(event.due_at, tz) if event.due_at else None,
    }


def overdue_context(
    event: ReviewOverdue, *, language: str, tz: tzinfo, console: str
) -> dict[str, Any]:
    return {
        **_common(event.message_type, event.order_id, event.revision, console),
        "department": department_name(event.department, language),
        "due_at": _local(event.due_at, tz),
        # the escalation contacts hear of it from `review.escalated` now; kept (always
        # false) so a template copied from an earlier release still renders
        "escalation": False,
    }


def escalated_context(
    event: ReviewEscalated, *, language: str, tz: tzinfo, console: str
) -> dict[str, Any]:
    return {
        **_common(event.message_type, event.order_id, event.revision, console),
        "department": department_name(event.department, language),
        "review_id": str(event.review_id),
        "due_at": _local(event.due_at, tz),
        "escalated_at": _local(event.escalated_at, tz),
    }


def event_data(context: dict[str, Any]) -> dict[str, Any]:
    """What the inbox and the generic webhook carry as structured data."""
    skip = {"event_type", "order_id", "order_ref", "link", "recipient_name"}
    return {k: v for k, v in context.items() if k not in skip}


_SPACE = re.compile(r"\s+")


def one_line(text: str) -> str:
    return _SPACE.sub(" ", text).strip()
