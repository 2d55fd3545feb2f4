"""Approved orders built from the example documents, as the review router would send them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orderflow.messages import (
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


def approval(
    name: str = "product",
    *,
    order_id: uuid.UUID | None = None,
    revision: int = 1,
    change: Callable[[dict[str, Any]], None] | None = None,
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
        ],
        approved_at=datetime.now(UTC),
    )


@pytest.fixture
def approve() -> Approve:
    return approval
