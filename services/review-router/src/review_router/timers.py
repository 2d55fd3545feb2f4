"""The durable scheduler: review deadlines are rows of the `timers` table, and this loop
fires the due ones.

A timer is written in the same transaction as the review request it belongs to, so a
restart loses none; each is fired in its own transaction with `FOR UPDATE SKIP LOCKED`, so
replicas share the table and fire each timer once. A timer whose handler fails is retried
later with back-off, and given up (kept with the error) after a few attempts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Counter

from orderflow.db import Connection, Pool
from orderflow.notified import NotifiedLoop

from . import handlers
from .adapters import repository

log = structlog.get_logger(__name__)

TIMERS_FIRED = Counter(
    "orderflow_review_timers_fired_total", "Review deadline timers fired, by kind", ["kind"]
)

MAX_ATTEMPTS = 5

Fire = Callable[[Connection, repository.Timer], Awaitable[str]]


async def _fire(conn: Connection, timer: repository.Timer) -> str:
    return await handlers.on_timer(conn, timer, now=datetime.now(UTC))


class TimerLoop(NotifiedLoop):
    """Looks at the timers table every `interval` seconds until stopped. Nothing notifies
    it: a timer is written long before it is due, so only the clock says when to look."""

    def __init__(
        self,
        pool: Callable[[], Pool],
        *,
        interval: float,
        batch: int = 100,
        fire: Fire = _fire,
    ) -> None:
        super().__init__(name="review-timers", poll_interval=interval, stop_timeout=10.0)
        self._pool = pool
        self._batch = batch
        self._fire = fire

    async def step(self) -> bool:
        return await self.run_once() >= self._batch

    async def run_once(self) -> int:
        """Fire up to `batch` due timers, each in its own transaction; how many fired."""
        fired = 0
        while fired < self._batch and not self.stopping:
            async with self._pool().acquire() as conn, conn.transaction():
                now = datetime.now(UTC)
                timer = await repository.claim_due_timer(conn, now=now)
                if timer is None:
                    break
                try:
                    async with conn.transaction():  # a savepoint: a failure keeps the claim
                        outcome = await self._fire(conn, timer)
                except Exception as exc:
                    give_up = timer.attempts + 1 >= MAX_ATTEMPTS
                    log.warning(
                        "timer failed",
                        timer_id=timer.id,
                        kind=timer.kind,
                        review_id=str(timer.review_id),
                        error=repr(exc),
                        giving_up=give_up,
                    )
                    await repository.timer_failed(
                        conn,
                        timer_id=timer.id,
                        error=repr(exc),
                        retry_at=now + timedelta(seconds=min(300, 5 * 2**timer.attempts)),
                        give_up=give_up,
                    )
                else:
                    await repository.timer_fired(conn, timer_id=timer.id, outcome=outcome, at=now)
                    TIMERS_FIRED.labels(timer.kind).inc()
            fired += 1
        return fired
