"""Bulk intake: each order of an import in its own transaction."""

from __future__ import annotations

from datetime import date

from orderflow.db import Pool, transaction
from orderflow.messages import (
    OrderDocument,
    Problem,
)

from .. import domain
from .common import IMPORT, Actor, Outcome
from .orders import create_order


async def import_order(
    pool: Pool, *, document: OrderDocument, today: date, actor: Actor
) -> Outcome | list[Problem]:
    """One order of a bulk import, created and submitted in its own transaction, so a
    refused order never takes an accepted one with it; its problems when refused."""
    try:
        async with transaction(pool) as conn:
            return await create_order(
                conn, document=document, channel=IMPORT, submit=True, today=today, actor=actor
            )
    except domain.SelfCheckFailed as exc:
        return exc.problems
