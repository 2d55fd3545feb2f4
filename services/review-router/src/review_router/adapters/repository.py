"""Review rounds, review requests and verdicts in PostgreSQL (schema `review_router`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from orderflow.db import Connection, Pool
from orderflow.messages import DepartmentFeedback, OrderDocument, Totals, VerdictGiven

from .. import domain


@dataclass(frozen=True)
class LoadedRound:
    """A round with what was submitted for it."""

    round: domain.Round
    order: OrderDocument
    totals: Totals
    plan: domain.ReviewPlan


_REQUESTS = """
    SELECT q.review_id, q.round_id, q.department, q.stage, q.status,
           v.department AS v_department, v.decision, v.reviewer, v.comment, v.annotations
    FROM review_requests q LEFT JOIN verdicts v ON v.id = q.verdict_id
    WHERE q.round_id = ANY($1::uuid[])
    ORDER BY q.stage, q.department"""


def _request(row: asyncpg.Record) -> domain.Request:
    feedback = None
    if row["decision"] is not None:
        feedback = DepartmentFeedback.model_validate(
            {
                "department": row["v_department"],
                "decision": row["decision"],
                "reviewer": row["reviewer"],
                "comment": row["comment"],
                "annotations": row["annotations"],
            }
        )
    return domain.Request(
        review_id=row["review_id"],
        department=row["department"],
        stage=row["stage"],
        status=domain.RequestStatus(row["status"]),
        feedback=feedback,
    )


def _plan(stored: list[dict[str, Any]]) -> domain.ReviewPlan:
    return domain.ReviewPlan(
        tuple(domain.Stage(int(s["number"]), tuple(s["departments"])) for s in stored)
    )


def _ordered(plan: domain.ReviewPlan, requests: list[domain.Request]) -> tuple[domain.Request, ...]:
    # the plan's order, so feedback and notifications list departments as the process does
    position = {d: i for i, d in enumerate(plan.departments)}
    return tuple(sorted(requests, key=lambda r: (r.stage, position.get(r.department, 1 << 20))))


async def _rounds(conn: Connection, rows: Sequence[asyncpg.Record]) -> list[domain.Round]:
    requests: dict[UUID, list[domain.Request]] = {row["id"]: [] for row in rows}
    for req in await conn.fetch(_REQUESTS, list(requests)):
        requests[req["round_id"]].append(_request(req))
    return [
        domain.Round(
            id=row["id"],
            order_id=row["order_id"],
            revision=row["revision"],
            status=domain.RoundStatus(row["status"]),
            current_stage=row["current_stage"],
            requests=_ordered(_plan(row["plan"]), requests[row["id"]]),
        )
        for row in rows
    ]


async def lock_order(conn: Connection, *, order_id: UUID) -> None:
    """Serialise submissions and withdrawals of one order (until the transaction ends), so
    two revisions arriving at two replicas cannot both open a round."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('review_router.order'), hashtext($1::text))",
        str(order_id),
    )


async def rounds_of_order(conn: Connection, *, order_id: UUID) -> list[domain.Round]:
    """Every round of an order, locked for the rest of the transaction."""
    rows = await conn.fetch(
        """SELECT id, order_id, revision, status, current_stage, plan FROM review_rounds
           WHERE order_id = $1 ORDER BY revision FOR UPDATE""",
        order_id,
    )
    return await _rounds(conn, rows)


async def round_of_review(conn: Connection, *, review_id: UUID) -> UUID | None:
    found: UUID | None = await conn.fetchval(
        "SELECT round_id FROM review_requests WHERE review_id = $1", review_id
    )
    return found


async def lock_round(conn: Connection, *, round_id: UUID) -> LoadedRound:
    """The round, its row locked until the transaction ends: competing replicas deciding the
    same round take turns, and each sees the verdicts the one before it recorded."""
    row = await conn.fetchrow(
        """SELECT id, order_id, revision, status, current_stage, plan, order_document, totals
           FROM review_rounds WHERE id = $1 FOR UPDATE""",
        round_id,
    )
    if row is None:
        raise LookupError(f"round {round_id} does not exist")
    [round_] = await _rounds(conn, [row])
    return LoadedRound(
        round=round_,
        order=OrderDocument.model_validate(row["order_document"]),
        totals=Totals.model_validate(row["totals"]),
        plan=_plan(row["plan"]),
    )


