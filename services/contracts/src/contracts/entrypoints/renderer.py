"""The contracts waiting for their document, typeset as workers come free.

Woken by the notification of every newly numbered contract, and by a timer for what a
notification missed: a contract another replica left behind (its lease ran out), or one
to try again. Replicas share the work with `FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from uuid import UUID

import structlog

from orderflow import busaccess, consumer, topology
from orderflow.db import Connection
from orderflow.service import ServiceRuntime
from orderflow.times import format_time

from .. import domain, handlers
from ..adapters import repository

log = structlog.get_logger(__name__)


class RenderWorker:
    """Keeps up to `capacity` documents typesetting at once: enough that every worker
    process of the renderer has the next one queued."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        renderer: handlers.Renderer,
        *,
        capacity: int,
        attempts: int = 3,
        lease_seconds: float = 60.0,
        poll_interval: float = 1.0,
    ) -> None:
        self._runtime = runtime
        self._renderer = renderer
        self._capacity = capacity
        self._attempts = attempts
        self._lease = lease_seconds
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], UUID] = {}
        self._task: asyncio.Task[None] | None = None
        self._listener: Connection | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="contracts-renderer")

    async def stop(self) -> None:
        """Stop claiming; what is being typeset is given back for the next start (or another
        replica) to take at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        claimed = list(self._inflight.values())
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if claimed:
            with contextlib.suppress(Exception):
                await repository.release_leases(self._runtime.pool, contract_ids=claimed)
        await self._unlisten()

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await self._runtime.pool.acquire()
            await self._listener.add_listener(repository.RENDER_CHANNEL, self._on_notify)
        except Exception as exc:
            log.warning("render listen failed, polling only", error=repr(exc))
            await self._unlisten()

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.remove_listener(repository.RENDER_CHANNEL, self._on_notify)
        with contextlib.suppress(Exception):
            await self._runtime.pool.release(conn)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            # cleared before claiming: a contract numbered meanwhile wakes the next round
            self._wake.clear()
            free = self._capacity - len(self._inflight)
            claimed = 0
            if free > 0:
                try:
                    await self._listen()
                    claimed = await self._claim(free)
                except Exception as exc:  # the database is away: try again on the timer
                    log.warning("claiming contracts to typeset failed", error=repr(exc))
                    await self._unlisten()
            if free > 0 and claimed == free:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)

    async def _claim(self, limit: int) -> int:
        batch = await repository.claim_renders(
            self._runtime.pool, limit=limit, lease_seconds=self._lease
        )
        for pending in batch:
            task = asyncio.create_task(self._typeset(pending))
            self._inflight[task] = pending.contract_id
            task.add_done_callback(self._done)
        return len(batch)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wake.set()  # a worker is free

    async def _typeset(self, pending: domain.PendingRender) -> None:
        begin = repository.transactions(self._runtime.pool)
        try:
            try:
                pdf = await self._renderer.render(pending.content)
            except Exception as exc:
                await handlers.render_failed(
                    begin, pending, exc, attempts=self._attempts, dead_letter=self.dead_letter
                )
                return
            await handlers.store_rendered(begin, pending, pdf)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the lease runs out and the contract is taken again
            log.warning(
                "contract document not stored, trying again later",
                contract_number=pending.content.number,
                error=repr(exc),
            )

    async def dead_letter(self, delivery: handlers.Delivery, exc: BaseException) -> None:
        """The approval to the dead-letter exchange with the reason, as the consumer would
        have sent it (`ReliableConsumer`), confirmed by the broker."""
        runtime = self._runtime
        queue = topology.CONTRACTS_APPROVED.name
        refused = consumer.refusal_of(exc)
        headers: dict[str, str] = dict(delivery.headers)
        headers.update(
            {
                consumer.REASON_CODE: refused.code,
                "x-orderflow-reason": refused.reason,
                "x-orderflow-queue": queue,
                "x-orderflow-service": runtime.service,
                "x-orderflow-dead-lettered-at": format_time(datetime.now(UTC)),
                "x-orderflow-original-exchange": delivery.exchange or "",
                "x-orderflow-original-routing-key": delivery.routing_key or "",
                busaccess.ORIGINAL_USER: runtime.trust.producer_of(
                    delivery.user_id, delivery.headers
                )
                or "",
            }
        )
        await runtime.publisher.publish(
            exchange=topology.DLX,
            routing_key=queue,
            body=delivery.body.encode(),
            message_id=delivery.message_id,
            message_type=delivery.message_type or "",
            correlation_id=delivery.correlation_id,
            reply_to=delivery.reply_to,
            headers=headers,
        )
