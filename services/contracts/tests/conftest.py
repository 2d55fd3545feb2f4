"""Approved orders built from the example documents, as the review router would send them."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orderflow.messages import (
    Annotation,
    AttachmentKind,
    AttachmentRef,
    Decision,
    DepartmentFeedback,
    OrderApproved,
    OrderDocument,
    Reviewer,
    Totals,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"

Approve = Callable[..., OrderApproved]


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"order-{name}.json").read_text("utf-8"))
    return data


def attachment(name: str, kind: AttachmentKind = AttachmentKind.DRAWING) -> AttachmentRef:
    """A file as intake describes it, its hash that of its name (the bytes stay in intake)."""
    return AttachmentRef(
        id=uuid.uuid5(uuid.NAMESPACE_URL, name),
        name=name,
        kind=kind,
        content_type="application/pdf",
        size=len(name) * 1000,
        sha256=hashlib.sha256(name.encode()).hexdigest(),
        download_path=f"/api/v1/attachments/{uuid.uuid5(uuid.NAMESPACE_URL, name)}",
    )


#: The technical department's approval of a custom product, with remarks on two fields.
TECHNICAL_REVIEW = DepartmentFeedback(
    department="technical",
    decision=Decision.APPROVE,
    reviewer=Reviewer(id="liu.yang", name="刘洋"),
    comment="密封面加工可行，按附图执行",
    annotations=[
        Annotation(
            field="/technical_requirements", message="粗糙度 Ra1.6 需专用刀具", severity="info"
        ),
        Annotation(
            field="/lines/0/specification", message="法兰厚度按 20 mm 加工", severity="minor"
        ),
    ],
)


def approval(
    name: str = "product",
    *,
    order_id: uuid.UUID | None = None,
    revision: int = 1,
    change: Callable[[dict[str, Any]], None] | None = None,
    attachments: Sequence[AttachmentRef] = (),
    feedback: Sequence[DepartmentFeedback] = (),
) -> OrderApproved:
    document = example(name)
    if change is not None:
        change(document)
    order = OrderDocument.model_validate(document)
    return OrderApproved(
        order_id=order_id or uuid.uuid4(),
        revision=revision,
        order=order,
        totals=Totals.of(order),
        approvals=[
            DepartmentFeedback(
                department=department,
                decision=Decision.APPROVE,
                reviewer=Reviewer(id=f"{department}.lead"),
            )
            for department in ("supervisor", "production", "finance")
        ]
        + list(feedback),
        approved_at=datetime.now(UTC),
        attachments=list(attachments),
    )


def in_language(language: str, order_type: str | None = None) -> Callable[[dict[str, Any]], None]:
    """A change to an example order: the customer's language, and the order type."""

    def change(document: dict[str, Any]) -> None:
        document["customer"]["language"] = language
        if order_type is not None:
            document["order_type"] = order_type

    return change


@pytest.fixture
def approve() -> Approve:
    return approval