async def insert_round(
    conn: Connection,
    *,
    round_: domain.Round,
    plan: domain.ReviewPlan,
    order: OrderDocument,
    totals: Totals,
    opened_at: datetime,
) -> bool:
    """Store a new round and all its requests; False when its revision already has one."""
    created = await conn.fetchval(
        """INSERT INTO review_rounds (id, order_id, revision, status, current_stage, plan,
                                      order_document, totals, opened_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (order_id, revision) DO NOTHING
           RETURNING 1""",
        round_.id,
        round_.order_id,
        round_.revision,
        round_.status.value,
        round_.current_stage,
        [{"number": s.number, "departments": list(s.departments)} for s in plan.stages],
        order.model_dump(mode="json", exclude_none=True),
        totals.model_dump(mode="json"),
        opened_at,
    )
    if created is None:
        return False
    await conn.executemany(
        """INSERT INTO review_requests (review_id, round_id, department, stage, status,
                                        requested_at)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        [
            (
                r.review_id,
                round_.id,
                r.department,
                r.stage,
                r.status.value,
                opened_at if r.status == domain.RequestStatus.PENDING else None,
            )
            for r in round_.requests
        ],
    )
    return True


async def update_round(
    conn: Connection,
    *,
    round_: domain.Round,
    decided_at: datetime | None = None,
    decision: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        """UPDATE review_rounds
           SET status = $2, current_stage = $3,
               decided_at = coalesce($4, decided_at), decision = coalesce($5, decision)
           WHERE id = $1""",
        round_.id,
        round_.status.value,
        round_.current_stage,
        decided_at,
        decision,
    )


async def mark_requested(conn: Connection, *, review_ids: Sequence[UUID], at: datetime) -> None:
    await conn.execute(
        """UPDATE review_requests SET status = 'pending', requested_at = $2
           WHERE review_id = ANY($1::uuid[]) AND status = 'not_sent'""",
        list(review_ids),
        at,
    )


async def mark_cancelled(conn: Connection, *, review_ids: Sequence[UUID], at: datetime) -> None:
    await conn.execute(
        """UPDATE review_requests SET status = 'cancelled', cancelled_at = $2
           WHERE review_id = ANY($1::uuid[]) AND status = 'pending'""",
        list(review_ids),
        at,
    )


async def mark_answered(
    conn: Connection,
    *,
    review_id: UUID,
    status: domain.RequestStatus,
    verdict_id: UUID,
    at: datetime,
) -> None:
    await conn.execute(
        """UPDATE review_requests SET status = $2, verdict_id = $3, answered_at = $4
           WHERE review_id = $1""",
        review_id,
        status.value,
        verdict_id,
        at,
    )


async def record_verdict(
    conn: Connection,
    *,
    verdict: VerdictGiven,
    message_id: str,
    round_id: UUID,
    outcome: domain.VerdictOutcome,
    received_at: datetime,
) -> UUID:
    verdict_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO verdicts (id, message_id, review_id, round_id, order_id, revision,
                                 department, decision, reviewer, comment, annotations, outcome,
                                 received_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
        verdict_id,
        message_id,
        verdict.review_id,
        round_id,
        verdict.order_id,
        verdict.revision,
        verdict.department,
        verdict.decision.value,
        verdict.reviewer.model_dump(mode="json", exclude_none=True),
        verdict.comment,
        [a.model_dump(mode="json") for a in verdict.annotations],
        outcome.value,
        received_at,
    )
    return verdict_id


# Reads for the HTTP API.

_ROUND_COLUMNS = """r.id, r.order_id, r.revision, r.status, r.current_stage, r.plan,
                    r.order_document, r.totals, r.opened_at, r.decided_at, r.decision"""
_REQUEST_COLUMNS = """q.review_id, q.round_id, r.order_id, r.revision, q.department, q.stage,
                      q.status, q.requested_at, q.answered_at, q.cancelled_at"""
_VERDICT_COLUMNS = """id, message_id, review_id, round_id, department, decision, reviewer,
                      comment, annotations, outcome, received_at"""


async def rounds_with_details(pool: Pool, *, order_id: UUID) -> list[dict[str, Any]]:
    """An order's rounds, oldest first, each with its requests and verdicts."""
    async with pool.acquire() as conn:
        rounds = [
            dict(r)
            for r in await conn.fetch(
                f"SELECT {_ROUND_COLUMNS} FROM review_rounds r "
                "WHERE r.order_id = $1 ORDER BY r.revision",
                order_id,
            )
        ]
        ids = [r["id"] for r in rounds]
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
    for r in rounds:
        r["requests"] = [dict(q) for q in requests if q["round_id"] == r["id"]]
        r["verdicts"] = [dict(v) for v in verdicts if v["round_id"] == r["id"]]
    return rounds


async def review_with_details(pool: Pool, *, review_id: UUID) -> dict[str, Any] | None:
    """One review request with its round's order and every verdict given for it."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"""SELECT {_REQUEST_COLUMNS}, r.status AS round_status, r.order_document, r.totals
                FROM review_requests q JOIN review_rounds r ON r.id = q.round_id
                WHERE q.review_id = $1""",
            review_id,
        )
        if row is None:
            return None
        verdicts = await conn.fetch(
            f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE review_id = $1 "
            "ORDER BY received_at, id",
            review_id,
        )
    review = dict(row)
    review["verdicts"] = [dict(v) for v in verdicts]
    return review


async def pending_for(
    pool: Pool, *, department: str, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """A department's pending review requests, oldest first, with their total count."""
    rows = await pool.fetch(
        f"""SELECT {_REQUEST_COLUMNS}
            FROM review_requests q JOIN review_rounds r ON r.id = q.round_id
            WHERE q.department = $1 AND q.status = 'pending'
            ORDER BY q.requested_at, q.review_id
            LIMIT $2 OFFSET $3""",
        department,
        limit,
        offset,
    )
    total = await pool.fetchval(
        "SELECT count(*) FROM review_requests WHERE department = $1 AND status = 'pending'",
        department,
    )
    return [dict(r) for r in rows], int(total or 0)
