"""The timeline: every event of an order, said in a line, with who did it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Described:
    actor: dict[str, Any] | None
    summary: str
    details: dict[str, Any]


def _person(kind: str, who: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any] | None:
    if not who or not who.get("id"):
        return None
    return {"kind": kind, "id": who["id"], "name": who.get("name"), **extra}


def _system(service: str) -> dict[str, Any]:
    return {"kind": "system", "id": service, "name": None}


def _departments(feedback: Sequence[Mapping[str, Any]], decision: str) -> list[str]:
    return [f["department"] for f in feedback if f.get("decision") == decision]


#: The events the timeline says in its own words (`describe`); besides these, intake's own
#: actions (`order.created`, `order.revised`, `attachment.*`) come from its own table.
DESCRIBED_EVENTS: frozenset[str] = frozenset(
    {
        "order.submitted",
        "review.round_opened",
        "review.verdict_recorded",
        "order.changes_requested",
        "order.approved",
        "contract.drafted",
        "contract.signed",
        "notification.delivered",
        "notification.failed",
        "review.overdue",
        "review.sent",
        "review.escalated",
        "order.withdrawal_requested",
        "order.withdrawn",
        "order.withdrawal_refused",
    }
)


def timeline_payload(event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """What the timeline keeps of an event: all of it but the order document that
    `order.submitted` carries, of which `describe` reads only the salesperson (the document
    itself is kept once, as the revision)."""
    if event_type != "order.submitted" or not isinstance(payload.get("order"), Mapping):
        return dict(payload)
    salesperson = payload["order"].get("salesperson")
    return {**payload, "order": {"salesperson": salesperson} if salesperson else {}}


def _order_created(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    return Described(
        _person("salesperson", p.get("salesperson")) or seller,
        f"Order created ({p.get('channel')})",
        {"channel": p.get("channel"), "submitted_at_once": p.get("submit", False)},
    )


def _order_revised(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    revision = p.get("revision")
    return Described(
        _person("salesperson", p.get("salesperson")) or seller,
        f"Revision {revision} edited ({p.get('channel')})",
        {"channel": p.get("channel"), "new_revision": p.get("new_revision", False)},
    )


def _attachment_added(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    file = p.get("attachment", {})
    verb = "added" if event_type == "attachment.added" else "removed"
    return Described(
        seller,
        f"File {verb}: {file.get('name')} ({file.get('kind')})",
        {"attachment": file},
    )


def _order_submitted(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    order = p.get("order", {})
    previous = p.get("previous_revision")
    what = f"Revision {p.get('revision')} submitted for review ({p.get('channel')})"
    if previous is not None:
        what += f", {len(p.get('changes', []))} change(s) since revision {previous}"
    return Described(
        _person("salesperson", order.get("salesperson")) or seller,
        what,
        {
            "channel": p.get("channel"),
            "totals": p.get("totals"),
            "attachments": p.get("attachments", []),
            "previous_revision": previous,
            "changes": p.get("changes", []),
        },
    )


def _review_round_opened(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    departments = list(p.get("departments", []))
    return Described(
        _system("review-router"),
        f"Review opened: {', '.join(departments)}",
        {"round_id": p.get("round_id"), "departments": departments},
    )


def _review_verdict_recorded(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    decision = p.get("decision")
    words = "approved" if decision == "approve" else "asked for changes"
    annotations = list(p.get("annotations", []))
    return Described(
        _person("reviewer", p.get("reviewer"), department=p.get("department")),
        f"{p.get('department')} {words}"
        + (f" ({len(annotations)} annotation(s))" if annotations else ""),
        {
            "department": p.get("department"),
            "decision": decision,
            "comment": p.get("comment"),
            "annotations": annotations,
            "review_id": p.get("review_id"),
        },
    )


def _order_changes_requested(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    feedback = list(p.get("feedback", []))
    asking = _departments(feedback, "request_changes")
    return Described(
        _system("review-router"),
        f"Changes requested by {', '.join(asking) or 'the departments'}",
        {"feedback": feedback, "annotations": p.get("annotations", [])},
    )


def _order_approved(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    approvals = list(p.get("approvals", []))
    who = ", ".join(_departments(approvals, "approve"))
    return Described(
        _system("review-router"),
        "Approved" + (f" by {who}" if who else ""),
        {"approvals": approvals, "totals": p.get("totals")},
    )


def _contract_drafted(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    return Described(
        _system("contracts"),
        f"Contract {p.get('contract_number')} drafted",
        {
            "contract_id": p.get("contract_id"),
            "contract_number": p.get("contract_number"),
            "currency": p.get("currency"),
            "total": p.get("total"),
        },
    )


def _contract_signed(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    return Described(
        _system("contracts"),
        f"Contract {p.get('contract_number')} signed",
        {"contract_id": p.get("contract_id"), "contract_number": p.get("contract_number")},
    )


def _notification_delivered(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    delivered = event_type == "notification.delivered"
    return Described(
        _system("notifier"),
        f"Notification {'delivered' if delivered else 'failed'}: {p.get('event_type')} to "
        f"{p.get('recipient')} ({p.get('channel')})",
        {
            "recipient": p.get("recipient"),
            "channel": p.get("channel"),
            "event_type": p.get("event_type"),
            **({} if delivered else {"error": p.get("error")}),
        },
    )


def _review_overdue(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    return Described(
        _system("review-router"),
        f"Review by {p.get('department')} overdue (due {p.get('due_at')})",
        {"department": p.get("department"), "due_at": p.get("due_at")},
    )


def _review_sent(event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None) -> Described:
    due = p.get("due_at")
    return Described(
        _system("review-router"),
        f"Review sent to {p.get('department')}" + (f" (due {due})" if due else ""),
        {
            "department": p.get("department"),
            "review_id": p.get("review_id"),
            "stage": p.get("stage"),
            "due_at": due,
        },
    )


def _review_escalated(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    return Described(
        _system("review-router"),
        f"Review by {p.get('department')} escalated to {p.get('escalate_to')} "
        f"(due {p.get('due_at')})",
        {
            "department": p.get("department"),
            "due_at": p.get("due_at"),
            "escalate_to": p.get("escalate_to"),
        },
    )


def _order_withdrawal_requested(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    reason = p.get("reason")
    return Described(
        seller,
        "Withdrawal requested" + (f": {reason}" if reason else ""),
        {"reason": reason, "requested_by": p.get("requested_by")},
    )


def _order_withdrawn(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    reason = p.get("reason")
    return Described(
        _system("review-router"),
        "Order withdrawn" + (f": {reason}" if reason else ""),
        {"reason": reason, "requested_by": p.get("requested_by")},
    )


def _order_withdrawal_refused(
    event_type: str, p: Mapping[str, Any], seller: dict[str, Any] | None
) -> Described:
    return Described(
        _system("review-router"),
        f"Withdrawal refused: {p.get('reason')}",
        {
            "reason": p.get("reason"),
            "decision": p.get("decision"),
            "decided_revision": p.get("decided_revision"),
            "withdrawal_reason": p.get("withdrawal_reason"),
            "requested_by": p.get("requested_by"),
        },
    )


#: One line of the timeline per event type (intake's own actions and the other services' events).
_DESCRIBERS: dict[str, Callable[[str, Mapping[str, Any], dict[str, Any] | None], Described]] = {
    "order.created": _order_created,
    "order.revised": _order_revised,
    "attachment.added": _attachment_added,
    "attachment.removed": _attachment_added,
    "order.submitted": _order_submitted,
    "review.round_opened": _review_round_opened,
    "review.verdict_recorded": _review_verdict_recorded,
    "order.changes_requested": _order_changes_requested,
    "order.approved": _order_approved,
    "contract.drafted": _contract_drafted,
    "contract.signed": _contract_signed,
    "notification.delivered": _notification_delivered,
    "notification.failed": _notification_delivered,
    "review.overdue": _review_overdue,
    "review.sent": _review_sent,
    "review.escalated": _review_escalated,
    "order.withdrawal_requested": _order_withdrawal_requested,
    "order.withdrawn": _order_withdrawn,
    "order.withdrawal_refused": _order_withdrawal_refused,
}


def describe(
    event_type: str, payload: Mapping[str, Any], *, salesperson: Mapping[str, Any] | None
) -> Described:
    """One line of the timeline for an event or one of intake's own actions: who, what, and
    the details a reader of the order wants (departments, verdicts, files, contract)."""
    describer = _DESCRIBERS.get(event_type)
    if describer is None:
        return Described(None, event_type, dict(payload))
    return describer(event_type, payload, _person("salesperson", salesperson))
