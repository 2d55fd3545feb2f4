"""What the HTTP API reads: an order's rounds, a review with its whole history, a
department's pending work, as typed records (the JSON columns stay JSON: the API's views
validate them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from orderflow.db import Connection, Pool

Json = dict[str, Any]

_ROUND_COLUMNS = """r.id, r.order_id, r.revision, r.status, r.current_stage, r.plan,
                    r.totals, r.opened_at, r.decided_at, r.decision,
                    r.policy_version, r.previous_revision, r.changes,
                    r.order_document -> 'salesperson' ->> 'id' AS salesperson_id"""
_REQUEST_COLUMNS = """q.review_id, q.round_id, r.order_id, r.revision, q.department, q.stage,
                      q.status, q.requested_at, q.answered_at, q.cancelled_at, q.due_at,
                      q.carried_from, q.assignee"""
_VERDICT_COLUMNS = """id, message_id, review_id, round_id, department, decision, reviewer,
                      comment, annotations, outcome, received_at, on_behalf_of, user_id"""


@dataclass(frozen=True)
class RequestRecord:
    review_id: UUID
    round_id: UUID
    order_id: UUID
    revision: int
    department: str
    stage: int
    status: str
    requested_at: datetime | None
    answered_at: datetime | None
    cancelled_at: datetime | None
    due_at: datetime | None
    carried_from: UUID | None
    assignee: Json | None


@dataclass(frozen=True)
class VerdictRecord:
    id: UUID
    message_id: str
    review_id: UUID
    round_id: UUID
    department: str
    decision: str
    reviewer: Json
    comment: str | None
    annotations: list[Json]
    outcome: str
    received_at: datetime
    on_behalf_of: Json | None
    user_id: str | None


@dataclass(frozen=True)
class AnnotationsRecord:
    id: UUID
    message_id: str
    reviewer: Json
    on_behalf_of: Json | None
    annotations: list[Json]
    outcome: str
    user_id: str | None
    received_at: datetime


@dataclass(frozen=True)
class AssignmentRecord:
    id: UUID
    message_id: str
    assigned_by: Json
    assignee: Json
    reason: str | None
    outcome: str
    user_id: str | None
    received_at: datetime


@dataclass(frozen=True)
class TimerRecord:
    kind: str
    due_at: datetime
    fire_at: datetime
    fired_at: datetime | None
    outcome: str | None


@dataclass(frozen=True)
class RoundRecord:
    id: UUID
    order_id: UUID
    revision: int
    status: str
    current_stage: int
    plan: list[Json]
    totals: Json
    opened_at: datetime
    decided_at: datetime | None
    decision: Json | None
    policy_version: str | None
    previous_revision: int | None
    changes: list[Json]
    # whose order it reviews, for who may see it
    salesperson_id: str | None
    requests: list[RequestRecord] = field(default_factory=list)
    verdicts: list[VerdictRecord] = field(default_factory=list)


@dataclass(frozen=True)
class ReviewRecord(RequestRecord):
    round_status: str
    order: Json
    totals: Json
    policy_version: str | None
    previous_revision: int | None
    changes: list[Json]
    attachments: list[Json]
    salesperson_id: str | None
    verdicts: list[VerdictRecord]
    annotations: list[AnnotationsRecord]
    assignments: list[AssignmentRecord]
    timers: list[TimerRecord]


async def rounds_with_details(pool: Pool, *, order_id: UUID) -> list[RoundRecord]:
    """An order's rounds, oldest first, each with its requests and verdicts."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT {_ROUND_COLUMNS} FROM review_rounds r "
            "WHERE r.order_id = $1 ORDER BY r.revision",
            order_id,
        )
        return await _round_details(conn, rows)


async def round_with_details(pool: Pool, *, round_id: UUID) -> RoundRecord | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_ROUND_COLUMNS} FROM review_rounds r WHERE r.id = $1", round_id
        )
        if row is None:
            return None
        [found] = await _round_details(conn, [row])
        return found


