"""Revisions, their differences, and the timeline."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from orderflow.db import Pool
from orderflow.messages import (
    FieldChange,
)

from .. import domain
from ..adapters import repository
from .common import OrderNotFound, RevisionNotFound, files_of, salesperson_of


async def revision_with_files(pool: Pool, *, order_id: UUID, revision: int) -> dict[str, Any]:
    """A stored revision and its files."""
    row = await repository.get_revision(pool, order_id=order_id, revision=revision)
    if row is None:
        raise RevisionNotFound(order_id, revision)
    return {**row, "attachments": await files_of(pool, order_id, revision)}


async def revision_diff(pool: Pool, *, order_id: UUID, old: int, new: int) -> list[FieldChange]:
    """Field by field, what changed from revision `old` to revision `new`."""
    before = await revision_with_files(pool, order_id=order_id, revision=old)
    after = await revision_with_files(pool, order_id=order_id, revision=new)
    return domain.revision_changes(
        old_document=before["document"],
        old_attachments=before["attachments"],
        new_document=after["document"],
        new_attachments=after["attachments"],
    )


async def timeline(pool: Pool, *, order_id: UUID) -> list[dict[str, Any]]:
    """Every event of the order in the order it happened, who did it and what it meant."""
    order = await repository.get_order(pool, order_id=order_id)
    if order is None:
        raise OrderNotFound(order_id)
    salesperson = salesperson_of(order.document)
    entries = []
    for row in await repository.timeline(pool, order_id=order_id):
        described = domain.describe(row["type"], row["payload"], salesperson=salesperson)
        entries.append(
            {
                "at": row["occurred_at"],
                "type": row["type"],
                "revision": row["revision"],
                "source": row["source"],
                # who was signed in (or the broker user) when recorded; otherwise who the
                # event itself names (a reviewer, a service)
                "actor": row["actor"] or described.actor,
                "summary": described.summary,
                "details": described.details,
            }
        )
    return entries
