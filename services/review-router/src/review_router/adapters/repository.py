"""Review rounds, review requests, verdicts, annotations, assignments and timers in
PostgreSQL (schema `review_router`): the handlers' `Store`, and the timer loop's claims.
What the HTTP API reads is in `reads`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from orderflow import outbox, topology
from orderflow.db import Connection
from orderflow.messages import (
    Annotation,
    DepartmentFeedback,
    Message,
    OrderDocument,
    Reviewer,
    VerdictGiven,
)

from .. import domain
from ..policy import Completion, Deadline
from ..store import LoadedRound, Store, Submitted, Timer

# the records live with the Store protocol; the timer loop reaches them from here
__all__ = [
    "LoadedRound",
    "PostgresStore",
    "Timer",
    "claim_due_timer",
    "store_of",
    "timer_failed",
    "timer_fired",
]


_REQUESTS = """
    SELECT q.review_id, q.round_id, q.department, q.stage, q.status, q.carried_from,
           q.due_hours, q.escalate_after_hours, q.escalate_to,
           v.department AS v_department, v.decision, v.reviewer, v.comment, v.annotations
    FROM review_requests q LEFT JOIN verdicts v ON v.id = q.verdict_id
    WHERE q.round_id = ANY($1::uuid[])
    ORDER BY q.stage, q.department"""

# what a department posted while its review was pending
_NOTES = """
    SELECT review_id, annotations FROM annotations
    WHERE round_id = ANY($1::uuid[]) AND outcome IN ('accepted', 'after_decision')
    ORDER BY received_at, id"""


def _request(row: asyncpg.Record, notes: Sequence[Annotation]) -> domain.Request:
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
    deadline = None
    if row["due_hours"] is not None:
        deadline = Deadline(
            due_hours=row["due_hours"],
            escalate_after_hours=row["escalate_after_hours"],
            escalate_to=row["escalate_to"],
        )
    return domain.Request(
        review_id=row["review_id"],
        department=row["department"],
        stage=row["stage"],
        status=domain.RequestStatus(row["status"]),
        feedback=feedback,
        notes=tuple(notes),
        carried_from=row["carried_from"],
        deadline=deadline,
    )


def _plan(stored: list[dict[str, Any]]) -> domain.ReviewPlan:
    return domain.ReviewPlan(
        tuple(
            domain.Stage(
                int(s["number"]),
                tuple(s["departments"]),
                # rounds planned before completion modes existed collected their stage
                Completion(s.get("completion", Completion.COLLECT)),
                str(s.get("name", "")),
            )
            for s in stored
        )
    )


def _stored_plan(plan: domain.ReviewPlan) -> list[dict[str, Any]]:
    return [
        {
            "number": s.number,
            "name": s.name,
            "completion": s.completion.value,
            "departments": list(s.departments),
        }
        for s in plan.stages
    ]


def _ordered(plan: domain.ReviewPlan, requests: list[domain.Request]) -> tuple[domain.Request, ...]:
    # the plan's order, so feedback and notifications list departments as the process does
    position = {d: i for i, d in enumerate(plan.departments)}
    return tuple(sorted(requests, key=lambda r: (r.stage, position.get(r.department, 1 << 20))))


async def _rounds(conn: Connection, rows: Sequence[asyncpg.Record]) -> list[domain.Round]:
    ids = [row["id"] for row in rows]
    notes: dict[UUID, list[Annotation]] = {}
    for note in await conn.fetch(_NOTES, ids):
        notes.setdefault(note["review_id"], []).extend(
            Annotation.model_validate(a) for a in note["annotations"]
        )
    requests: dict[UUID, list[domain.Request]] = {i: [] for i in ids}
    for req in await conn.fetch(_REQUESTS, ids):
        requests[req["round_id"]].append(_request(req, notes.get(req["review_id"], ())))
    rounds = []
    for row in rows:
        plan = _plan(row["plan"])
        rounds.append(
            domain.Round(
                id=row["id"],
                order_id=row["order_id"],
                revision=row["revision"],
                status=domain.RoundStatus(row["status"]),
                current_stage=row["current_stage"],
                requests=_ordered(plan, requests[row["id"]]),
                stages=plan.stages,
            )
        )
    return rounds


def _reviewer(reviewer: Reviewer | None) -> dict[str, Any] | None:
    return reviewer.model_dump(mode="json", exclude_none=True) if reviewer else None


class PostgresStore:
    """The `Store` of one transaction: the caller's connection, the outbox in the same
    transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def lock_order(self, *, order_id: UUID) -> None:
        """Serialise submissions and withdrawals of one order (until the transaction ends), so
        two revisions arriving at two replicas cannot both open a round."""
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('review_router.order'), hashtext($1::text))",
            str(order_id),
        )

    async def rounds_of_order(self, *, order_id: UUID) -> list[domain.Round]:
        """Every round of an order, locked for the rest of the transaction."""
        rows = await self._conn.fetch(
            """SELECT id, order_id, revision, status, current_stage, plan FROM review_rounds
               WHERE order_id = $1 ORDER BY revision FOR UPDATE""",
            order_id,
        )
        return await _rounds(self._conn, rows)

    async def order_of_round(self, *, round_id: UUID) -> OrderDocument:
        document = await self._conn.fetchval(
            "SELECT order_document FROM review_rounds WHERE id = $1", round_id
        )
        return OrderDocument.model_validate(document)

    async def round_of_review(self, *, review_id: UUID) -> UUID | None:
        found: UUID | None = await self._conn.fetchval(
            "SELECT round_id FROM review_requests WHERE review_id = $1", review_id
        )
        return found

    async def lock_round(self, *, round_id: UUID) -> LoadedRound:
        """The round, its row locked until the transaction ends: competing replicas deciding the
        same round take turns, and each sees the verdicts the one before it recorded."""
        row = await self._conn.fetchrow(
            """SELECT id, order_id, revision, status, current_stage, plan, order_document, totals,
                      attachments, previous_revision, changes
               FROM review_rounds WHERE id = $1 FOR UPDATE""",
            round_id,
        )
        if row is None:
            raise LookupError(f"round {round_id} does not exist")
        [round_] = await _rounds(self._conn, [row])
        # the documents stay JSON until a message needs them (see `Submitted`)
        submitted = Submitted(
            order=row["order_document"],
            totals=row["totals"],
            attachments=row["attachments"],
            previous_revision=row["previous_revision"],
            changes=row["changes"],
        )
        return LoadedRound(round=round_, submitted=submitted, plan=_plan(row["plan"]))

    async def insert_round(
        self,
        *,
        round_: domain.Round,
        plan: domain.ReviewPlan,
        submitted: Submitted,
        opened_at: datetime,
        policy_version: str | None = None,
    ) -> bool:
        """Store a new round and all its requests; False when its revision already has one.
        Requests start unsent: `mark_requested` sends them."""
        created = await self._conn.fetchval(
            """INSERT INTO review_rounds (id, order_id, revision, status, current_stage, plan,
                                          order_document, totals, opened_at, policy_version,
                                          attachments, previous_revision, changes, decided_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                       CASE WHEN $4::text = 'open' THEN NULL ELSE $9::timestamptz END)
               ON CONFLICT (order_id, revision) DO NOTHING
               RETURNING 1""",
            round_.id,
            round_.order_id,
            round_.revision,
            round_.status.value,
            round_.current_stage,
            _stored_plan(plan),
            submitted.order.model_dump(mode="json", exclude_none=True),
            submitted.totals.model_dump(mode="json"),
            opened_at,
            policy_version,
            [a.model_dump(mode="json") for a in submitted.attachments],
            submitted.previous_revision,
            [c.model_dump(mode="json") for c in submitted.changes],
        )
        if created is None:
            return False
        await self._insert_requests(round_, opened_at=opened_at)
        return True

    async def _insert_requests(self, round_: domain.Round, *, opened_at: datetime) -> None:
        await self._conn.executemany(
            """INSERT INTO review_requests (review_id, round_id, department, stage, status,
                                            carried_from, verdict_id, answered_at, due_hours,
                                            escalate_after_hours, escalate_to)
               VALUES ($1, $2, $3, $4, $5, $6,
                       (SELECT verdict_id FROM review_requests WHERE review_id = $6),
                       CASE WHEN $6::uuid IS NULL THEN NULL ELSE $7::timestamptz END,
                       $8, $9, $10)""",
            [
                (
                    r.review_id,
                    round_.id,
                    r.department,
                    r.stage,
                    # sent (pending) only by mark_requested, with its deadline
                    "not_sent" if r.status == domain.RequestStatus.PENDING else r.status.value,
                    r.carried_from,
                    opened_at,
                    r.deadline.due_hours if r.deadline else None,
                    r.deadline.escalate_after_hours if r.deadline else None,
                    r.deadline.escalate_to if r.deadline else None,
                )
                for r in round_.requests
            ],
        )

    async def update_round(
        self,
        *,
        round_: domain.Round,
        decided_at: datetime | None = None,
        decision: dict[str, Any] | None = None,
    ) -> None:
        await self._conn.execute(
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

    async def mark_requested(
        self, *, review_ids: Sequence[UUID], at: datetime
    ) -> dict[UUID, datetime | None]:
        """Send reviews: pending from `at`, due as their deadline says, with a reminder timer
        at that moment. Returns each review's due time."""
        rows = await self._conn.fetch(
            """UPDATE review_requests
               SET status = 'pending', requested_at = $2::timestamptz,
                   due_at = CASE WHEN due_hours IS NULL THEN NULL
                                 ELSE $2::timestamptz + make_interval(secs => due_hours * 3600)
                            END
               WHERE review_id = ANY($1::uuid[]) AND status = 'not_sent'
               RETURNING review_id, due_at""",
            list(review_ids),
            at,
        )
        due = {row["review_id"]: row["due_at"] for row in rows}
        await self._conn.executemany(
            """INSERT INTO timers (kind, review_id, due_at, fire_at) VALUES ('overdue', $1, $2, $2)
               ON CONFLICT (review_id, kind) DO NOTHING""",
            [(review_id, at_) for review_id, at_ in due.items() if at_ is not None],
        )
        return due

    async def mark_cancelled(self, *, review_ids: Sequence[UUID], at: datetime) -> None:
        await self._conn.execute(
            """UPDATE review_requests SET status = 'cancelled', cancelled_at = $2
               WHERE review_id = ANY($1::uuid[]) AND status = 'pending'""",
            list(review_ids),
            at,
        )

    async def mark_answered(
        self,
        *,
        review_id: UUID,
        status: domain.RequestStatus,
        verdict_id: UUID,
        at: datetime,
    ) -> None:
        await self._conn.execute(
            """UPDATE review_requests SET status = $2, verdict_id = $3, answered_at = $4
               WHERE review_id = $1""",
            review_id,
            status.value,
            verdict_id,
            at,
        )

    async def record_verdict(
        self,
        *,
        verdict: VerdictGiven,
        message_id: str,
        round_id: UUID,
        outcome: domain.VerdictOutcome,
        received_at: datetime,
        user_id: str | None = None,
    ) -> UUID:
        verdict_id = uuid.uuid4()
        await self._conn.execute(
            """INSERT INTO verdicts (id, message_id, review_id, round_id, order_id, revision,
                                     department, decision, reviewer, comment, annotations, outcome,
                                     received_at, on_behalf_of, user_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)""",
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
            _reviewer(verdict.on_behalf_of),
            user_id,
        )
        return verdict_id

    async def record_annotations(
        self,
        *,
        message_id: str,
        review_id: UUID,
        round_id: UUID,
        department: str,
        reviewer: Reviewer,
        on_behalf_of: Reviewer | None,
        annotations: Sequence[Annotation],
        outcome: domain.VerdictOutcome,
        user_id: str | None,
        received_at: datetime,
    ) -> None:
        await self._conn.execute(
            """INSERT INTO annotations (id, message_id, review_id, round_id, department, reviewer,
                                        on_behalf_of, annotations, outcome, user_id, received_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            uuid.uuid4(),
            message_id,
            review_id,
            round_id,
            department,
            _reviewer(reviewer),
            _reviewer(on_behalf_of),
            [a.model_dump(mode="json") for a in annotations],
            outcome.value,
            user_id,
            received_at,
        )

    async def record_assignment(
        self,
        *,
        message_id: str,
        review_id: UUID,
        round_id: UUID,
        department: str,
        assigned_by: Reviewer,
        assignee: Reviewer,
        reason: str | None,
        outcome: domain.VerdictOutcome,
        user_id: str | None,
        received_at: datetime,
    ) -> None:
        await self._conn.execute(
            """INSERT INTO assignments (id, message_id, review_id, round_id, department,
                                        assigned_by, assignee, reason, outcome, user_id,
                                        received_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            uuid.uuid4(),
            message_id,
            review_id,
            round_id,
            department,
            _reviewer(assigned_by),
            _reviewer(assignee),
            reason,
            outcome.value,
            user_id,
            received_at,
        )
        if outcome == domain.VerdictOutcome.ACCEPTED:
            await self._conn.execute(
                "UPDATE review_requests SET assignee = $2 WHERE review_id = $1",
                review_id,
                _reviewer(assignee),
            )

    # withdrawals -------------------------------------------------------------------------

    async def record_withdrawal(
        self,
        *,
        order_id: UUID,
        revision: int,
        outcome: domain.WithdrawalOutcome,
        reason: str | None,
        requested_by: str | None,
        requested_at: datetime,
        decided_at: datetime,
        round_id: UUID | None,
        refusal: str | None,
    ) -> None:
        await self._conn.execute(
            """INSERT INTO withdrawals (order_id, revision, outcome, reason, requested_by,
                                        requested_at, decided_at, round_id, refusal)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            order_id,
            revision,
            outcome.value,
            reason,
            requested_by,
            requested_at,
            decided_at,
            round_id,
            refusal,
        )

    async def withdrawn_revision(self, *, order_id: UUID) -> int | None:
        """The revision the order was withdrawn at, if it was (its tombstone)."""
        found: int | None = await self._conn.fetchval(
            "SELECT max(revision) FROM withdrawals WHERE order_id = $1 AND outcome = 'withdrawn'",
            order_id,
        )
        return found

    # customers ---------------------------------------------------------------------------

    async def customer_known(self, *, key: str | None) -> bool:
        if key is None:
            return False
        return bool(
            await self._conn.fetchval("SELECT 1 FROM known_customers WHERE customer_key = $1", key)
        )

    async def remember_customer(self, *, key: str | None, order_id: UUID, at: datetime) -> None:
        if key is None:
            return
        await self._conn.execute(
            """INSERT INTO known_customers (customer_key, first_order_id, first_approved_at)
               VALUES ($1, $2, $3) ON CONFLICT (customer_key) DO NOTHING""",
            key,
            order_id,
            at,
        )

    async def schedule(
        self, *, review_id: UUID, kind: str, due_at: datetime, fire_at: datetime
    ) -> None:
        await self._conn.execute(
            """INSERT INTO timers (kind, review_id, due_at, fire_at) VALUES ($1, $2, $3, $4)
               ON CONFLICT (review_id, kind) DO NOTHING""",
            kind,
            review_id,
            due_at,
            fire_at,
        )

    async def publish_event(self, event: Message, *, correlation_id: UUID) -> None:
        await outbox.publish_event(self._conn, event, correlation_id=correlation_id)

    async def send_to_department(
        self, message: Message, *, department: str, correlation_id: UUID
    ) -> None:
        await outbox.enqueue(
            self._conn,
            message,
            exchange=topology.REVIEWS,
            routing_key=department,
            correlation_id=correlation_id,
        )


def store_of(conn: Connection | Store) -> Store:
    """The store of a transaction: the bus and the timers hand the handlers their
    transaction's connection, the unit tests an in-memory store."""
    if isinstance(conn, PoolConnectionProxy | asyncpg.Connection):
        return PostgresStore(conn)
    return conn


# --- timers ------------------------------------------------------------------------------


async def claim_due_timer(conn: Connection, *, now: datetime) -> Timer | None:
    """One timer that is due, locked for this transaction; replicas skip it meanwhile."""
    row = await conn.fetchrow(
        """SELECT id, kind, review_id, due_at, attempts FROM timers
           WHERE fired_at IS NULL AND fire_at <= $1
           ORDER BY fire_at, id
           LIMIT 1
           FOR UPDATE SKIP LOCKED""",
        now,
    )
    if row is None:
        return None
    return Timer(row["id"], row["kind"], row["review_id"], row["due_at"], row["attempts"])


async def timer_fired(conn: Connection, *, timer_id: int, outcome: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE timers SET fired_at = $2, outcome = $3, attempts = attempts + 1 WHERE id = $1",
        timer_id,
        at,
        outcome,
    )


async def timer_failed(
    conn: Connection, *, timer_id: int, error: str, retry_at: datetime, give_up: bool
) -> None:
    await conn.execute(
        """UPDATE timers SET attempts = attempts + 1, last_error = $2, fire_at = $3,
                  fired_at = CASE WHEN $4 THEN $3 ELSE NULL END,
                  outcome = CASE WHEN $4 THEN 'failed' ELSE NULL END
           WHERE id = $1""",
        timer_id,
        error[:2000],
        retry_at,
        give_up,
    )