async def _round_details(conn: Connection, rows: list[asyncpg.Record]) -> list[RoundRecord]:
    ids = [r["id"] for r in rows]
    requests = await conn.fetch(
        f"""SELECT {_REQUEST_COLUMNS}
            FROM review_requests q JOIN review_rounds r ON r.id = q.round_id
            WHERE q.round_id = ANY($1::uuid[]) ORDER BY q.stage, q.department""",
        ids,
    )
    verdicts = await conn.fetch(
        f"""SELECT {_VERDICT_COLUMNS} FROM verdicts
            WHERE round_id = ANY($1::uuid[]) ORDER BY received_at, id""",
        ids,
    )
    return [
        RoundRecord(
            **row,
            requests=[RequestRecord(**q) for q in requests if q["round_id"] == row["id"]],
            verdicts=[VerdictRecord(**v) for v in verdicts if v["round_id"] == row["id"]],
        )
        for row in rows
    ]


async def review_with_details(pool: Pool, *, review_id: UUID) -> ReviewRecord | None:
    """One review request with its round's order and its whole history."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"""SELECT {_REQUEST_COLUMNS}, r.status AS round_status, r.order_document AS order,
                       r.totals, r.policy_version, r.previous_revision, r.changes,
                       r.attachments, r.order_document -> 'salesperson' ->> 'id' AS salesperson_id
                FROM review_requests q JOIN review_rounds r ON r.id = q.round_id
                WHERE q.review_id = $1""",
            review_id,
        )
        if row is None:
            return None
        return ReviewRecord(**row, **await _history_of(conn, review_id))


async def _history_of(conn: Connection, review_id: UUID) -> dict[str, Any]:
    verdicts = await conn.fetch(
        f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE review_id = $1 ORDER BY received_at, id",
        review_id,
    )
    annotations = await conn.fetch(
        """SELECT id, message_id, reviewer, on_behalf_of, annotations, outcome, user_id,
                  received_at
           FROM annotations WHERE review_id = $1 ORDER BY received_at, id""",
        review_id,
    )
    assignments = await conn.fetch(
        """SELECT id, message_id, assigned_by, assignee, reason, outcome, user_id, received_at
           FROM assignments WHERE review_id = $1 ORDER BY received_at, id""",
        review_id,
    )
    timers = await conn.fetch(
        """SELECT kind, due_at, fire_at, fired_at, outcome FROM timers
           WHERE review_id = $1 ORDER BY fire_at, id""",
        review_id,
    )
    return {
        "verdicts": [VerdictRecord(**v) for v in verdicts],
        "annotations": [AnnotationsRecord(**a) for a in annotations],
        "assignments": [AssignmentRecord(**a) for a in assignments],
        "timers": [TimerRecord(**t) for t in timers],
    }


async def pending_for(
    pool: Pool,
    *,
    department: str,
    limit: int,
    offset: int,
    assignee: str | None = None,
    overdue_at: datetime | None = None,
) -> tuple[list[RequestRecord], int]:
    """A department's pending review requests, oldest first, with their total count;
    optionally only those handed to `assignee`, or only those due before `overdue_at`."""
    where = """q.department = $1 AND q.status = 'pending'
               AND ($2::text IS NULL OR q.assignee ->> 'id' = $2)
               AND ($3::timestamptz IS NULL OR q.due_at < $3)"""
    rows = await pool.fetch(
        f"""SELECT {_REQUEST_COLUMNS}
            FROM review_requests q JOIN review_rounds r ON r.id = q.round_id
            WHERE {where}
            ORDER BY q.requested_at, q.review_id
            LIMIT $4 OFFSET $5""",
        department,
        assignee,
        overdue_at,
        limit,
        offset,
    )
    total = await pool.fetchval(
        f"SELECT count(*) FROM review_requests q WHERE {where}",
        department,
        assignee,
        overdue_at,
    )
    return [RequestRecord(**r) for r in rows], int(total or 0)
